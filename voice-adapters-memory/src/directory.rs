//! A small chat app in memory: which user is on which connection, chat rooms with their admin,
//! join requests and approved members. Enough for the self-hosted server's chat and for tests;
//! the AWS deployment reads the real chat app's tables instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_domain::ports::{ChatDirectory, DirectoryError, MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

/// Why a directory change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryChangeError {
    /// A chat room with that id exists.
    RoomExists,
    /// No chat room with that id.
    NoSuchRoom,
    /// The user has no pending request to approve or deny.
    NoPendingRequest,
}

#[derive(Debug, Clone, Default)]
struct Room {
    admin: Option<UserId>,
    /// Members and requesters (admin included, as approved).
    members: BTreeMap<UserId, MemberState>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<ConnectionId, UserId>,
    rooms: BTreeMap<ChatRoomId, Room>,
}

/// The chat directory in memory. Clones share the same state.
#[derive(Clone, Default)]
pub struct MemoryDirectory {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` is now on `connection`.
    pub fn connect(&self, connection: ConnectionId, user: UserId) {
        self.lock().users.insert(connection, user);
    }

    /// `connection` closed.
    pub fn disconnect(&self, connection: &ConnectionId) {
        self.lock().users.remove(connection);
    }

    /// Creates a chat room with `admin` as its admin (and approved member).
    ///
    /// # Errors
    /// [`DirectoryChangeError::RoomExists`].
    pub fn create_room(&self, room: ChatRoomId, admin: UserId) -> Result<(), DirectoryChangeError> {
        let mut inner = self.lock();
        if inner.rooms.contains_key(&room) {
            return Err(DirectoryChangeError::RoomExists);
        }
        let mut r = Room {
            admin: Some(admin.clone()),
            ..Room::default()
        };
        r.members.insert(admin, MemberState::Approved);
        inner.rooms.insert(room, r);
        Ok(())
    }

    /// Records a join request (no-op for someone already approved).
    ///
    /// # Errors
    /// [`DirectoryChangeError::NoSuchRoom`].
    pub fn request_join(
        &self,
        room: &ChatRoomId,
        user: UserId,
    ) -> Result<MemberState, DirectoryChangeError> {
        let mut inner = self.lock();
        let r = inner
            .rooms
            .get_mut(room)
            .ok_or(DirectoryChangeError::NoSuchRoom)?;
        let state = r.members.entry(user).or_insert(MemberState::Pending);
        Ok(*state)
    }

    /// Approves a pending request.
    ///
    /// # Errors
    /// [`DirectoryChangeError::NoSuchRoom`] or [`DirectoryChangeError::NoPendingRequest`].
    pub fn approve(&self, room: &ChatRoomId, user: &UserId) -> Result<(), DirectoryChangeError> {
        self.decide(room, user, Some(MemberState::Approved))
    }

    /// Denies (removes) a pending request.
    ///
    /// # Errors
    /// [`DirectoryChangeError::NoSuchRoom`] or [`DirectoryChangeError::NoPendingRequest`].
    pub fn deny(&self, room: &ChatRoomId, user: &UserId) -> Result<(), DirectoryChangeError> {
        self.decide(room, user, None)
    }

    fn decide(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        to: Option<MemberState>,
    ) -> Result<(), DirectoryChangeError> {
        let mut inner = self.lock();
        let r = inner
            .rooms
            .get_mut(room)
            .ok_or(DirectoryChangeError::NoSuchRoom)?;
        if r.members.get(user) != Some(&MemberState::Pending) {
            return Err(DirectoryChangeError::NoPendingRequest);
        }
        match to {
            Some(state) => {
                r.members.insert(user.clone(), state);
            }
            None => {
                r.members.remove(user);
            }
        }
        Ok(())
    }

    /// Sets a membership directly (tests, and removing a member).
    ///
    /// # Errors
    /// [`DirectoryChangeError::NoSuchRoom`].
    pub fn set_state(
        &self,
        room: &ChatRoomId,
        user: UserId,
        state: MemberState,
    ) -> Result<(), DirectoryChangeError> {
        let mut inner = self.lock();
        let r = inner
            .rooms
            .get_mut(room)
            .ok_or(DirectoryChangeError::NoSuchRoom)?;
        if state == MemberState::None {
            r.members.remove(&user);
        } else {
            r.members.insert(user, state);
        }
        Ok(())
    }

    /// The chat room's admin, if the room exists.
    pub fn admin_of(&self, room: &ChatRoomId) -> Option<UserId> {
        self.lock().rooms.get(room).and_then(|r| r.admin.clone())
    }

    /// Every chat room id.
    pub fn rooms(&self) -> Vec<ChatRoomId> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Members and requesters of a chat room with their state.
    pub fn members(&self, room: &ChatRoomId) -> Vec<(UserId, MemberState)> {
        self.lock()
            .rooms
            .get(room)
            .map(|r| r.members.iter().map(|(u, s)| (u.clone(), *s)).collect())
            .unwrap_or_default()
    }

    /// `user`'s state in `room` and the room's approved-member count, in one lock.
    pub fn state_and_count(&self, room: &ChatRoomId, user: &UserId) -> (MemberState, usize) {
        self.lock()
            .rooms
            .get(room)
            .map_or((MemberState::None, 0), |r| {
                (
                    r.members.get(user).copied().unwrap_or(MemberState::None),
                    r.members
                        .values()
                        .filter(|s| **s == MemberState::Approved)
                        .count(),
                )
            })
    }

    /// At most `limit` members and requesters of `room` with ids after `after`, by id, and
    /// whether more follow; in one lock.
    pub fn members_after(
        &self,
        room: &ChatRoomId,
        after: Option<&UserId>,
        limit: usize,
    ) -> (Vec<(UserId, MemberState)>, bool) {
        use std::ops::Bound;
        let inner = self.lock();
        let Some(r) = inner.rooms.get(room) else {
            return (Vec::new(), false);
        };
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
        let mut it = r.members.range((from, Bound::Unbounded));
        let page: Vec<_> = it
            .by_ref()
            .take(limit)
            .map(|(u, s)| (u.clone(), *s))
            .collect();
        (page, it.next().is_some())
    }

    /// Every connection with a user.
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.lock().users.keys().cloned().collect()
    }

    /// Connections of a user.
    pub fn connections_of_user(&self, user: &UserId) -> Vec<ConnectionId> {
        self.lock()
            .users
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(c, _)| c.clone())
            .collect()
    }
}

#[async_trait]
impl ChatDirectory for MemoryDirectory {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        Ok(self.lock().users.get(connection).cloned())
    }

    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        let inner = self.lock();
        Ok(inner.rooms.get(chat_room).map(|r| Membership {
            state: r.members.get(user).copied().unwrap_or(MemberState::None),
            is_admin: r.admin.as_ref() == Some(user),
        }))
    }

    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        let inner = self.lock();
        let Some(room) = inner.rooms.get(chat_room) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<ConnectionId> = inner
            .users
            .iter()
            .filter(|(_, u)| room.members.get(*u) == Some(&MemberState::Approved))
            .map(|(c, _)| c.clone())
            .collect();
        out.sort();
        Ok(out)
    }
}
