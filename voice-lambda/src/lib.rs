//! # voice-lambda
//!
//! The AWS Lambda entrypoint of the voice rooms: API Gateway WebSocket events (`$connect`,
//! `$disconnect`, each voice action's route and `$default`) handed to the shared
//! `voice_executor::Executor` — voice actions always, the chat actions too with
//! `CHAT_MODE=builtin` — the EventBridge schedule that runs the sweep, and the stack's
//! `Custom::ChannelDrain` resource, whose `Delete` deletes the deployment's signaling channels.
//!
//! Why a library plus a thin binary: the handler is generic over
//! [`Ports`](voice_domain::ports::Ports), so the same code is tested over the in-memory adapters
//! and over the moto-backed AWS adapters, while `main.rs` only reads the configuration, builds the
//! SDK clients once per instance and starts the runtime.
//!
//! ## Layout
//! - [`aws`]: the AWS port set ([`aws::LambdaPorts`]) and its wiring from SDK clients.
//! - [`config`]: the environment, checked together at cold start (the AWS settings by
//!   `voice-adapters-aws`'s parser, plus the capacity).
//! - [`event`]: recognising a WebSocket route event, a scheduled event or a CloudFormation
//!   custom resource request in the raw payload.
//! - [`custom_resource`]: answering CloudFormation (the teardown on `Delete`).
//! - [`VoiceLambda`]: the handler.
#![warn(missing_docs)]

pub mod aws;
pub mod config;
pub mod custom_resource;
pub mod event;
mod handler;

pub use config::LambdaConfig;
pub use handler::{
    status_of, DisconnectView, HandlerError, LambdaOutput, SweepReportView, VoiceLambda,
    CONNECT_ROUTE, DEFAULT_ROUTE, DISCONNECT_ROUTE,
};
