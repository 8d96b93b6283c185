//! The self-hosted chat: the part of a group-chat app that voice needs (users on connections,
//! rooms with an admin, join requests, approved members, text messages).
//!
//! Two layers, so that storage can change without touching the rules:
//! - [`ChatState`]: storage primitives, also the voice domain's
//!   [`ChatDirectory`] (who is on which connection, who is an approved member). [`MemoryChat`]
//!   keeps it in memory; a SQLite-backed one can replace it.
//! - [`ChatService`]: the rules (validation, approved-member and admin checks, which events go
//!   to whom), returning [`ChatError`] with stable wire codes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::Serialize;
use tracing::{info, warn};
use voice_adapters_memory::directory::DirectoryChangeError;
use voice_adapters_memory::MemoryDirectory;
use voice_domain::ports::{
    ChatDirectory, Clock, DirectoryError, MemberState, Membership, PortFailure, VoiceRoomStore,
};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::hub::Hub;
use crate::ports::ServerStore;
use crate::token::TokenKey;

/// How many messages a room keeps (and `getMessages` returns).
pub const MESSAGE_HISTORY: usize = 100;
/// Longest display or room name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// A chat room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Its id.
    pub id: ChatRoomId,
    /// Its display name (unique, case-insensitively).
    pub name: String,
    /// Its creator, who approves join requests.
    pub admin: UserId,
}

/// A chat message, as stored and as sent (`message` event, `getMessages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The chat room.
    pub room_id: String,
    /// The author.
    pub user_id: String,
    /// The author's display name when it was sent.
    pub name: String,
    /// The text.
    pub text: String,
    /// When, ms since the Unix epoch.
    pub at: u64,
}

/// Storage refusals and failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatStoreError {
    /// A room with that name exists.
    #[error("a chat room with that name exists")]
    RoomExists,
    /// No such room.
    #[error("no such chat room")]
    NoSuchRoom,
    /// No pending request to decide.
    #[error("no pending join request")]
    NoPendingRequest,
    /// The storage could not answer.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// Chat storage. Also the voice domain's [`ChatDirectory`], so voice sees exactly the chat's
/// users and approved members.
#[async_trait]
pub trait ChatState: ChatDirectory {
    /// `user` (display name `name`) is now on `connection`.
    async fn bind_connection(
        &self,
        connection: &ConnectionId,
        user: &UserId,
        name: &str,
    ) -> Result<(), ChatStoreError>;
    /// `connection` closed: the user is offline there.
    async fn unbind_connection(&self, connection: &ConnectionId) -> Result<(), ChatStoreError>;
    /// A user's display name.
    async fn user_name(&self, user: &UserId) -> Result<Option<String>, ChatStoreError>;
    /// A user's open connections.
    async fn connections_of_user(&self, user: &UserId)
        -> Result<Vec<ConnectionId>, ChatStoreError>;
    /// Creates a room (its admin approved), unless one with the same name exists.
    async fn create_room(&self, room: &RoomRecord) -> Result<(), ChatStoreError>;
    /// Every room.
    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError>;
    /// One room.
    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError>;
    /// Members and requesters of a room.
    async fn members(
        &self,
        room: &ChatRoomId,
    ) -> Result<Vec<(UserId, MemberState)>, ChatStoreError>;
    /// Records a join request; returns the state before and after (approved stays approved).
    async fn request_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
    ) -> Result<(MemberState, MemberState), ChatStoreError>;
    /// Approves (or denies, removing it) a pending request.
    async fn decide_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<(), ChatStoreError>;
    /// Appends a message, keeping the last [`MESSAGE_HISTORY`].
    async fn append_message(
        &self,
        room: &ChatRoomId,
        message: &ChatMessage,
    ) -> Result<(), ChatStoreError>;
    /// The last `limit` messages, oldest first.
    async fn recent_messages(
        &self,
        room: &ChatRoomId,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, ChatStoreError>;
}

