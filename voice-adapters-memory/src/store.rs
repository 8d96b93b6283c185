//! The voice-room store in memory, with the same atomicity as the DynamoDB one: "create unless
//! an active room exists for the chat room" and compare-and-set updates happen under one lock.

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Ended rooms, oldest end first: the ones forgotten once there are more than
    /// `max_ended` (see [`MemoryStore::with_ended_capacity`]).
    ended: VecDeque<VoiceRoomId>,
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

    /// Records that `id` has ended, forgetting the oldest ended rooms beyond `max`.
    fn ended(&mut self, id: &VoiceRoomId, max: usize) {
        self.ended.push_back(id.clone());
        while self.ended.len() > max {
            if let Some(old) = self.ended.pop_front() {
                // Ended is final, so an id in this queue never names an active room.
                self.rooms.remove(&old);
            }
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

/// How many ended rooms a [`MemoryStore`] remembers by default.
pub const DEFAULT_ENDED_CAPACITY: usize = 10_000;

/// Voice rooms in memory. Clones share the same rooms.
///
/// Active rooms are kept as long as they are active. Ended rooms are kept so that a late
/// `getVoiceCredentials` hears `VOICE_ROOM_ENDED`, but only the most recent
/// [`DEFAULT_ENDED_CAPACITY`] of them: a long-running in-memory server must not grow without
/// bound (the DynamoDB store expires ended rooms by TTL for the same reason). An ended room
/// forgotten this way reads as absent (`VOICE_ROOM_NOT_FOUND`).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    max_ended: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_ended_capacity(DEFAULT_ENDED_CAPACITY)
    }
}

impl MemoryStore {
    /// An empty store remembering [`DEFAULT_ENDED_CAPACITY`] ended rooms.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store remembering at most `max_ended` ended rooms (the most recently ended).
    pub fn with_ended_capacity(max_ended: usize) -> Self {
        Self {
            inner: Arc::default(),
            max_ended,
        }
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
        if !room.is_active() {
            inner.ended(room.id(), self.max_ended);
        }
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

    async fn active_ids_in_chat_rooms(
        &self,
        chat_rooms: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        // One lock for the whole page: the index answers without touching the rooms.
        let inner = self.lock();
        Ok(chat_rooms
            .iter()
            .filter_map(|c| inner.active_by_chat.get(c).map(|v| (c.clone(), v.clone())))
            .collect())
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
        let ends = stored.is_active() && !room.is_active();
        if ends {
            inner.active_by_chat.remove(room.chat_room());
        }
        inner.index(room);
        inner.rooms.insert(room.id().clone(), room.clone());
        if ends {
            inner.ended(room.id(), self.max_ended);
        }
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

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use voice_domain::{Timestamp, UserId};

    use super::*;

    fn started(n: usize) -> VoiceRoom {
        voice_domain::contract::sample_room("cap", &format!("r{n}"), &format!("c{n}"), "u", "k")
    }

    fn end(store: &MemoryStore, room: &VoiceRoom) {
        let mut ended = room.clone();
        let master: UserId = room.master().clone();
        ended
            .end(&master, false, Timestamp::from_millis(1_700_000_000_001))
            .unwrap();
        ended.bump_version();
        block_on(store.update(&ended)).unwrap();
    }

    #[test]
    fn only_the_most_recent_ended_rooms_are_kept_and_active_ones_always() {
        let store = MemoryStore::with_ended_capacity(3);
        let rooms: Vec<VoiceRoom> = (0..6).map(started).collect();
        for r in &rooms {
            block_on(store.create_if_none_active(r)).unwrap();
        }
        // Rooms 0..5 end in order; room 5 stays active throughout.
        for r in &rooms[..5] {
            end(&store, r);
        }
        let get = |r: &VoiceRoom| block_on(store.get(r.id())).unwrap();
        assert!(
            get(&rooms[0]).is_none() && get(&rooms[1]).is_none(),
            "oldest ends forgotten"
        );
        for r in &rooms[2..5] {
            assert!(get(r).is_some_and(|s| !s.is_active()), "recent ends kept");
        }
        assert!(
            get(&rooms[5]).is_some_and(|s| s.is_active()),
            "active rooms are never dropped"
        );
        assert_eq!(store.all().len(), 4);
        assert_eq!(block_on(store.list_active()).unwrap().len(), 1);
        // A forgotten room's chat room can have a new voice room, as after any end.
        block_on(
            store.create_if_none_active(&voice_domain::contract::sample_room(
                "cap", "again", "c0", "u", "k",
            )),
        )
        .unwrap();
    }
}
