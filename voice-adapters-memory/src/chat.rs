//! The chat domain's [`ChatStore`] in memory: the self-hosted server's `--in-memory` mode, a
//! library user's chat without a database, and the tests' store. It runs the chat contract
//! suite like every other store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chat_domain::{
    room_name_key, ChatIds, ChatMessage, ChatStore, ChatStoreError, JoinQuotas, MemberEntry, Page,
    Quota, RoomRecord, RoomSummary, StoredMessage, UserUsage, MESSAGE_HISTORY,
};
use voice_domain::ports::{ChatDirectory, DirectoryError, MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::directory::{DirectoryChangeError, MemoryDirectory};
use crate::ids::SequentialIds;

#[derive(Default)]
struct Extra {
    names: HashMap<UserId, String>,
    rooms: BTreeMap<ChatRoomId, RoomRecord>,
    messages: HashMap<ChatRoomId, VecDeque<StoredMessage>>,
    last_seq: HashMap<ChatRoomId, u64>,
    /// Per room, so counting a room's bans for the quota is one lookup.
    bans: HashMap<ChatRoomId, HashSet<UserId>>,
    generations: HashMap<UserId, u64>,
}

/// [`ChatStore`] in memory: [`MemoryDirectory`] for users and memberships, plus names and
/// messages. Clones share state.
#[derive(Clone, Default)]
pub struct MemoryChat {
    directory: MemoryDirectory,
    extra: Arc<Mutex<Extra>>,
}

impl MemoryChat {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn change_err(e: DirectoryChangeError) -> ChatStoreError {
    match e {
        DirectoryChangeError::RoomExists => ChatStoreError::RoomExists,
        DirectoryChangeError::NoSuchRoom => ChatStoreError::NoSuchRoom,
        DirectoryChangeError::NoPendingRequest => ChatStoreError::NoPendingRequest,
    }
}

#[async_trait]
impl ChatDirectory for MemoryChat {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        self.directory.user_of(connection).await
    }
    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        self.directory.membership(chat_room, user).await
    }
    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        self.directory.connections_of(chat_room).await
    }
}

#[async_trait]
impl ChatStore for MemoryChat {
    async fn bind_connection(
        &self,
        connection: &ConnectionId,
        user: &UserId,
        name: &str,
    ) -> Result<(), ChatStoreError> {
        self.lock().names.insert(user.clone(), name.to_owned());
        self.directory.connect(connection.clone(), user.clone());
        Ok(())
    }

    async fn unbind_connection(&self, connection: &ConnectionId) -> Result<(), ChatStoreError> {
        self.directory.disconnect(connection);
        Ok(())
    }

    async fn user_name(&self, user: &UserId) -> Result<Option<String>, ChatStoreError> {
        Ok(self.lock().names.get(user).cloned())
    }

    async fn connections_of_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConnectionId>, ChatStoreError> {
        Ok(self.directory.connections_of_user(user))
    }

    async fn identified_connections(&self) -> Result<Vec<ConnectionId>, ChatStoreError> {
        Ok(self.directory.connections())
    }

    async fn rooms_of_member(&self, user: &UserId) -> Result<Vec<ChatRoomId>, ChatStoreError> {
        let rooms: Vec<ChatRoomId> = self.lock().rooms.keys().cloned().collect();
        Ok(rooms
            .into_iter()
            .filter(|r| {
                self.directory
                    .members(r)
                    .iter()
                    .any(|(u, s)| u == user && *s == MemberState::Approved)
            })
            .collect())
    }

