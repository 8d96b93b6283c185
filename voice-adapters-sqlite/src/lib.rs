//! # voice-adapters-sqlite
//!
//! Durable state for the self-hosted server (issue 7: a chat server that forgets its rooms and
//! approved members on restart is not usable). One SQLite file in the data directory holds:
//! - voice rooms ([`SqliteStore`], a [`VoiceRoomStore`](voice_domain::ports::VoiceRoomStore)
//!   with the same atomic guarantees as the memory and DynamoDB stores);
//! - the chat directory ([`SqliteChat`]): users, chat rooms, memberships and recent messages.
//!
//! ## Layout
//! - [`db`]: opening (WAL, `synchronous`, busy timeout, the data-directory lock), ordered
//!   migrations on `PRAGMA user_version`, and how blocking SQLite is called from async code.
//! - [`migrations`]: the schema.
//! - [`store`]: voice rooms.
//! - [`chat`]: the chat directory.
#![warn(missing_docs)]

pub mod chat;
pub mod db;
pub mod migrations;
pub mod store;

pub use chat::SqliteChat;
pub use db::{Database, OpenOptions, SqliteError, Synchronous};
pub use store::SqliteStore;
