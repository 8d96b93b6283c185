//! The traits through which the chat rules reach the world. Adapters implement them directly
//! (memory and SQLite in this repository), and every [`ChatStore`] runs the same contract
//! suite (`contract`, feature `contract-tests`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use voice_domain::ports::{ChatDirectory, Clock, MemberState, PortFailure, VoiceRoomStore};
use voice_domain::{ChatRoomId, ConnectionId, UserId, VoiceRoomId};

use crate::events::ChatEvent;
use crate::model::{ChatMessage, RoomRecord};
use crate::page::{MemberEntry, Page, RoomSummary, StoredMessage};

/// Refusals and failures of a [`ChatStore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatStoreError {
    /// A chat room with that id or that name (compared case-insensitively) exists.
    #[error("a chat room with that name exists")]
    RoomExists,
    /// No chat room with that id.
    #[error("no such chat room")]
    NoSuchRoom,
    /// The user has no pending request to approve or deny.
    #[error("no pending join request")]
    NoPendingRequest,
    /// The user is banned from the room and may not ask to join.
    #[error("banned from this chat room")]
    Banned,
    /// The write would break a quota; nothing was stored. The store checks it in the same
    /// atomic step as the write, so two racing requests cannot both pass the last free place.
    #[error("quota exceeded: {0:?}")]
    QuotaExceeded(Quota),
    /// A page was asked from a position this store never gave out (a damaged cursor).
    #[error("not a position of this list")]
    BadCursor,
    /// The storage could not answer (or is full); the caller may retry later.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// The quota a store refused a write under ([`ChatStoreError::QuotaExceeded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// The user already admins as many rooms as allowed.
    RoomsPerUser,
    /// The room already has as many join requests waiting as allowed.
    PendingPerRoom,
    /// The user already has as many join requests waiting as allowed.
    PendingPerUser,
    /// The room already has as many bans as allowed.
    BansPerRoom,
}

/// The limits a new join request must keep, checked by the store atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinQuotas {
    /// Join requests that may wait in one room.
    pub per_room: usize,
    /// Join requests one user may have waiting across rooms.
    pub per_user: usize,
}

impl JoinQuotas {
    /// No limits (tests and callers that set up state).
    pub const UNLIMITED: Self = Self {
        per_room: usize::MAX,
        per_user: usize::MAX,
    };
}

/// What one user holds in the store, counted for the quotas (`ChatLimits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserUsage {
    /// Rooms whose admin the user is.
    pub rooms_admin: usize,
    /// The user's join requests still pending, across all rooms.
    pub pending_requests: usize,
}

