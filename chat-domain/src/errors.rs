//! The refusals of the chat use cases, each with a stable wire code and a message for a person.
//!
//! One enum for the chat side: the use cases share most refusals (the approved-member gate
//! above all), and the wire codes are the protocol's contract (docs/protocol.md).

use tracing::warn;
use voice_domain::errors::{AccessError, ErrorClass};
use voice_domain::ports::DirectoryError;
use voice_domain::protocol::WireError;

use crate::ports::ChatStoreError;

/// A chat refusal, with its stable wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// No `hello` yet on this connection. (The four gate refusals say what voice's say: one
    /// set of messages, `voice_domain::errors::AccessError`'s.)
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such room.
    #[error("{}", AccessError::ChatRoomNotFound)]
    ChatRoomNotFound,
    /// Not a member.
    #[error("{}", AccessError::NotMember)]
    NotMember,
    /// Request still pending.
    #[error("{}", AccessError::NotApproved)]
    NotApproved,
    /// Only the admin may do this.
    #[error("only the chat room's admin can approve, deny, remove or ban members")]
    NotAdmin,
    /// Banned from the room by its admin.
    #[error("the admin of this chat room has banned you; you cannot ask to join it")]
    Banned,
    /// The admin tried to remove or ban themselves.
    #[error("the admin cannot remove or ban themselves")]
    CannotRemoveAdmin,
    /// A ban named a user id nobody has ever signed in with. A ban is a stored row, so bans of
    /// made-up ids would let one admin fill the store; real users may still be banned before
    /// they ask to join.
    #[error("no user with this id has ever signed in here; only an existing user can be banned")]
    UnknownUser,
    /// Name taken.
    #[error("a chat room with this name exists; pick another name or join that one")]
    RoomExists,
    /// Nothing to approve or deny.
    #[error("this user has no pending join request in this chat room")]
    NoPendingRequest,
    /// A quota ([`ChatLimits`](crate::ChatLimits)) is used up; the message says which and what
    /// frees it.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A field is missing or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A field is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Storage failed.
    #[error("the chat storage is unavailable; try again in a moment")]
    Unavailable,
    /// Storage failed in a way retrying will not fix (a full disk, a read-only or damaged
    /// database): the operator must act, and the message says so instead of "try again".
    #[error("the server cannot store data right now (its disk may be full); this will not fix itself: tell the server's operator")]
    StorageBroken,
}

impl ChatError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::ChatRoomNotFound => "CHAT_ROOM_NOT_FOUND",
            Self::NotMember => "NOT_MEMBER",
            Self::NotApproved => "NOT_APPROVED",
            Self::NotAdmin => "NOT_ADMIN",
            Self::RoomExists => "ROOM_EXISTS",
            Self::Banned => "BANNED",
            Self::CannotRemoveAdmin | Self::UnknownUser => "BAD_REQUEST",
            Self::NoPendingRequest => "NO_PENDING_REQUEST",
            Self::QuotaExceeded(_) => "QUOTA_EXCEEDED",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::TooLarge(_) => "TOO_LARGE",
            Self::Unavailable => "UNAVAILABLE",
            Self::StorageBroken => "INTERNAL",
        }
    }

    /// Whether sending the same request again may work.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable)
    }

    /// The class an entrypoint maps to an HTTP status and a log level (the same classes as
    /// voice's refusals, so both domains' refusals look alike at the edge).
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::ChatRoomNotFound => ErrorClass::NotFound,
            Self::NotMember | Self::NotApproved | Self::NotAdmin | Self::Banned => {
                ErrorClass::Forbidden
            }
            Self::CannotRemoveAdmin
            | Self::UnknownUser
            | Self::BadRequest(_)
            | Self::TooLarge(_) => ErrorClass::BadRequest,
            Self::RoomExists | Self::NoPendingRequest | Self::QuotaExceeded(_) => {
                ErrorClass::Conflict
            }
            Self::Unavailable => ErrorClass::Unavailable,
            Self::StorageBroken => ErrorClass::Internal,
        }
    }
}

impl From<AccessError> for ChatError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotIdentified => Self::NotIdentified,
            AccessError::ChatRoomNotFound => Self::ChatRoomNotFound,
            AccessError::NotMember => Self::NotMember,
            AccessError::NotApproved => Self::NotApproved,
        }
    }
}

impl From<ChatStoreError> for ChatError {
    fn from(e: ChatStoreError) -> Self {
        match e {
            ChatStoreError::RoomExists => Self::RoomExists,
            ChatStoreError::NoSuchRoom => Self::ChatRoomNotFound,
            ChatStoreError::NoPendingRequest => Self::NoPendingRequest,
            ChatStoreError::Banned => Self::Banned,
            ChatStoreError::QuotaExceeded(q) => {
                Self::QuotaExceeded(format!("this server's limit is reached ({q:?})"))
            }
            ChatStoreError::BadCursor => Self::BadRequest(
                "cursor: not a position of this list; ask again without a cursor".into(),
            ),
            ChatStoreError::Unavailable(f) if !f.retryable => {
                tracing::error!(error = %f, "chat storage failed and will not recover by itself (disk full? read-only?): operator action needed");
                Self::StorageBroken
            }
            ChatStoreError::Unavailable(f) => {
                warn!(error = %f, "chat storage failed");
                Self::Unavailable
            }
        }
    }
}

impl From<DirectoryError> for ChatError {
    fn from(e: DirectoryError) -> Self {
        warn!(error = %e, "chat directory failed");
        Self::Unavailable
    }
}

/// On the wire a chat refusal looks like a voice one: code, message, retryable.
impl From<ChatError> for WireError {
    fn from(e: ChatError) -> Self {
        Self {
            code: e.code().into(),
            message: e.to_string(),
            retryable: e.retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use voice_domain::ports::PortFailure;

    use super::*;

    #[test]
    fn a_storage_failure_that_will_not_recover_is_not_called_temporary() {
        let full = ChatError::from(ChatStoreError::Unavailable(PortFailure::permanent(
            "database or disk is full",
        )));
        assert_eq!((full.code(), full.retryable()), ("INTERNAL", false));
        assert!(full.to_string().contains("operator"), "{full}");
        assert!(!full.to_string().contains("try again"), "{full}");
        let busy = ChatError::from(ChatStoreError::Unavailable(PortFailure::retryable("busy")));
        assert_eq!((busy.code(), busy.retryable()), ("UNAVAILABLE", true));
    }
}
