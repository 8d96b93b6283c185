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
