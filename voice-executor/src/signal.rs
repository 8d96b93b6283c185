//! The `signal` action: one WebRTC signaling message (offer, answer, ICE candidate) from one
//! participant to another. Only the self-hosted server relays signals (on AWS, browsers signal
//! through Kinesis Video Streams directly), so the relay is a port: the executor parses and
//! validates the request, the deployment's [`SignalRelay`] checks the token and the mesh and
//! delivers it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use voice_domain::errors::ErrorClass;
use voice_domain::protocol::WireError;
use voice_domain::{ConnectionId, UserId, VoiceRoomId};

/// Largest signal `payload`, in bytes of JSON as sent (the KVS limit, so clients behave the same
/// on both deployments).
pub const MAX_SIGNAL_PAYLOAD: usize = 10 * 1024;

/// What a signal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignalKind {
    /// SDP offer: only from the link's viewer (later joiner) to its master.
    Offer,
    /// SDP answer: only from the link's master to its viewer.
    Answer,
    /// ICE candidate: either way.
    Candidate,
}

/// A `signal` request with validated ids.
#[derive(Debug, Clone)]
pub struct SignalRequest {
    /// The voice room.
    pub voice_room: VoiceRoomId,
    /// The sender's voice token.
    pub token: String,
    /// The peer.
    pub to: UserId,
    /// The kind.
    pub kind: SignalKind,
    /// The payload, forwarded untouched: the JSON text exactly as the sender wrote it, never
    /// parsed into a tree nor serialised again.
    pub payload: Box<serde_json::value::RawValue>,
}

/// Why a signal was refused; nothing was relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// No `hello` on this connection.
    #[error("say hello first")]
    NotIdentified,
    /// Payload over [`MAX_SIGNAL_PAYLOAD`].
    #[error("signal payload is {size} bytes; the limit is {MAX_SIGNAL_PAYLOAD}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Token invalid, forged, expired, for another room or user, or not granting the link.
    #[error("the voice token is invalid or expired; call getVoiceCredentials again")]
    Unauthorized,
    /// Outside the mesh plan, or the kind does not fit the sender's role.
    #[error("{0}")]
    NotPeer(&'static str),
    /// Too many offers and answers on one link: a peer that keeps offering makes the other
    /// build connection after connection (issue 13, finding 3).
    #[error("too many offers and answers to this participant; at most {burst} at once, then {per_minute} a minute")]
    RateLimited {
        /// Descriptions allowed at once on a link.
        burst: u32,
        /// Descriptions per minute after that.
        per_minute: u32,
    },
    /// The voice store failed.
    #[error("the voice-room store is unavailable; try again in a moment")]
    Unavailable,
}

impl SignalError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::TooLarge { .. } => "TOO_LARGE",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::NotPeer(_) => "NOT_PEER",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    /// Whether the same request may work later.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable | Self::RateLimited { .. })
    }

    /// The class an entrypoint maps to a status or log level.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified | Self::Unauthorized => ErrorClass::Unauthenticated,
            Self::TooLarge { .. } => ErrorClass::BadRequest,
            Self::NotPeer(_) => ErrorClass::Forbidden,
            // Not Unavailable: nothing failed, and a flood must not log a warning per frame.
            Self::RateLimited { .. } => ErrorClass::Conflict,
            Self::Unavailable => ErrorClass::Unavailable,
        }
    }
}

impl From<SignalError> for WireError {
    fn from(e: SignalError) -> Self {
        Self {
            code: e.code().into(),
            message: e.to_string(),
            retryable: e.retryable(),
        }
    }
}

/// Checks and delivers signals: the self-hosted relay implements it.
#[async_trait]
pub trait SignalRelay: Send + Sync {
    /// Checks `request` from `sender` (identity, size, token, mesh link, role) and delivers it
    /// to the peer's connection.
    ///
    /// # Errors
    /// [`SignalError`]; nothing was delivered.
    async fn relay(
        &self,
        sender: &ConnectionId,
        request: &SignalRequest,
    ) -> Result<(), SignalError>;
}
