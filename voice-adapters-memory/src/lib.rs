//! # voice-adapters-memory
//!
//! Every voice-domain port, in memory: the self-hosted server's embedded default, the adapters
//! of a library user who wants voice rooms without infrastructure, and the fakes of the tests.
//!
//! Each adapter is a cheap-to-clone handle around shared state (`Arc<Mutex<..>>`), so a test
//! can keep a clone to look inside while the service owns another. The mutexes are std ones:
//! no lock is ever held across an `.await`, so an async mutex would only add cost.
//!
//! ## Layout
//! - `store`: voice rooms, with the same atomic guarantees as DynamoDB's conditional writes.
//! - `directory`: a small chat app (users on connections, chat rooms, admins, join requests).
//! - `chat`: the chat domain's store ([`MemoryChat`]) over that directory, with names and messages.
//! - `channels`: signaling channels (existence, tags, endpoints).
//! - `credentials`: opaque tokens that record their scope.
//! - `notifier`: an outbox per connection; connections can be marked gone.
//! - `pool`: [`MemoryPool`], released signaling channels kept for reuse (the rule that makes
//!   reuse safe is the domain's `LeasePolicy`).
//! - [`clock`], [`ids`]: a manual clock and sequential ids (the real ones, which
//!   [`MemoryPorts`] runs on, are `voice-adapters-std`'s).
//! - `faults`: a wrapper that makes any port fail at its N-th call.
//! - [`MemoryPorts`] and [`memory_service`]: everything wired together.
#![warn(missing_docs)]

pub mod channels;
pub mod chat;
pub mod clock;
pub mod credentials;
pub mod directory;
pub mod faults;
pub mod ids;
pub mod notifier;
pub mod pool;
pub mod store;

use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::ports::{Adapters, Ports};
use voice_domain::{ServiceConfig, VoiceService};

pub use channels::MemoryChannels;
pub use chat::MemoryChat;
pub use clock::ManualClock;
pub use credentials::MemoryCredentials;
pub use directory::MemoryDirectory;
pub use ids::SequentialIds;
pub use notifier::MemoryNotifier;
pub use pool::MemoryPool;
pub use store::MemoryStore;

/// The in-memory port set with the system clock and uuid ids: what the self-hosted server and
/// the embedding example run on.
pub struct MemoryPorts;

impl Ports for MemoryPorts {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = MemoryChannels;
    type Credentials = MemoryCredentials;
    type Notifier = MemoryNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

/// Handles onto the state behind a [`memory_service`], for the embedding code (to register
/// users and rooms in the directory, read notifications) and for tests (to look inside).
#[derive(Clone)]
pub struct MemoryHandles {
    /// The voice-room store.
    pub store: MemoryStore,
    /// The chat directory.
    pub directory: MemoryDirectory,
    /// The signaling channels.
    pub channels: MemoryChannels,
    /// The issued credentials.
    pub credentials: MemoryCredentials,
    /// The notification outboxes.
    pub notifier: MemoryNotifier,
}

/// A ready [`VoiceService`] over fresh in-memory adapters, and handles onto them.
pub fn memory_service(config: ServiceConfig) -> (VoiceService<MemoryPorts>, MemoryHandles) {
    let clock = SystemClock;
    let handles = MemoryHandles {
        store: MemoryStore::new(),
        directory: MemoryDirectory::new(),
        channels: MemoryChannels::new(clock),
        credentials: MemoryCredentials::new(clock),
        notifier: MemoryNotifier::new(),
    };
    let service = VoiceService::new(
        Adapters::<MemoryPorts> {
            store: handles.store.clone(),
            directory: handles.directory.clone(),
            channels: handles.channels.clone(),
            credentials: handles.credentials.clone(),
            notifier: handles.notifier.clone(),
            clock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        config,
    );
    (service, handles)
}
