//! The voice-room store in memory, with the same atomicity as the DynamoDB one: "create unless
//! an active room exists for the chat room" and compare-and-set updates happen under one lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_domain::ports::{StoreError, VoiceRoomStore};
use voice_domain::{ChatRoomId, ConnectionId, VoiceRoom, VoiceRoomId};

#[derive(Default)]
struct Inner {
    rooms: HashMap<VoiceRoomId, VoiceRoom>,
    /// chat room → its active voice room: the "lock" that makes one-active-per-chat atomic.
    active_by_chat: HashMap<ChatRoomId, VoiceRoomId>,
    /// connection → active rooms it is a participant of, so disconnects are O(1).
    by_connection: HashMap<ConnectionId, HashSet<VoiceRoomId>>,
}

impl Inner {
    fn index(&mut self, room: &VoiceRoom) {
        for p in room.participants() {
            self.by_connection
                .entry(p.connection.clone())
                .or_default()
                .insert(room.id().clone());
        }
    }

    fn unindex(&mut self, room: &VoiceRoom) {
        for p in room.participants() {
            if let Some(set) = self.by_connection.get_mut(&p.connection) {
                set.remove(room.id());
                if set.is_empty() {
                    self.by_connection.remove(&p.connection);
                }
            }
        }
    }
}

/// Voice rooms in memory. Clones share the same rooms.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written room (every write is a
        // single insert after all checks), so the poisoned state is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every room, active or ended (for tests and invariant checks).
    pub fn all(&self) -> Vec<VoiceRoom> {
        self.lock().rooms.values().cloned().collect()
    }
}

#[async_trait]
impl VoiceRoomStore for MemoryStore {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.active_by_chat.get(room.chat_room()) {
            return Err(StoreError::AlreadyActive {
                existing: existing.clone(),
            });
        }
        if inner.rooms.contains_key(room.id()) {
            return Err(StoreError::VersionConflict);
        }
        if room.is_active() {
            inner
                .active_by_chat
                .insert(room.chat_room().clone(), room.id().clone());
        }
        inner.index(room);
        inner.rooms.insert(room.id().clone(), room.clone());
        Ok(())
    }

    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        Ok(self.lock().rooms.get(id).cloned())
    }

    async fn active_in_chat_room(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .active_by_chat
            .get(chat_room)
            .and_then(|id| inner.rooms.get(id))
            .cloned())
    }

    async fn active_with_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<VoiceRoom>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .by_connection
            .get(connection)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.rooms.get(id))
            .filter(|r| r.is_active())
            .cloned()
            .collect())
    }

    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.rooms.get(room.id()).cloned() else {
            return Err(StoreError::NotFound);
        };
        if stored.version() + 1 != room.version() {
            return Err(StoreError::VersionConflict);
        }
        inner.unindex(&stored);
        if stored.is_active() && !room.is_active() {
            inner.active_by_chat.remove(room.chat_room());
        }
        inner.index(room);
        inner.rooms.insert(room.id().clone(), room.clone());
        Ok(())
    }

    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .active_by_chat
            .values()
            .filter_map(|id| inner.rooms.get(id))
            .cloned()
            .collect())
    }
}
