//! # voice-domain
//!
//! Voice rooms for group chats, as pure logic: the [`VoiceRoom`](room::VoiceRoom) state
//! machine, the use cases on [`VoiceService`](service::VoiceService), and the
//! [ports](ports) (async traits) through which the service reaches storage, the chat app,
//! signaling, credentials, notifications, time and ids.
//!
//! Architecture invariant: nothing here does I/O or depends on tokio, AWS, axum or hyper. Both
//! entrypoints (the Lambda and the self-hosted server) and library users drive the same service;
//! adapters live in their own crates.
//!
//! ## Layout
//! - `ids`: validated newtypes (user, connection, chat room, voice room, channel, KVS client id).
//! - `time`: [`Timestamp`](time::Timestamp).
//! - `room`: the aggregate, its transitions and events, and the full-mesh connection plan.
//! - `ports`: the traits adapters implement, each with its error contract.
//! - `pool`: reusable signaling channels and the quarantine rule that makes reuse safe.
//! - `errors`: one error enum per use case, with stable wire codes.
//! - `gate`: the approved-member gate (`Membership::require_approved`), which the chat domain
//!   applies too.
//! - `screen`: screen sharing: the room's policy (who may share), the sharer, why it stopped.
//! - `service`: the use cases.
//! - `protocol`: the JSON shapes both entrypoints speak (serde only; the service never sees them).
#![warn(missing_docs)]

#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod errors;
pub mod failure;
pub mod gate;
pub mod ids;
pub mod pool;
pub mod ports;
pub mod protocol;
pub mod recording;
pub mod room;
pub mod screen;
pub mod service;
pub mod time;

pub use errors::UseCaseError;
pub use ids::{
    ChannelArn, ChannelName, ChatRoomId, ClientId, ConnectionId, IdError, UserId, VoiceRoomId,
};
pub use room::{Capacity, ChannelRole, SignalingChannel, VoiceEvent, VoiceRoom};
pub use service::{
    ServiceConfig, VoiceGrant, VoiceService, DEFAULT_LIVENESS_TIMEOUT, DEFAULT_RECONNECT_GRACE,
};
pub use time::Timestamp;
