//! # chat-domain
//!
//! The group chat that voice rooms belong to, as pure rules: identity (a display name, kept
//! across reconnects by a resume token), chat rooms with an admin, join requests and their
//! approval, members, presence and messages. The voice domain reads this chat through its
//! [`ChatDirectory`](voice_domain::ports::ChatDirectory) port, which every [`ChatStore`] is.
//!
//! Architecture invariant: chat rules live here, not in an entrypoint. Nothing here does I/O or
//! depends on tokio, AWS, axum, hyper or SQL; storage, event delivery, resume tokens, time and
//! ids come in through the [ports](ports).
//!
//! ## Layout
//! - `model`: what is stored (rooms, messages) and the validation of names and texts.
//! - `page`: pages of the lists clients read, and their cursors.
//! - `ports`: the traits adapters implement, each with its error contract.
//! - `errors`: the refusals of the use cases, with stable wire codes.
//! - `events`: what members are told, and the views replies show.
//! - `service`: the use cases ([`ChatService`]).
//! - `contract` (feature `contract-tests`): the suite every [`ChatStore`] runs.
#![warn(missing_docs)]

#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod errors;
pub mod events;
pub mod model;
pub mod page;
pub mod ports;
pub mod service;

pub use errors::ChatError;
pub use events::{
    event_frame, ChatEvent, HelloData, MemberView, MembersPage, MessagesPage, RoomView, RoomsPage,
};
pub use model::{
    room_name_key, ChatMessage, RoomRecord, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, MESSAGE_HISTORY,
    MESSAGE_HISTORY_BYTES,
};
pub use page::{MemberEntry, Page, RoomSummary, StoredMessage};
pub use ports::{
    ActiveVoiceRooms, AdmitAll, ChatAdapters, ChatEvents, ChatIds, ChatStore, ChatStoreError,
    JoinQuotas, Quota, ResumeClaims, SessionTokens, SignUpGate, StoreDirectory, UserUsage,
};
pub use service::{ChatLimits, ChatService, Removal};
