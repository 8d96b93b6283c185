//! The approved-member gate: the one rule both domains apply before a chat room's content or its
//! voice. Apart from `ports` (what a directory answers) and `errors` (what a refusal says) so
//! that neither of those needs the other.

use crate::errors::AccessError;
use crate::ports::{MemberState, Membership};

impl Membership {
    /// The approved-member gate, the one rule both domains apply before a chat room's content or
    /// voice: the admin or an approved member passes; a pending requester, a stranger and an
    /// unknown room are refused, each with its own reason.
    ///
    /// # Errors
    /// [`AccessError::ChatRoomNotFound`] (`None`: no such room), [`AccessError::NotApproved`],
    /// [`AccessError::NotMember`].
    pub fn require_approved(membership: Option<Membership>) -> Result<Membership, AccessError> {
        let m = membership.ok_or(AccessError::ChatRoomNotFound)?;
        match (m.is_admin, m.state) {
            (true, _) | (false, MemberState::Approved) => Ok(m),
            (false, MemberState::Pending) => Err(AccessError::NotApproved),
            (false, MemberState::None) => Err(AccessError::NotMember),
        }
    }
}

/// The download rule for recordings: the chat room's admin or an approved member may download
/// its recordings — the same gate as for the chat room's content, applied when a link is handed
/// out and again when it is used (a member removed since is refused).
///
/// # Errors
/// [`AccessError`] as [`Membership::require_approved`].
pub fn may_download(membership: Option<Membership>) -> Result<Membership, AccessError> {
    Membership::require_approved(membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_and_approved_members_may_download() {
        let m = |is_admin, state| Some(Membership { is_admin, state });
        assert!(may_download(m(true, MemberState::None)).is_ok());
        assert!(may_download(m(false, MemberState::Approved)).is_ok());
        assert_eq!(
            may_download(m(false, MemberState::Pending)),
            Err(AccessError::NotApproved)
        );
        assert_eq!(
            may_download(m(false, MemberState::None)),
            Err(AccessError::NotMember)
        );
        assert_eq!(may_download(None), Err(AccessError::ChatRoomNotFound));
    }
}
