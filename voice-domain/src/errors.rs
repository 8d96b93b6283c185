//! Use-case errors: one `thiserror` enum per use case, with the cases a caller can act on.
//!
//! Every message says what to do next. Each error also maps to a stable wire code and an
//! [`ErrorClass`] through [`UseCaseError`], once, here, so that the Lambda and the self-hosted
//! server refuse the same request with the same `{code, message}`.

use std::fmt;

use crate::ids::VoiceRoomId;
use crate::pool::PoolError;
use crate::ports::{
    ChannelError, CredentialError, DirectoryError, NotifyError, PortFailure, StoreError,
};

/// The broad class of a refusal, for mapping to HTTP statuses and log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request itself is malformed (400).
    BadRequest,
    /// The caller is not identified (401).
    Unauthenticated,
    /// The caller may not do this (403).
    Forbidden,
    /// The thing asked about does not exist (404).
    NotFound,
    /// The state does not allow it now (409).
    Conflict,
    /// A dependency failed; retry later (503).
    Unavailable,
    /// A bug or corrupt data; not the caller's fault (500).
    Internal,
}

/// What every use-case error offers to the entrypoints.
pub trait UseCaseError: std::error::Error {
    /// Stable, machine-readable code (`NOT_APPROVED`, `ROOM_FULL`, ...). Documented in
    /// `docs/protocol.md`; never change one.
    fn code(&self) -> &'static str;
    /// The class, for the HTTP status.
    fn class(&self) -> ErrorClass;
    /// Whether the same request may succeed if sent again unchanged.
    fn retryable(&self) -> bool {
        matches!(self.class(), ErrorClass::Unavailable) || self.code() == "CONFLICT"
    }
}

/// Which port failed, for messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortName {
    /// The voice-room store.
    Store,
    /// The chat directory.
    Directory,
    /// The signaling channels.
    Channels,
    /// The credential issuer.
    Credentials,
    /// The notifier.
    Notifier,
    /// The pool of reusable signaling channels.
    Pool,
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortName::Store => "voice-room store",
            PortName::Directory => "chat directory",
            PortName::Channels => "signaling service",
            PortName::Credentials => "credential issuer",
            PortName::Notifier => "notifier",
            PortName::Pool => "signaling channel pool",
        })
    }
}

/// A dependency failed. Retryable failures tell the caller to try again; permanent ones tell
/// the operator to look at the logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {port} is unavailable{}", if self.failure.retryable { "; try again in a moment" } else { "; this will not fix itself, ask the operator to check the server logs" })]
pub struct DependencyError {
    /// Which port.
    pub port: PortName,
    /// What it said (logged, not shown).
    pub failure: PortFailure,
}

impl DependencyError {
    /// Wraps a port failure.
    pub fn new(port: PortName, failure: PortFailure) -> Self {
        Self { port, failure }
    }

    fn class(&self) -> ErrorClass {
        if self.failure.retryable {
            ErrorClass::Unavailable
        } else {
            ErrorClass::Internal
        }
    }

    fn code(&self) -> &'static str {
        if self.failure.retryable {
            "UNAVAILABLE"
        } else {
            "INTERNAL"
        }
    }
}

impl From<StoreError> for DependencyError {
    fn from(e: StoreError) -> Self {
        let failure = match e {
            StoreError::Unavailable(f) => f,
            // A conflict that reaches here means retries were exhausted: worth retrying later.
            StoreError::VersionConflict => PortFailure::retryable("too many concurrent updates"),
            other => PortFailure::permanent(other.to_string()),
        };
        Self::new(PortName::Store, failure)
    }
}

impl From<DirectoryError> for DependencyError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Unavailable(f) => Self::new(PortName::Directory, f),
        }
    }
}

impl From<ChannelError> for DependencyError {
    fn from(e: ChannelError) -> Self {
        let failure = match e {
            ChannelError::Unavailable(f) => f,
            ChannelError::LimitExceeded => PortFailure::permanent(
                "signaling channel quota reached: raise the account limit or sweep orphans",
            ),
            ChannelError::NotFound => PortFailure::retryable("signaling channel vanished"),
        };
        Self::new(PortName::Channels, failure)
    }
}

