//! The self-hosted server's adapter set for the voice domain.

use async_trait::async_trait;
use voice_adapters_memory::MemoryStore;
use voice_adapters_sqlite::SqliteStore;
use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::ports::{Ports, StoreError, VoiceRoomStore};
use voice_domain::{ChatRoomId, ConnectionId, VoiceRoom, VoiceRoomId};

use crate::adapters::hub::HubNotifier;
use crate::adapters::relay::RelayChannels;
use crate::adapters::token::TokenIssuer;
use chat_domain::StoreDirectory;

/// Voice rooms in SQLite (the default, `--data-dir`) or in memory (`--in-memory`), the chat
/// state as directory, the relay's channels, HMAC voice tokens, and events through the
/// connection hub.
pub struct ServerPorts;

impl Ports for ServerPorts {
    type Store = ServerStore;
    type Directory = StoreDirectory;
    type Channels = RelayChannels;
    type Credentials = TokenIssuer;
    type Notifier = HubNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
}

/// The voice-room store the server was started with. An enum rather than a trait object: two
/// known stores, no boxing on the relay's per-signal room lookups.
#[derive(Clone)]
pub enum ServerStore {
    /// Rooms die with the process (`--in-memory`, tests).
    Memory(MemoryStore),
    /// Rooms survive restarts; the ones left active are ended at start-up.
    Sqlite(SqliteStore),
}

impl Default for ServerStore {
    fn default() -> Self {
        Self::Memory(MemoryStore::new())
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            ServerStore::Memory($s) => $call,
            ServerStore::Sqlite($s) => $call,
        }
    };
}

#[async_trait]
impl VoiceRoomStore for ServerStore {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        delegate!(self, s => s.create_if_none_active(room).await)
    }
    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        delegate!(self, s => s.get(id).await)
    }
    async fn active_in_chat_room(
        &self,
        chat: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError> {
        delegate!(self, s => s.active_in_chat_room(chat).await)
    }
    async fn active_with_connection(&self, c: &ConnectionId) -> Result<Vec<VoiceRoom>, StoreError> {
        delegate!(self, s => s.active_with_connection(c).await)
    }
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        delegate!(self, s => s.update(room).await)
    }
    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        delegate!(self, s => s.list_active().await)
    }
}
