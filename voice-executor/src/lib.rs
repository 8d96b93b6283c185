//! # voice-executor
//!
//! The one executor both entrypoints call. The self-hosted server hands it each WebSocket text
//! frame; the Lambda hands it each API Gateway WebSocket event's body. It parses the envelope
//! (`action`, `requestId` ≤ 128 characters) once, routes every chat and voice action to its use
//! case, and shapes the one reply frame — so an action means the same thing, with the same
//! bytes in its reply, on every deployment. Entrypoints only adapt transport (frames, events,
//! HTTP statuses) and build their adapters.
//!
//! It is as pure as the domains it serves (no tokio, AWS, axum or SQL): I/O stays behind the
//! domains' ports and the [`SignalRelay`] port.
//!
//! - [`actions`]: the chat and executor action names.
//! - [`envelope`]: parsing a frame's envelope and serialising replies.
//! - [`executor`]: [`Executor`], the action table and its routing.
//! - [`signal`]: the `signal` action's request and its port (the self-hosted relay).
//! - [`recording`]: the recording storage port (where the recorder uploads, what is listed).
//! - [`logsafe`]: how user-controlled text may appear in a log line.
#![warn(missing_docs)]

pub mod actions;
pub mod envelope;
pub mod executor;
pub mod logsafe;
pub mod recording;
pub mod signal;

pub use actions::CHAT_ACTIONS;
pub use envelope::{binary_frame_reply, parse_frame, reply_frame, Envelope, MAX_REQUEST_ID_CHARS};
pub use executor::{Executor, Handled, Refusal};
pub use recording::{RecordingEntry, RecordingFiles, RecordingFilesError, UploadGrant};
pub use signal::{SignalError, SignalKind, SignalRelay, SignalRequest, MAX_SIGNAL_PAYLOAD};