/// Chat storage: users on connections, chat rooms, memberships, messages. It is also the voice
/// domain's [`ChatDirectory`], so voice sees exactly the chat's users and approved members.
#[async_trait]
pub trait ChatStore: ChatDirectory {
    /// `user` (display name `name`) is now on `connection`; the name is the user's current one.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn bind_connection(
        &self,
        connection: &ConnectionId,
        user: &UserId,
        name: &str,
    ) -> Result<(), ChatStoreError>;

    /// `connection` closed: the user is offline there (a no-op for an unknown connection).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn unbind_connection(&self, connection: &ConnectionId) -> Result<(), ChatStoreError>;

    /// A user's display name (`None` for a user never seen).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn user_name(&self, user: &UserId) -> Result<Option<String>, ChatStoreError>;

    /// A user's open connections (empty when offline).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn connections_of_user(&self, user: &UserId)
        -> Result<Vec<ConnectionId>, ChatStoreError>;

    /// Every open connection of an identified user (who hears that a room was created).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn identified_connections(&self) -> Result<Vec<ConnectionId>, ChatStoreError>;

    /// The rooms where `user` is the admin or an approved member (whose members see the user's
    /// presence).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn rooms_of_member(&self, user: &UserId) -> Result<Vec<ChatRoomId>, ChatStoreError>;

    /// Creates a room with its admin as an approved member, unless a room with the same id or
    /// the same name (case-insensitively) exists, or the admin already admins
    /// `max_admin_rooms` rooms. Atomic: two racing creators of one name get one room and one
    /// [`ChatStoreError::RoomExists`]; two racing creations by one user never take them past
    /// the quota (the count is checked in the same step as the insert).
    ///
    /// # Errors
    /// [`ChatStoreError::RoomExists`], [`ChatStoreError::QuotaExceeded`]
    /// ([`Quota::RoomsPerUser`]), [`ChatStoreError::Unavailable`].
    async fn create_room(
        &self,
        room: &RoomRecord,
        max_admin_rooms: usize,
    ) -> Result<(), ChatStoreError>;

    /// How much `user` holds now, for the quotas: rooms whose admin they are, and join
    /// requests of theirs still pending across all rooms.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn usage_of(&self, user: &UserId) -> Result<UserUsage, ChatStoreError>;

    /// The user's resume-token generation (0 for a user never signed out everywhere).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError>;

    /// Raises the user's resume-token generation by one (revoking every token issued before)
    /// and returns the new one.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn bump_token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError>;

    /// Every room, in a stable order.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError>;

    /// One room (`None` if there is no such room).
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError>;

    /// Members (approved) and requesters (pending) of a room; empty for an unknown room.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn members(
        &self,
        room: &ChatRoomId,
    ) -> Result<Vec<(UserId, MemberState)>, ChatStoreError>;

    /// Records a join request; returns the state before and after (approved stays approved,
    /// pending stays pending). A banned user is refused, atomically with the ban. A *new*
    /// request is refused when the room already has `quotas.per_room` waiting or the user
    /// `quotas.per_user`, checked in the same atomic step as the insert (a repeat or an
    /// approved member is never refused for a quota).
    ///
    /// # Errors
    /// [`ChatStoreError::NoSuchRoom`], [`ChatStoreError::Banned`],
    /// [`ChatStoreError::QuotaExceeded`] ([`Quota::PendingPerRoom`] is checked first, then
    /// [`Quota::PendingPerUser`]), [`ChatStoreError::Unavailable`].
    async fn request_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        quotas: JoinQuotas,
    ) -> Result<(MemberState, MemberState), ChatStoreError>;

    /// Approves a pending request, or denies it (removing it, so the user may ask again).
    ///
    /// # Errors
    /// [`ChatStoreError::NoSuchRoom`], [`ChatStoreError::NoPendingRequest`] (nothing pending
    /// for that user), [`ChatStoreError::Unavailable`].
    async fn decide_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<(), ChatStoreError>;

    /// Removes `user`'s membership or request in `room` (a no-op if they have none) and, with
    /// `ban`, records in the same step that they may not ask again. Returns the state before.
    /// A *new* ban is refused when the room already has `max_bans` bans, counted in the same
    /// atomic step as the insert (so two racing bans cannot both take the last place), and
    /// then nothing changes, the membership included; banning a user already banned, and a
    /// removal without `ban`, are never refused for the quota.
    ///
    /// # Errors
    /// [`ChatStoreError::NoSuchRoom`], [`ChatStoreError::QuotaExceeded`]
    /// ([`Quota::BansPerRoom`]), [`ChatStoreError::Unavailable`].
    async fn remove_member(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        ban: bool,
        max_bans: usize,
    ) -> Result<MemberState, ChatStoreError>;

    /// Lifts a ban; returns whether there was one.
    ///
    /// # Errors
    /// [`ChatStoreError::NoSuchRoom`], [`ChatStoreError::Unavailable`].
    async fn unban(&self, room: &ChatRoomId, user: &UserId) -> Result<bool, ChatStoreError>;

    /// Appends a message. The store keeps at least the last
    /// [`MESSAGE_HISTORY`](crate::MESSAGE_HISTORY) per room and may drop older ones.
    ///
    /// # Errors
    /// [`ChatStoreError::NoSuchRoom`], [`ChatStoreError::Unavailable`].
    async fn append_message(
        &self,
        room: &ChatRoomId,
        message: &ChatMessage,
    ) -> Result<(), ChatStoreError>;

    /// The last `limit` messages of a room older than `before` (a sequence number this store
    /// gave out; `None`: the newest), oldest first (empty for an unknown room). One query.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn message_page(
        &self,
        room: &ChatRoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ChatStoreError>;

    /// At most `limit` rooms after the position `after` (a [`Page::next`] this store gave
    /// out; `None`: the first page), in a stable order, each with its approved-member count
    /// and `viewer`'s state in it: one query per page, never one per room. A page may be
    /// shorter than `limit` (even empty) while `next` says there is more.
    ///
    /// # Errors
    /// [`ChatStoreError::BadCursor`] for a position this store cannot have given out,
    /// [`ChatStoreError::Unavailable`].
    async fn room_page(
        &self,
        viewer: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoomSummary>, ChatStoreError>;

    /// At most `limit` members and requesters of `room` with user ids greater than `after`,
    /// by user id, with their names and whether they are online: one query per page (plus at
    /// most one batched read of the page's users where names live apart), never one per
    /// member. `next` is the last user id of the page when there may be more. Empty for an
    /// unknown room.
    ///
    /// # Errors
    /// [`ChatStoreError::Unavailable`].
    async fn member_page(
        &self,
        room: &ChatRoomId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Page<MemberEntry>, ChatStoreError>;
}

/// Delivers chat events to connections. Best effort by contract: a connection that is gone
/// is cleaned up by its own transport, so delivery failures are the adapter's to log, never
/// the rule's to handle.
#[async_trait]
pub trait ChatEvents: Send + Sync + 'static {
    /// Queues `event` for each connection in `to`.
    async fn push(&self, to: &[ConnectionId], event: &ChatEvent);
}

/// What a resume token says: whose it is, when it was issued (for the sliding expiry) and the
/// user's token generation at the time (a `signOutEverywhere` raises it, revoking older ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaims {
    /// The user the token resumes.
    pub user: UserId,
    /// When it was issued, in ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// The user's token generation when it was issued.
    pub generation: u64,
}