    /// The quota count, the name check and the insert under one lock (`extra`, held
    /// throughout), so racing creators cannot both pass either.
    async fn create_room(
        &self,
        room: &RoomRecord,
        max_admin_rooms: usize,
    ) -> Result<(), ChatStoreError> {
        // Lock order everywhere: `extra`, then the directory's own lock.
        let mut extra = self.lock();
        if extra
            .rooms
            .values()
            .filter(|r| r.admin == room.admin)
            .count()
            >= max_admin_rooms
        {
            return Err(ChatStoreError::QuotaExceeded(Quota::RoomsPerUser));
        }
        let wanted = room_name_key(&room.name);
        if extra
            .rooms
            .values()
            .any(|r| room_name_key(&r.name) == wanted)
        {
            return Err(ChatStoreError::RoomExists);
        }
        self.directory
            .create_room(room.id.clone(), room.admin.clone())
            .map_err(change_err)?;
        extra.rooms.insert(room.id.clone(), room.clone());
        Ok(())
    }

    async fn usage_of(&self, user: &UserId) -> Result<UserUsage, ChatStoreError> {
        let extra = self.lock();
        let rooms_admin = extra.rooms.values().filter(|r| &r.admin == user).count();
        let pending_requests = extra
            .rooms
            .keys()
            .filter(|r| {
                self.directory
                    .members(r)
                    .iter()
                    .any(|(u, s)| u == user && *s == MemberState::Pending)
            })
            .count();
        Ok(UserUsage {
            rooms_admin,
            pending_requests,
        })
    }

    async fn token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError> {
        Ok(self.lock().generations.get(user).copied().unwrap_or(0))
    }

    async fn bump_token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError> {
        let mut extra = self.lock();
        let g = extra.generations.entry(user.clone()).or_insert(0);
        *g += 1;
        Ok(*g)
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError> {
        Ok(self.lock().rooms.values().cloned().collect())
    }

    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError> {
        Ok(self.lock().rooms.get(id).cloned())
    }

    async fn members(
        &self,
        room: &ChatRoomId,
    ) -> Result<Vec<(UserId, MemberState)>, ChatStoreError> {
        Ok(self.directory.members(room))
    }

    /// Ban, quotas and insert under one lock (`extra`, which every membership write but a
    /// decision holds; a decision only lowers the counts), so two racing requests cannot both
    /// take the last free place.
    async fn request_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        quotas: JoinQuotas,
    ) -> Result<(MemberState, MemberState), ChatStoreError> {
        let extra = self.lock();
        if !extra.rooms.contains_key(room) {
            return Err(ChatStoreError::NoSuchRoom);
        }
        if extra.bans.get(room).is_some_and(|b| b.contains(user)) {
            return Err(ChatStoreError::Banned);
        }
        let members = self.directory.members(room);
        let before = members
            .iter()
            .find(|(u, _)| u == user)
            .map_or(MemberState::None, |(_, s)| *s);
        if before == MemberState::None {
            let waiting = members
                .iter()
                .filter(|(_, s)| *s == MemberState::Pending)
                .count();
            if waiting >= quotas.per_room {
                return Err(ChatStoreError::QuotaExceeded(Quota::PendingPerRoom));
            }
            let mine = extra
                .rooms
                .keys()
                .filter(|r| self.directory.state_and_count(r, user).0 == MemberState::Pending)
                .count();
            if mine >= quotas.per_user {
                return Err(ChatStoreError::QuotaExceeded(Quota::PendingPerUser));
            }
        }
        let after = self
            .directory
            .request_join(room, user.clone())
            .map_err(change_err)?;
        Ok((before, after))
    }

    async fn decide_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<(), ChatStoreError> {
        let r = if approve {
            self.directory.approve(room, user)
        } else {
            self.directory.deny(room, user)
        };
        r.map_err(change_err)
    }