#[derive(Default)]
struct Extra {
    names: HashMap<UserId, String>,
    rooms: BTreeMap<ChatRoomId, RoomRecord>,
    messages: HashMap<ChatRoomId, VecDeque<ChatMessage>>,
}

/// [`ChatState`] in memory: [`MemoryDirectory`] for users and memberships, plus names and
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
impl ChatState for MemoryChat {
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

    async fn create_room(&self, room: &RoomRecord) -> Result<(), ChatStoreError> {
        // Lock order everywhere: `extra`, then the directory's own lock.
        let mut extra = self.lock();
        let wanted = room.name.to_lowercase();
        if extra
            .rooms
            .values()
            .any(|r| r.name.to_lowercase() == wanted)
        {
            return Err(ChatStoreError::RoomExists);
        }
        self.directory
            .create_room(room.id.clone(), room.admin.clone())
            .map_err(change_err)?;
        extra.rooms.insert(room.id.clone(), room.clone());
        Ok(())
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

    async fn request_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
    ) -> Result<(MemberState, MemberState), ChatStoreError> {
        let _extra = self.lock();
        let before = self
            .directory
            .members(room)
            .into_iter()
            .find(|(u, _)| u == user)
            .map_or(MemberState::None, |(_, s)| s);
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

    async fn append_message(
        &self,
        room: &ChatRoomId,
        message: &ChatMessage,
    ) -> Result<(), ChatStoreError> {
        let mut extra = self.lock();
        if !extra.rooms.contains_key(room) {
            return Err(ChatStoreError::NoSuchRoom);
        }
        let q = extra.messages.entry(room.clone()).or_default();
        q.push_back(message.clone());
        while q.len() > MESSAGE_HISTORY {
            q.pop_front();
        }
        Ok(())
    }

    async fn recent_messages(
        &self,
        room: &ChatRoomId,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, ChatStoreError> {
        let extra = self.lock();
        let q = extra.messages.get(room);
        Ok(q.map(|q| {
            q.iter()
                .skip(q.len().saturating_sub(limit))
                .cloned()
                .collect()
        })
        .unwrap_or_default())
    }
}

/// The voice domain's [`ChatDirectory`] port over whichever [`ChatState`] the server runs.
#[derive(Clone)]
pub struct SharedChat(pub Arc<dyn ChatState>);

#[async_trait]
impl ChatDirectory for SharedChat {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        self.0.user_of(connection).await
    }
    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        self.0.membership(chat_room, user).await
    }
    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        self.0.connections_of(chat_room).await
    }
}

/// A chat refusal, with its stable wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// No `hello` yet on this connection.
    #[error(
        "say hello first: send {{\"action\":\"hello\",\"name\":\"...\"}} before anything else"
    )]
    NotIdentified,
    /// No such room.
    #[error("chat room not found; check the room id (listRooms shows them)")]
    ChatRoomNotFound,
    /// Not a member.
    #[error("you are not a member of this chat room; send requestJoin first")]
    NotMember,
    /// Request still pending.
    #[error(
        "your request to join this chat room is still pending; wait for the admin to approve it"
    )]
    NotApproved,
    /// Only the admin may do this.
    #[error("only the chat room's admin can approve or deny join requests")]
    NotAdmin,
    /// Name taken.
    #[error("a chat room with this name exists; pick another name or join that one")]
    RoomExists,
    /// Nothing to approve or deny.
    #[error("this user has no pending join request in this chat room")]
    NoPendingRequest,
    /// A field is missing or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A field is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Storage failed.
    #[error("the chat storage is unavailable; try again in a moment")]
    Unavailable,
    /// Storage failed in a way retrying will not fix (a full disk, a read-only or damaged
    /// database): the operator must act, and the message says so instead of "try again".
    #[error("the server cannot store data right now (its disk may be full); this will not fix itself: tell the server's operator")]
    StorageBroken,
}