/// Resume tokens: what lets a reconnecting or reloaded client stay the same user without a
/// password. Signing and checking are the adapter's (a keyed MAC); whether a genuine token is
/// still good (expiry, revocation) is the rule's.
pub trait SessionTokens: Send + Sync + 'static {
    /// A token that [`SessionTokens::verify`] maps back to `claims`.
    fn issue(&self, claims: &ResumeClaims) -> String;
    /// The claims of a genuine token, or `None` when it is malformed or forged.
    fn verify(&self, token: &str) -> Option<ResumeClaims>;
}

/// Whether a `hello` may create a new user. Every anonymous connection that says `hello` without
/// a usable resume token becomes a user row kept forever, so a script opening throw-away
/// connections can create users (and join requests, one per user) without end. Where the
/// connection comes from (its address, say) is the adapter's to know; that a new identity
/// needs the gate's consent, and nothing is stored when it refuses, is the rule's.
#[async_trait]
pub trait SignUpGate: Send + Sync + 'static {
    /// Consumes one new-user allowance of `connection`'s origin: `false` when none is left.
    /// Async because a deployment without memory between requests (the Lambda) keeps the
    /// count in its database.
    ///
    /// # Errors
    /// [`PortFailure`] when the count cannot be read or written (nothing is stored then).
    async fn admit(&self, connection: &ConnectionId) -> Result<bool, PortFailure>;
}

/// The gate of a deployment that does not limit sign-ups (a library embedding that limits
/// them itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

#[async_trait]
impl SignUpGate for AdmitAll {
    async fn admit(&self, _connection: &ConnectionId) -> Result<bool, PortFailure> {
        Ok(true)
    }
}

/// New ids for users and chat rooms (random in production, sequential in tests).
pub trait ChatIds: Send + Sync + 'static {
    /// A new user id, never used before.
    fn user_id(&self) -> UserId;
    /// A new chat room id, never used before.
    fn chat_room_id(&self) -> ChatRoomId;
}

/// The one thing chat needs from voice: which voice room is active in a chat room, for
/// `listRooms`. Every [`VoiceRoomStore`] answers it.
#[async_trait]
pub trait ActiveVoiceRooms: Send + Sync + 'static {
    /// The active voice room of `chat`, if any.
    ///
    /// # Errors
    /// [`PortFailure`] when the store cannot answer.
    async fn active_voice_room(
        &self,
        chat: &ChatRoomId,
    ) -> Result<Option<VoiceRoomId>, PortFailure>;

    /// The active voice rooms of `chats` in one lookup (`listRooms` asks once per page; see
    /// [`VoiceRoomStore::active_ids_in_chat_rooms`]). Chat rooms without one are absent.
    ///
    /// # Errors
    /// [`PortFailure`] when the store cannot answer for every chat room asked about.
    async fn active_voice_rooms(
        &self,
        chats: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, PortFailure>;
}

fn voice_failure(e: voice_domain::ports::StoreError) -> PortFailure {
    match e {
        voice_domain::ports::StoreError::Unavailable(f) => f,
        other => PortFailure::permanent(other.to_string()),
    }
}

#[async_trait]
impl<T: VoiceRoomStore> ActiveVoiceRooms for T {
    async fn active_voice_room(
        &self,
        chat: &ChatRoomId,
    ) -> Result<Option<VoiceRoomId>, PortFailure> {
        self.active_in_chat_room(chat)
            .await
            .map(|r| r.map(|r| r.id().clone()))
            .map_err(voice_failure)
    }

    async fn active_voice_rooms(
        &self,
        chats: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, PortFailure> {
        self.active_ids_in_chat_rooms(chats)
            .await
            .map_err(voice_failure)
    }
}

/// The adapters a [`ChatService`](crate::ChatService) runs on, as shared trait objects: the
/// service is built once per process and cloned into every connection's task.
#[derive(Clone)]
pub struct ChatAdapters {
    /// Users, rooms, memberships, messages.
    pub store: Arc<dyn ChatStore>,
    /// Event delivery.
    pub events: Arc<dyn ChatEvents>,
    /// Resume tokens.
    pub tokens: Arc<dyn SessionTokens>,
    /// Ids for new users and rooms.
    pub ids: Arc<dyn ChatIds>,
    /// The active voice room per chat room.
    pub voice: Arc<dyn ActiveVoiceRooms>,
    /// Time, for message timestamps.
    pub clock: Arc<dyn Clock>,
}

/// The voice domain's [`ChatDirectory`] over a shared [`ChatStore`]: what an entrypoint hands
/// voice, so voice reads exactly the chat's users and approved members. A named type (not a
/// trait object) because the voice ports are associated types.
#[derive(Clone)]
pub struct StoreDirectory(pub Arc<dyn ChatStore>);

#[async_trait]
impl ChatDirectory for StoreDirectory {
    async fn user_of(
        &self,
        connection: &ConnectionId,
    ) -> Result<Option<UserId>, voice_domain::ports::DirectoryError> {
        self.0.user_of(connection).await
    }

    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<voice_domain::ports::Membership>, voice_domain::ports::DirectoryError> {
        self.0.membership(chat_room, user).await
    }

    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, voice_domain::ports::DirectoryError> {
        self.0.connections_of(chat_room).await
    }
}
