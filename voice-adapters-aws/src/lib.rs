//! # voice-adapters-aws
//!
//! The voice-domain ports on AWS: voice rooms in DynamoDB, the chat app's directory read from
//! its DynamoDB tables, one Kinesis Video Streams signaling channel per participant, STS
//! credentials scoped by a session policy to exactly one participant's channels, and events
//! pushed through the API Gateway Management API.
//!
//! Every adapter takes an SDK client built once at start-up (see [`AwsClients`]) plus table
//! names or settings, and maps SDK errors onto its port's documented contract; everything a port
//! does not name goes through one shared mapping ([`errors`]): throttling, 5xx and timeouts are
//! retryable, access denied and validation errors are permanent.
//!
//! Architecture invariant: only this crate knows DynamoDB attribute names and KVS/STS/API
//! Gateway APIs; the domain sees ports and domain types only.
//!
//! ## Layout
//! - [`store`]: [`DynamoStore`] (`VoiceRoomStore`), lock item + transactions for one active
//!   room per chat room, compare-and-set on `version`, TTL on ended rooms.
//! - [`directory`]: [`DynamoDirectory`] (`ChatDirectory`) over `CONNECTIONS_TABLE` and
//!   `ROOMS_TABLE`, attribute names in [`DirectorySchema`].
//! - [`chat_store`]: [`DynamoChat`] (chat-domain's `ChatStore`, and so a `ChatDirectory`):
//!   the built-in chat on four tables ([`ChatTables`]), readable by [`DynamoDirectory`] too.
//! - [`channels`]: [`KvsChannels`] (`SignalingChannels`).
//! - [`credentials`]: [`StsCredentials`] (`CredentialIssuer`) and the pure
//!   [`session_policy`](credentials::session_policy).
//! - [`notifier`]: [`ApiGatewayNotifier`] (`Notifier`), and [`EndpointNotifier`], which picks
//!   the management endpoint per send (configured, or [`derive_endpoint`] of the event), and
//!   [`ApiGatewayChatEvents`] (chat-domain's `ChatEvents`) through the same machinery.
//! - [`pool`]: [`DynamoPool`] (`ChannelPool`): released KVS channels kept for reuse
//!   (`CHANNEL_POOL_TABLE`, optional), claimed with a conditional write.
//! - [`recordings`]: [`S3Recordings`] (voice-executor's `RecordingFiles`): recordings in the
//!   template's S3 bucket, uploaded in small parts through presigned URLs and assembled into
//!   one object per recording.
//! - [`secrets`]: [`read_resume_key`], the built-in chat's resume-token key from Secrets
//!   Manager (once per cold start).
//! - [`errors`]: [`ConfigError`], [`PolicyError`] and the shared SDK error mapping.
//! - [`config`]: [`AwsConfig::from_env`] (the one parser of the AWS settings, errors in
//!   [`EnvError`]), [`AwsClients`], [`AwsPorts`].
//! - `testing` (feature `test-support`): moto_server, test tables, a fake KVS.
//!
//! See `docs/aws-adapters.md` for table layouts, IAM and what is tested how.
#![warn(missing_docs)]

pub mod channels;
pub mod chat_store;
pub mod config;
pub mod credentials;
pub mod directory;
pub mod errors;
pub mod notifier;
pub mod pool;
pub mod recordings;
pub mod secrets;
pub mod signups;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;

pub use channels::KvsChannels;
pub use chat_store::{ChatTables, DynamoChat};
pub use config::{AwsClients, AwsConfig, AwsPorts, ChatMode, EnvError, ExistingAttributes};
pub use credentials::StsCredentials;
pub use directory::{DirectorySchema, DynamoDirectory};
pub use errors::{ConfigError, PolicyError};
pub use notifier::{
    derive_endpoint, with_request_endpoint, ApiGatewayChatEvents, ApiGatewayNotifier,
    EndpointNotifier,
};
pub use pool::DynamoPool;
pub use recordings::{s3_client, RecordingSettings, S3Recordings};
pub use secrets::{read_resume_key, ResumeKeyError};
pub use signups::{with_source_ip, DynamoSignUps};
pub use store::DynamoStore;