impl ChatError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotIdentified => "NOT_IDENTIFIED",
            Self::ChatRoomNotFound => "CHAT_ROOM_NOT_FOUND",
            Self::NotMember => "NOT_MEMBER",
            Self::NotApproved => "NOT_APPROVED",
            Self::NotAdmin => "NOT_ADMIN",
            Self::RoomExists => "ROOM_EXISTS",
            Self::NoPendingRequest => "NO_PENDING_REQUEST",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::TooLarge(_) => "TOO_LARGE",
            Self::Unavailable => "UNAVAILABLE",
            Self::StorageBroken => "INTERNAL",
        }
    }

    /// Whether sending the same request again may work.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable)
    }
}

impl From<ChatStoreError> for ChatError {
    fn from(e: ChatStoreError) -> Self {
        match e {
            ChatStoreError::RoomExists => Self::RoomExists,
            ChatStoreError::NoSuchRoom => Self::ChatRoomNotFound,
            ChatStoreError::NoPendingRequest => Self::NoPendingRequest,
            ChatStoreError::Unavailable(f) if !f.retryable => {
                tracing::error!(error = %f, "chat storage failed and will not recover by itself (disk full? read-only?): operator action needed");
                Self::StorageBroken
            }
            ChatStoreError::Unavailable(f) => {
                warn!(error = %f, "chat storage failed");
                Self::Unavailable
            }
        }
    }
}

impl From<DirectoryError> for ChatError {
    fn from(e: DirectoryError) -> Self {
        warn!(error = %e, "chat directory failed");
        Self::Unavailable
    }
}

/// Chat events, pushed as `{"type":"event","event":"<name>",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ChatEvent {
    /// To the admin: someone asked to join.
    JoinRequested {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
        /// Their name.
        name: String,
    },
    /// To the requester: approved.
    JoinApproved {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
    },
    /// To the requester: denied.
    JoinDenied {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
    },
    /// To the approved members: a new member.
    MemberJoined {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
        /// Their name.
        name: String,
    },
    /// To the approved members: a message.
    Message(ChatMessage),
}

#[derive(Serialize)]
struct Envelope<'a, E: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    event: &'a E,
}

/// Wraps any `{"event": ...}` shape into `{"type":"event", ...}`.
pub fn event_frame(event: &impl Serialize) -> String {
    serde_json::to_string(&Envelope {
        kind: "event",
        event,
    })
    .expect("events always serialise")
}

/// `hello` reply data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloData {
    /// The user id (stable across reloads when `resumeToken` is sent back).
    pub user_id: String,
    /// The display name.
    pub name: String,
    /// This connection's id.
    pub connection_id: String,
    /// Send it back in `hello` after a reload to stay the same user.
    pub resume_token: String,
    /// Whether the `resumeToken` sent was accepted.
    pub resumed: bool,
}

/// A room as `listRooms` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    /// Its id.
    pub room_id: String,
    /// Its name.
    pub name: String,
    /// Its admin.
    pub admin_user_id: String,
    /// Approved members.
    pub member_count: usize,
    /// The caller's state: `approved`, `pending` or `none`.
    pub my_state: MemberState,
    /// The active voice room, shown to approved members only.
    pub voice_room_id: Option<String>,
}

/// A member as `listMembers` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// Who.
    pub user_id: String,
    /// Their name.
    pub name: String,
    /// `approved` or `pending`.
    pub state: MemberState,
    /// Whether they are the admin.
    pub is_admin: bool,
    /// Whether they have an open connection.
    pub online: bool,
}

/// The chat rules over a [`ChatState`], pushing events through the [`Hub`].
#[derive(Clone)]
pub struct ChatService {
    state: Arc<dyn ChatState>,
    hub: Hub,
    voice_store: ServerStore,
    key: TokenKey,
    clock: Arc<dyn Clock>,
}

fn clean_name(kind: &str, raw: &str) -> Result<String, ChatError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ChatError::BadRequest(format!("{kind} must not be empty")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ChatError::TooLarge(format!(
            "{kind} must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::BadRequest(format!(
            "{kind} must not contain control characters"
        )));
    }
    Ok(name.to_owned())
}