impl From<CredentialError> for DependencyError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Unavailable(f) => Self::new(PortName::Credentials, f),
        }
    }
}

impl From<PoolError> for DependencyError {
    fn from(e: PoolError) -> Self {
        let failure = match e {
            PoolError::Unavailable(f) => f,
            // Only a release can say it; a release's failure never reaches a caller.
            PoolError::NotHeld => PortFailure::permanent("pooled channel not held by the room"),
        };
        Self::new(PortName::Pool, failure)
    }
}

impl From<NotifyError> for DependencyError {
    fn from(e: NotifyError) -> Self {
        let failure = match e {
            NotifyError::Unavailable(f) => f,
            NotifyError::Gone => PortFailure::permanent("connection gone"),
        };
        Self::new(PortName::Notifier, failure)
    }
}

/// Who the caller is, and whether it may act in the chat room: shared by the use cases that
/// need an approved member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The connection is unknown to the chat app.
    #[error(
        "this connection is not identified; sign in to the chat first (send hello), then retry"
    )]
    NotIdentified,
    /// The chat room does not exist.
    #[error("chat room not found; check the room id (listRooms shows them)")]
    ChatRoomNotFound,
    /// The user is not in the chat room.
    #[error("you are not a member of this chat room; ask to join it first (requestJoin)")]
    NotMember,
    /// The user asked to join but the admin has not approved yet.
    #[error(
        "your request to join this chat room is still pending; wait for the admin to approve it"
    )]
    NotApproved,
}

impl AccessError {
    /// The stable wire code (the chat domain's refusals use the same).
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::NotIdentified => "NOT_IDENTIFIED",
            AccessError::ChatRoomNotFound => "CHAT_ROOM_NOT_FOUND",
            AccessError::NotMember => "NOT_MEMBER",
            AccessError::NotApproved => "NOT_APPROVED",
        }
    }

    /// The class an entrypoint maps to a status.
    pub fn class(&self) -> ErrorClass {
        match self {
            AccessError::NotIdentified => ErrorClass::Unauthenticated,
            AccessError::ChatRoomNotFound => ErrorClass::NotFound,
            AccessError::NotMember | AccessError::NotApproved => ErrorClass::Forbidden,
        }
    }
}

