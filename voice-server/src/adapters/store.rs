//! The voice-room store the server runs on (SQLite or memory), as one type the relay and the
//! port set share.

use std::collections::HashMap;

use async_trait::async_trait;
use voice_adapters_memory::MemoryStore;
use voice_adapters_sqlite::SqliteStore;
use voice_domain::ports::{StoreError, VoiceRoomStore};
use voice_domain::{ChatRoomId, ConnectionId, VoiceRoom, VoiceRoomId};

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
    async fn active_ids_in_chat_rooms(
        &self,
        chats: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        delegate!(self, s => s.active_ids_in_chat_rooms(chats).await)
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