impl ChatService {
    /// Rules over `state`; events through `hub`; the voice store for `listRooms`' voice room id.
    pub fn new(
        state: Arc<dyn ChatState>,
        hub: Hub,
        voice_store: ServerStore,
        key: TokenKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            state,
            hub,
            voice_store,
            key,
            clock,
        }
    }

    /// The storage, for the voice ports.
    pub fn state(&self) -> &Arc<dyn ChatState> {
        &self.state
    }

    fn push(&self, to: &[ConnectionId], event: &ChatEvent) {
        let frame = event_frame(event);
        for c in to {
            // A connection that is gone or dropped is cleaned up by its own socket task.
            let _ = self.hub.send(c, frame.clone());
        }
    }

    async fn push_to_user(&self, user: &UserId, event: &ChatEvent) -> Result<(), ChatError> {
        let conns = self.state.connections_of_user(user).await?;
        self.push(&conns, event);
        Ok(())
    }

    async fn push_to_members(&self, room: &ChatRoomId, event: &ChatEvent) -> Result<(), ChatError> {
        let conns = self.state.connections_of(room).await?;
        self.push(&conns, event);
        Ok(())
    }

    /// The user on `connection`, or [`ChatError::NotIdentified`].
    ///
    /// # Errors
    /// [`ChatError::NotIdentified`], [`ChatError::Unavailable`].
    pub async fn identify(&self, connection: &ConnectionId) -> Result<UserId, ChatError> {
        self.state
            .user_of(connection)
            .await?
            .ok_or(ChatError::NotIdentified)
    }

    async fn name_of(&self, user: &UserId) -> Result<String, ChatError> {
        Ok(self
            .state
            .user_name(user)
            .await?
            .unwrap_or_else(|| user.to_string()))
    }

    /// Checks that `user` is an approved member (or the admin) of `room`.
    async fn approved(&self, room: &ChatRoomId, user: &UserId) -> Result<Membership, ChatError> {
        let m = self
            .state
            .membership(room, user)
            .await?
            .ok_or(ChatError::ChatRoomNotFound)?;
        match (m.is_admin, m.state) {
            (true, _) | (false, MemberState::Approved) => Ok(m),
            (false, MemberState::Pending) => Err(ChatError::NotApproved),
            (false, MemberState::None) => Err(ChatError::NotMember),
        }
    }

    /// `hello`: identifies the connection. A valid `resume_token` keeps the user id of an
    /// earlier connection; otherwise a new user is created. Saying hello again renames.
    ///
    /// # Errors
    /// [`ChatError::BadRequest`]/[`ChatError::TooLarge`] for a bad name.
    pub async fn hello(
        &self,
        connection: &ConnectionId,
        name: &str,
        resume_token: Option<&str>,
    ) -> Result<HelloData, ChatError> {
        let name = clean_name("name", name)?;
        let existing = self.state.user_of(connection).await?;
        let resumed_user = resume_token.and_then(|t| self.key.resume_user(t));
        let resumed = existing.is_none() && resumed_user.is_some();
        let user = match (existing, resumed_user) {
            (Some(u), _) => u,
            (None, Some(u)) => u,
            (None, None) => {
                UserId::parse(uuid::Uuid::new_v4().to_string()).expect("a uuid is a valid user id")
            }
        };
        self.state.bind_connection(connection, &user, &name).await?;
        info!(user_id = %user, resumed, "connection identified");
        Ok(HelloData {
            user_id: user.to_string(),
            name,
            connection_id: connection.to_string(),
            resume_token: self.key.resume_token(&user).expose().to_owned(),
            resumed,
        })
    }

    /// `createRoom`: the caller becomes admin and approved member.
    ///
    /// # Errors
    /// [`ChatError`].
    pub async fn create_room(&self, user: &UserId, name: &str) -> Result<RoomRecord, ChatError> {
        let name = clean_name("room name", name)?;
        let room = RoomRecord {
            id: ChatRoomId::parse(uuid::Uuid::new_v4().to_string())
                .expect("a uuid is a valid room id"),
            name,
            admin: user.clone(),
        };
        self.state.create_room(&room).await?;
        info!(chat_room_id = %room.id, user_id = %user, "chat room created");
        Ok(room)
    }

    /// `listRooms`: every room, with the caller's state in it.
    ///
    /// # Errors
    /// [`ChatError::Unavailable`].
    pub async fn list_rooms(&self, user: &UserId) -> Result<Vec<RoomView>, ChatError> {
        let mut out = Vec::new();
        for room in self.state.rooms().await? {
            let members = self.state.members(&room.id).await?;
            let my_state = members
                .iter()
                .find(|(u, _)| u == user)
                .map_or(MemberState::None, |(_, s)| *s);
            let voice_room_id = if my_state == MemberState::Approved {
                self.voice_store
                    .active_in_chat_room(&room.id)
                    .await
                    .map_err(|e| {
                        warn!(error = %e, "voice store failed");
                        ChatError::Unavailable
                    })?
                    .map(|v| v.id().to_string())
            } else {
                None
            };
            out.push(RoomView {
                room_id: room.id.to_string(),
                name: room.name,
                admin_user_id: room.admin.to_string(),
                member_count: members
                    .iter()
                    .filter(|(_, s)| *s == MemberState::Approved)
                    .count(),
                my_state,
                voice_room_id,
            });
        }
        Ok(out)
    }

    /// `requestJoin`: records a request and tells the admin (once).
    ///
    /// # Errors
    /// [`ChatError`].
    pub async fn request_join(
        &self,
        user: &UserId,
        room: &ChatRoomId,
    ) -> Result<MemberState, ChatError> {
        let record = self
            .state
            .room(room)
            .await?
            .ok_or(ChatError::ChatRoomNotFound)?;
        let (before, after) = self.state.request_join(room, user).await?;
        if before == MemberState::None && after == MemberState::Pending {
            info!(chat_room_id = %room, user_id = %user, "join requested");
            let event = ChatEvent::JoinRequested {
                room_id: room.to_string(),
                user_id: user.to_string(),
                name: self.name_of(user).await?,
            };
            self.push_to_user(&record.admin, &event).await?;
        }
        Ok(after)
    }

    /// `approveJoin` / `denyJoin`: the admin decides; the requester is told, and on approval
    /// every approved member hears `memberJoined`.
    ///
    /// # Errors
    /// [`ChatError`].
    pub async fn decide_join(
        &self,
        admin: &UserId,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<MemberState, ChatError> {
        let record = self
            .state
            .room(room)
            .await?
            .ok_or(ChatError::ChatRoomNotFound)?;
        if &record.admin != admin {
            return Err(ChatError::NotAdmin);
        }
        self.state.decide_join(room, user, approve).await?;
        info!(chat_room_id = %room, user_id = %user, approve, "join request decided");
        let (room_id, user_id) = (room.to_string(), user.to_string());
        if approve {
            self.push_to_user(
                user,
                &ChatEvent::JoinApproved {
                    room_id: room_id.clone(),
                    user_id: user_id.clone(),
                },
            )
            .await?;
            let name = self.name_of(user).await?;
            self.push_to_members(
                room,
                &ChatEvent::MemberJoined {
                    room_id,
                    user_id,
                    name,
                },
            )
            .await?;
            Ok(MemberState::Approved)
        } else {
            self.push_to_user(user, &ChatEvent::JoinDenied { room_id, user_id })
                .await?;
            Ok(MemberState::None)
        }
    }

    /// `listMembers`: approved members only.
    ///
    /// # Errors
    /// [`ChatError`].
    pub async fn list_members(
        &self,
        user: &UserId,
        room: &ChatRoomId,
    ) -> Result<Vec<MemberView>, ChatError> {
        self.approved(room, user).await?;
        let admin = self.state.room(room).await?.map(|r| r.admin);
        let mut out = Vec::new();
        for (u, state) in self.state.members(room).await? {
            out.push(MemberView {
                user_id: u.to_string(),
                name: self.name_of(&u).await?,
                state,
                is_admin: admin.as_ref() == Some(&u),
                online: !self.state.connections_of_user(&u).await?.is_empty(),
            });
        }
        out.sort_by(|a, b| {
            b.is_admin
                .cmp(&a.is_admin)
                .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
                .then_with(|| a.user_id.cmp(&b.user_id))
        });
        Ok(out)
    }

    /// `sendMessage`: approved members only; every approved member hears `message`.
    ///
    /// # Errors
    /// [`ChatError`].
    pub async fn send_message(
        &self,
        user: &UserId,
        room: &ChatRoomId,
        text: &str,
    ) -> Result<ChatMessage, ChatError> {
        self.approved(room, user).await?;
        let text = text.trim();
        if text.is_empty() {
            return Err(ChatError::BadRequest("text must not be empty".into()));
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(ChatError::TooLarge(format!(
                "text must be at most {MAX_MESSAGE_CHARS} characters"
            )));
        }
        let message = ChatMessage {
            room_id: room.to_string(),
            user_id: user.to_string(),
            name: self.name_of(user).await?,
            text: text.to_owned(),
            at: self.clock.now().as_millis(),
        };
        self.state.append_message(room, &message).await?;
        self.push_to_members(room, &ChatEvent::Message(message.clone()))
            .await?;
        Ok(message)
    }

    /// `getMessages`: the last [`MESSAGE_HISTORY`], approved members only.
    ///
    /// # Errors
    /// [`ChatError`].
    pub async fn messages(
        &self,
        user: &UserId,
        room: &ChatRoomId,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        self.approved(room, user).await?;
        Ok(self.state.recent_messages(room, MESSAGE_HISTORY).await?)
    }

    /// The socket closed: the connection is no longer the user's.
    pub async fn disconnect(&self, connection: &ConnectionId) {
        if let Err(e) = self.state.unbind_connection(connection).await {
            warn!(error = %e, "could not remove the connection from chat presence");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_failure_that_will_not_recover_is_not_called_temporary() {
        use voice_domain::ports::PortFailure;
        let full = ChatError::from(ChatStoreError::Unavailable(PortFailure::permanent(
            "database or disk is full",
        )));
        assert_eq!((full.code(), full.retryable()), ("INTERNAL", false));
        assert!(full.to_string().contains("operator"), "{full}");
        assert!(!full.to_string().contains("try again"), "{full}");
        let busy = ChatError::from(ChatStoreError::Unavailable(PortFailure::retryable("busy")));
        assert_eq!((busy.code(), busy.retryable()), ("UNAVAILABLE", true));
    }

    #[tokio::test]
    async fn memory_chat_keeps_the_last_hundred_messages_in_order() {
        let chat = MemoryChat::new();
        let room = ChatRoomId::parse("r").unwrap();
        let admin = UserId::parse("a").unwrap();
        chat.create_room(&RoomRecord {
            id: room.clone(),
            name: "R".into(),
            admin: admin.clone(),
        })
        .await
        .unwrap();
        for i in 0..150 {
            let m = ChatMessage {
                room_id: "r".into(),
                user_id: "a".into(),
                name: "A".into(),
                text: format!("{i}"),
                at: i,
            };
            chat.append_message(&room, &m).await.unwrap();
        }
        let got = chat.recent_messages(&room, MESSAGE_HISTORY).await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[0].text, "50");
        assert_eq!(got[99].text, "149");
        let dup = RoomRecord {
            id: ChatRoomId::parse("r2").unwrap(),
            name: "r".into(),
            admin,
        };
        assert_eq!(
            chat.create_room(&dup).await,
            Err(ChatStoreError::RoomExists)
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(clean_name("name", "  Ann ").unwrap(), "Ann");
        assert_eq!(clean_name("name", " ").unwrap_err().code(), "BAD_REQUEST");
        assert_eq!(
            clean_name("name", &"x".repeat(65)).unwrap_err().code(),
            "TOO_LARGE"
        );
        assert_eq!(
            clean_name("name", "a\u{7}").unwrap_err().code(),
            "BAD_REQUEST"
        );
    }
}