/// `createVoiceRoom` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartVoiceError {
    /// Caller unknown or not an approved member.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// Someone already started one.
    #[error("this chat room already has an active voice room ({voice_room_id}); join it instead")]
    AlreadyActive {
        /// The active room.
        voice_room_id: VoiceRoomId,
    },
    /// A dependency failed; nothing was left behind.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `getVoiceCredentials` (join) refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinVoiceError {
    /// Caller unknown or not an approved member.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// No such voice room.
    #[error("voice room not found; it may have ended, check the chat room for an active one")]
    VoiceRoomNotFound,
    /// The room has ended; credentials are never issued for it.
    #[error("this voice room has ended; start a new one")]
    Ended,
    /// No place left.
    #[error("this voice room is full ({capacity} participants); wait for someone to leave")]
    RoomFull {
        /// Its capacity.
        capacity: u8,
    },
    /// A refresh (`"refresh": true`) from someone who is no longer a participant: they left or
    /// were removed, and a refresh never joins them again (a refresh sent just before a leave
    /// and handled after it must not bring back a participant nobody will ever hear).
    #[error("you are no longer in this voice room; join it again to take part")]
    NotParticipant,
    /// A dependency failed; nothing was left behind.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `leaveVoiceRoom` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveVoiceError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended already.
    #[error("this voice room has already ended")]
    Ended,
    /// The caller is not in it.
    #[error("you are not in this voice room")]
    NotParticipant,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `setMute` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetMuteError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended.
    #[error("this voice room has ended")]
    Ended,
    /// The caller is not in it.
    #[error("you are not in this voice room; join it before changing your mute state")]
    NotParticipant,
    /// A moderator muted the caller; only a moderator can lift it.
    #[error("the voice room's master or the chat room's admin muted you; you can unmute once they lift it")]
    ServerMuted,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `serverMute` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerMuteError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended.
    #[error("this voice room has ended")]
    Ended,
    /// The caller does not moderate this room (or the target is the chat room's admin and the
    /// caller is not).
    #[error("only the voice room's master or the chat room's admin can mute others, and only the admin can mute the admin")]
    NotAllowed,
    /// The person to mute is not in the voice room.
    #[error("that person is not in this voice room")]
    NotParticipant,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `endVoiceRoom` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndVoiceError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended already.
    #[error("this voice room has already ended")]
    Ended,
    /// The caller is neither the room's master nor the chat room's admin.
    #[error("only the voice room's master or the chat room's admin can end it; use leaveVoiceRoom to leave")]
    NotAllowed,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `getVoiceRoom` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetVoiceRoomError {
    /// Caller unknown or not an approved member.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// Disconnect handling failed; the sweep will finish the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// The sweep could not list what it needs; it changed nothing it could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// The deployment's teardown could not list its channels or its pool; nothing was deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeardownError {
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// The start-up pass could not list or keep the voice rooms of the previous process; the
/// periodic sweep still ends those whose people do not come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

macro_rules! dependency_from {
    ($($err:ty),*) => {$(
        impl From<StoreError> for $err {
            fn from(e: StoreError) -> Self { Self::Dependency(e.into()) }
        }
        impl From<DirectoryError> for $err {
            fn from(e: DirectoryError) -> Self { Self::Dependency(e.into()) }
        }
        impl From<ChannelError> for $err {
            fn from(e: ChannelError) -> Self { Self::Dependency(e.into()) }
        }
        impl From<CredentialError> for $err {
            fn from(e: CredentialError) -> Self { Self::Dependency(e.into()) }
        }
        impl From<PoolError> for $err {
            fn from(e: PoolError) -> Self { Self::Dependency(e.into()) }
        }
    )*};
}

dependency_from!(
    StartVoiceError,
    JoinVoiceError,
    LeaveVoiceError,
    SetMuteError,
    ServerMuteError,
    EndVoiceError,
    DisconnectError,
    SweepError,
    TeardownError,
    RestartError
);

impl UseCaseError for StartVoiceError {
    fn code(&self) -> &'static str {
        match self {
            Self::Access(a) => a.code(),
            Self::AlreadyActive { .. } => "ALREADY_ACTIVE",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Access(a) => a.class(),
            Self::AlreadyActive { .. } => ErrorClass::Conflict,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for JoinVoiceError {
    fn code(&self) -> &'static str {
        match self {
            Self::Access(a) => a.code(),
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::RoomFull { .. } => "ROOM_FULL",
            Self::NotParticipant => "NOT_PARTICIPANT",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Access(a) => a.class(),
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::RoomFull { .. } | Self::NotParticipant => ErrorClass::Conflict,
            Self::Dependency(d) => d.class(),
        }
    }
}

// Leave, mute, server mute and end each map their own cases, exhaustively: a new variant cannot fall through
// to another's code.

impl UseCaseError for LeaveVoiceError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotParticipant => "NOT_PARTICIPANT",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotParticipant => ErrorClass::Conflict,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for ServerMuteError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::NotParticipant => "NOT_PARTICIPANT",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotParticipant => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for SetMuteError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotParticipant => "NOT_PARTICIPANT",
            Self::ServerMuted => "SERVER_MUTED",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotParticipant => ErrorClass::Conflict,
            Self::ServerMuted => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for EndVoiceError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for GetVoiceRoomError {
    fn code(&self) -> &'static str {
        match self {
            Self::Access(a) => a.code(),
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Access(a) => a.class(),
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for DisconnectError {
    fn code(&self) -> &'static str {
        match self {
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for RestartError {
    fn code(&self) -> &'static str {
        match self {
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for TeardownError {
    fn code(&self) -> &'static str {
        match self {
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for SweepError {
    fn code(&self) -> &'static str {
        match self {
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Dependency(d) => d.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_classes_map() {
        let e = StartVoiceError::AlreadyActive {
            voice_room_id: VoiceRoomId::parse("v1").unwrap(),
        };
        assert_eq!(e.code(), "ALREADY_ACTIVE");
        assert_eq!(e.class(), ErrorClass::Conflict);
        assert!(e.to_string().contains("join it instead"));
        assert_eq!(EndVoiceError::NotAllowed.code(), "NOT_ALLOWED");
        assert_eq!(EndVoiceError::NotAllowed.class(), ErrorClass::Forbidden);
        assert_eq!(LeaveVoiceError::NotParticipant.code(), "NOT_PARTICIPANT");
        assert_eq!(SetMuteError::Ended.code(), "VOICE_ROOM_ENDED");
        assert_eq!(
            JoinVoiceError::Access(AccessError::NotApproved).code(),
            "NOT_APPROVED"
        );
    }

    #[test]
    fn dependency_errors_say_whether_to_retry() {
        let e: JoinVoiceError = StoreError::Unavailable(PortFailure::retryable("throttled")).into();
        assert_eq!(e.code(), "UNAVAILABLE");
        assert!(e.retryable());
        assert!(e.to_string().contains("try again"));
        let e: JoinVoiceError = ChannelError::LimitExceeded.into();
        assert_eq!(e.code(), "INTERNAL");
        assert!(!e.retryable());
        // The port's own message (which may name resources) is not in the caller's message.
        assert!(!e.to_string().contains("quota"));
    }
}

/// `startRecording` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartRecordingError {
    /// Caller unknown or not an approved member.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended.
    #[error("this voice room has ended")]
    Ended,
    /// The caller is not a connected participant: the recording is made in the recorder's
    /// browser, which must be in the room.
    #[error("join the voice room first: the recording is made in your browser")]
    NotParticipant,
    /// The caller is neither the room's master nor the chat room's admin.
    #[error("only the voice room's master or the chat room's admin can start a recording")]
    NotAllowed,
    /// A recording is running already.
    #[error("this voice room is already being recorded")]
    AlreadyRecording,
    /// A dependency failed; nothing changed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `stopRecording` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopRecordingError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended (its recording stopped with it).
    #[error("this voice room has ended; its recording stopped with it")]
    Ended,
    /// Nothing is being recorded.
    #[error("this voice room is not being recorded")]
    NotRecording,
    /// The caller is neither the master, the chat room's admin nor the recorder.
    #[error("only the voice room's master, the chat room's admin or whoever started the recording can stop it")]
    NotAllowed,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// Why an upload to a recording is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingUploadError {
    /// No such voice room.
    #[error("voice room not found")]
    VoiceRoomNotFound,
    /// The recording is not this room's, or stopped more than the final-chunk grace ago.
    #[error("this recording has stopped; start a new one to record more")]
    Closed,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `listRecordings` and downloads: the caller may not see the chat room's recordings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingAccessError {
    /// Caller unknown or not an approved member.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// Why the caller may not upload to (or finish) a recording itself: storages whose recorder
/// uploads straight to them with per-object URLs (S3) ask this before minting any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecorderUploadError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found")]
    VoiceRoomNotFound,
    /// The caller is not whoever makes this recording (or it is not this room's).
    #[error("only the browser making this recording can upload it")]
    NotRecorder,
    /// The recording stopped more than the final-chunk grace ago.
    #[error("this recording has stopped; start a new one to record more")]
    Closed,
    /// The recording still runs: it cannot be finished yet.
    #[error("this recording is still running; stop it first")]
    StillRunning,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

dependency_from!(
    StartRecordingError,
    StopRecordingError,
    RecordingUploadError,
    RecordingAccessError,
    RecorderUploadError
);

impl UseCaseError for RecorderUploadError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::NotRecorder => "NOT_ALLOWED",
            Self::Closed => "RECORDING_CLOSED",
            Self::StillRunning => "RECORDING_RUNNING",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::NotRecorder => ErrorClass::Forbidden,
            Self::Closed | Self::StillRunning => ErrorClass::Conflict,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for StartRecordingError {
    fn code(&self) -> &'static str {
        match self {
            Self::Access(a) => a.code(),
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotParticipant => "NOT_PARTICIPANT",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::AlreadyRecording => "ALREADY_RECORDING",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Access(a) => a.class(),
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotParticipant | Self::AlreadyRecording => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for StopRecordingError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotRecording => "NOT_RECORDING",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotRecording => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for RecordingUploadError {
    fn code(&self) -> &'static str {
        match self {
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Closed => "RECORDING_CLOSED",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Closed => ErrorClass::Conflict,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for RecordingAccessError {
    fn code(&self) -> &'static str {
        match self {
            Self::Access(a) => a.code(),
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Access(a) => a.class(),
            Self::Dependency(d) => d.class(),
        }
    }
}

/// `startScreenShare` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartScreenShareError {
    /// Caller unknown or not an approved member.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended.
    #[error("this voice room has ended")]
    Ended,
    /// The caller is not a connected participant: the screen is shared over its links.
    #[error("join the voice room first: your screen is shared with the people in it")]
    NotInVoice,
    /// The room lets only its hosts share, and the caller is not one.
    #[error("in this voice room only the voice room's master and the chat room's admin can share their screen")]
    NotAllowed,
    /// Someone else is sharing.
    #[error(
        "someone else is sharing their screen; one screen at a time, so ask them to stop first"
    )]
    Busy,
    /// A dependency failed; nothing changed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `stopScreenShare` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopScreenShareError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended (its screen share stopped with it).
    #[error("this voice room has ended; its screen share stopped with it")]
    Ended,
    /// Nobody is sharing.
    #[error("nobody is sharing a screen in this voice room")]
    NotSharing,
    /// The caller is neither the sharer, the master nor the chat room's admin.
    #[error("only whoever shares, the voice room's master or the chat room's admin can stop a screen share")]
    NotAllowed,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// `setScreenSharePolicy` refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScreenSharePolicyError {
    /// The connection is unknown.
    #[error("{}", AccessError::NotIdentified)]
    NotIdentified,
    /// No such voice room.
    #[error("voice room not found; check the voice room id")]
    VoiceRoomNotFound,
    /// The room has ended.
    #[error("this voice room has ended")]
    Ended,
    /// The caller is neither the master nor the chat room's admin.
    #[error(
        "only the voice room's master or the chat room's admin can decide who may share a screen"
    )]
    NotAllowed,
    /// A dependency failed.
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

dependency_from!(
    StartScreenShareError,
    StopScreenShareError,
    ScreenSharePolicyError
);

// Each maps its own cases, exhaustively: a new variant cannot fall through to another's code.

impl UseCaseError for StartScreenShareError {
    fn code(&self) -> &'static str {
        match self {
            Self::Access(a) => a.code(),
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotInVoice => "NOT_IN_VOICE",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::Busy => "SCREEN_SHARE_BUSY",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::Access(a) => a.class(),
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotInVoice | Self::Busy => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for StopScreenShareError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotSharing => "NOT_SHARING",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended | Self::NotSharing => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}

impl UseCaseError for ScreenSharePolicyError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::VoiceRoomNotFound => "VOICE_ROOM_NOT_FOUND",
            Self::Ended => "VOICE_ROOM_ENDED",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::Dependency(d) => d.code(),
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotIdentified => ErrorClass::Unauthenticated,
            Self::VoiceRoomNotFound => ErrorClass::NotFound,
            Self::Ended => ErrorClass::Conflict,
            Self::NotAllowed => ErrorClass::Forbidden,
            Self::Dependency(d) => d.class(),
        }
    }
}