    /// Quota check, removal and ban under one lock (`extra`, which every ban write holds), so
    /// two racing bans cannot both take the last free place.
    async fn remove_member(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        ban: bool,
        max_bans: usize,
    ) -> Result<MemberState, ChatStoreError> {
        let mut extra = self.lock();
        if !extra.rooms.contains_key(room) {
            return Err(ChatStoreError::NoSuchRoom);
        }
        if ban {
            let held = extra.bans.get(room);
            if !held.is_some_and(|b| b.contains(user)) && held.map_or(0, HashSet::len) >= max_bans {
                return Err(ChatStoreError::QuotaExceeded(Quota::BansPerRoom));
            }
        }
        let before = self
            .directory
            .members(room)
            .into_iter()
            .find(|(u, _)| u == user)
            .map_or(MemberState::None, |(_, s)| s);
        self.directory
            .set_state(room, user.clone(), MemberState::None)
            .map_err(change_err)?;
        if ban {
            extra
                .bans
                .entry(room.clone())
                .or_default()
                .insert(user.clone());
        }
        Ok(before)
    }

    async fn unban(&self, room: &ChatRoomId, user: &UserId) -> Result<bool, ChatStoreError> {
        let mut extra = self.lock();
        if !extra.rooms.contains_key(room) {
            return Err(ChatStoreError::NoSuchRoom);
        }
        Ok(extra.bans.get_mut(room).is_some_and(|b| b.remove(user)))
    }

    async fn append_message(
        &self,
        room: &ChatRoomId,
        message: &ChatMessage,
    ) -> Result<(), ChatStoreError> {
        let mut extra = self.lock();
        if !extra.rooms.contains_key(room) {
            return Err(ChatStoreError::NoSuchRoom);
        }
        let seq = {
            let last = extra.last_seq.entry(room.clone()).or_insert(0);
            *last += 1;
            *last
        };
        let q = extra.messages.entry(room.clone()).or_default();
        q.push_back(StoredMessage {
            seq,
            message: message.clone(),
        });
        while q.len() > MESSAGE_HISTORY {
            q.pop_front();
        }
        Ok(())
    }

    async fn message_page(
        &self,
        room: &ChatRoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ChatStoreError> {
        let extra = self.lock();
        let Some(q) = extra.messages.get(room) else {
            return Ok(Vec::new());
        };
        let older: Vec<&StoredMessage> = q
            .iter()
            .filter(|m| before.is_none_or(|b| m.seq < b))
            .collect();
        Ok(older[older.len().saturating_sub(limit)..]
            .iter()
            .map(|m| (*m).clone())
            .collect())
    }

    /// Rooms in id order from the position (a room id) after `after`.
    async fn room_page(
        &self,
        viewer: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoomSummary>, ChatStoreError> {
        use std::ops::Bound;
        let after = after
            .map(|a| ChatRoomId::parse(a).map_err(|_| ChatStoreError::BadCursor))
            .transpose()?;
        let extra = self.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = extra.rooms.range((from, Bound::Unbounded));
        let items: Vec<RoomSummary> = it
            .by_ref()
            .take(limit)
            .map(|(id, r)| {
                let (my_state, member_count) = self.directory.state_and_count(id, viewer);
                RoomSummary {
                    record: r.clone(),
                    member_count,
                    my_state,
                }
            })
            .collect();
        let next = match (it.next(), items.last()) {
            (Some(_), Some(last)) => Some(last.record.id.to_string()),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn member_page(
        &self,
        room: &ChatRoomId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Page<MemberEntry>, ChatStoreError> {
        let extra = self.lock();
        let (page, more) = self.directory.members_after(room, after, limit);
        let next = page.last().filter(|_| more).map(|(u, _)| u.to_string());
        let items = page
            .into_iter()
            .map(|(user, state)| MemberEntry {
                name: extra.names.get(&user).cloned(),
                online: !self.directory.connections_of_user(&user).is_empty(),
                user,
                state,
            })
            .collect();
        Ok(Page { items, next })
    }
}

impl ChatIds for SequentialIds {
    fn user_id(&self) -> UserId {
        UserId::parse(format!("user-{}", self.next())).expect("valid id")
    }

    fn chat_room_id(&self) -> ChatRoomId {
        ChatRoomId::parse(format!("room-{}", self.next())).expect("valid id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_chat_keeps_the_store_contract() {
        futures::executor::block_on(chat_domain::contract::run_all(&MemoryChat::new(), "mem"));
    }
}
