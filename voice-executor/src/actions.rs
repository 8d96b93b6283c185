//! The protocol's action names outside the voice table (`voice_domain::protocol::VOICE_ACTIONS`):
//! what the executor routes and what a log line may name. Apart from both so that neither the
//! executor nor the log hygiene imports the other.

/// The chat actions (served where the deployment runs the chat domain).
pub const CHAT_ACTIONS: &[&str] = &[
    "hello",
    "createRoom",
    "listRooms",
    "requestJoin",
    "approveJoin",
    "denyJoin",
    "listMembers",
    "sendMessage",
    "getMessages",
    "removeMember",
    "banMember",
    "unbanMember",
    "signOutEverywhere",
];

/// `signal` and `ping`: served by the executor itself (the relay port, the liveness answer).
pub const EXECUTOR_ACTIONS: &[&str] = &["signal", "ping"];

/// `listRecordings`, and `recordingUploadUrls` / `finishRecording` (the recorder's per-part
/// uploads to S3): served where the deployment stores recordings.
pub const RECORDING_ACTIONS: &[&str] =
    &["listRecordings", "recordingUploadUrls", "finishRecording"];
