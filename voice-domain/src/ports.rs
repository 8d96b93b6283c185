//! Ports: what the domain needs from the outside world, as async traits over domain types.
//!
//! Each binary picks adapters at start-up (in memory for the self-hosted server and tests,
//! DynamoDB/KVS/STS/API Gateway on AWS). Every method documents the errors it may return; an
//! adapter must map its own failures onto exactly those, so that the service can decide what is
//! retryable, what means "someone else won the race", and what is the caller's fault.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::failure::PortFailure;
use crate::ids::{ChannelName, ChatRoomId, ClientId, ConnectionId, UserId, VoiceRoomId};
use crate::pool::ChannelPool;
use crate::room::{
    ChannelGrant, ChannelRole, CorruptRoom, SignalingChannel, VoiceEvent, VoiceRoom,
};
use crate::time::Timestamp;

/// Errors of the [`VoiceRoomStore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `create_if_none_active` found an active room for the chat room.
    #[error("chat room already has an active voice room {existing}")]
    AlreadyActive {
        /// The room that is active.
        existing: VoiceRoomId,
    },
    /// `update` found a stored version other than the one the caller read.
    #[error("the voice room was changed concurrently")]
    VersionConflict,
    /// `update` found no such room.
    #[error("no such voice room")]
    NotFound,
    /// A stored room could not be rebuilt.
    #[error(transparent)]
    Corrupt(#[from] CorruptRoom),
    /// The store could not answer.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// Where voice rooms live.
///
/// Architecture invariant: at most one active room per chat room, enforced here atomically (not
/// by a read-then-write in the service), because two members may click "Start" at the same time.
#[async_trait]
pub trait VoiceRoomStore: Send + Sync + 'static {
    /// Stores a new room unless its chat room already has an active one, atomically.
    ///
    /// # Errors
    /// [`StoreError::AlreadyActive`] with the existing room's id; [`StoreError::Unavailable`].
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError>;

    /// Reads a room, active or ended, as last written (a strongly consistent read: a refresh
    /// with a channel pool re-reads the room to prove that nothing changed while it issued
    /// credentials, and a stale read would hide a peer's leave).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`]; [`StoreError::Unavailable`].
    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError>;

    /// The active room of a chat room, if any.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`]; [`StoreError::Unavailable`].
    async fn active_in_chat_room(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError>;

    /// The ids of the active rooms of several chat rooms, in one lookup: `listRooms` asks once
    /// per page (up to 100 chat rooms) rather than once per listed room, so a user paging
    /// through every room in a loop costs the store one query per page. Chat rooms without an
    /// active room are absent from the map; an empty slice is answered without asking the
    /// backend. Only ids: the caller shows which room is live, not its participants.
    ///
    /// The default asks [`active_in_chat_room`](Self::active_in_chat_room) once per chat room;
    /// it is there for test doubles. Every production store overrides it with one query (memory
    /// one lock, SQLite one `SELECT … IN (…)`, DynamoDB one `BatchGetItem` per 100 keys), and a
    /// wrapper store must forward it.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a stored id that does not parse;
    /// [`StoreError::Unavailable`], also when the backend still leaves keys unanswered after
    /// its retries (DynamoDB's unprocessed keys under throttling): an answer is never partial.
    async fn active_ids_in_chat_rooms(
        &self,
        chat_rooms: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        let mut out = HashMap::new();
        for chat in chat_rooms {
            if let Some(room) = self.active_in_chat_room(chat).await? {
                out.insert(chat.clone(), room.id().clone());
            }
        }
        Ok(out)
    }

    /// Active rooms with a participant on `connection` (usually zero or one).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`]; [`StoreError::Unavailable`].
    async fn active_with_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<VoiceRoom>, StoreError>;

    /// Compare-and-set: replaces the stored room if its version is `room.version() - 1` (the
    /// caller bumped it with [`VoiceRoom::bump_version`]). When the room has ended, the chat
    /// room is free for a new active room from then on.
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`]; [`StoreError::NotFound`]; [`StoreError::Unavailable`].
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError>;

    /// Every active room (for the sweep).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`]; [`StoreError::Unavailable`].
    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError>;
}

/// Where a user stands in a chat room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MemberState {
    /// Approved by the admin (or the admin itself).
    Approved,
    /// Asked to join, not yet approved.
    Pending,
    /// Neither.
    None,
}

/// A user's membership in a chat room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Approved, pending or none.
    pub state: MemberState,
    /// Whether the user is the chat room's admin (its creator). An admin is always approved.
    pub is_admin: bool,
}

/// Errors of the [`ChatDirectory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The directory could not answer.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// The chat app's view of users, rooms and connections. The chat app owns this data; voice only
/// reads it.
#[async_trait]
pub trait ChatDirectory: Send + Sync + 'static {
    /// The user a connection belongs to; `None` for an unknown (or closed) connection.
    ///
    /// # Errors
    /// [`DirectoryError::Unavailable`].
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError>;

    /// The user's membership in a chat room; `None` if the chat room does not exist.
    ///
    /// # Errors
    /// [`DirectoryError::Unavailable`].
    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError>;

    /// Open connections of the chat room's approved members (who hear voice events).
    ///
    /// # Errors
    /// [`DirectoryError::Unavailable`].
    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError>;
}

/// Tags every channel carries, so that the sweep can tell whose it is and IAM can be scoped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTags {
    /// The chat room.
    pub chat_room: ChatRoomId,
    /// The voice room.
    pub voice_room: VoiceRoomId,
    /// The participant who is master of it.
    pub owner: UserId,
}

/// A channel found by [`SignalingChannels::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedChannel {
    /// The channel.
    pub channel: SignalingChannel,
    /// Our tags, if it has them (a `voice-*` channel someone made by hand may not).
    pub tags: Option<ChannelTags>,
    /// When it was created; the sweep leaves young channels alone (a join may be in flight).
    pub created_at: Timestamp,
}

/// A STUN or TURN server for a peer connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password, if any (short-lived; never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
}

/// Where a client connects for one (channel, role), and the ICE servers to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEndpoints {
    /// The WebSocket signaling endpoint.
    pub wss: String,
    /// The HTTPS endpoint (KVS: for `GetIceServerConfig`); `None` on the self-hosted relay.
    pub https: Option<String>,
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
}

/// Errors of [`SignalingChannels`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The channel does not exist (`endpoints` only; `delete` treats it as done).
    #[error("signaling channel not found")]
    NotFound,
    /// The account's channel quota is reached; the operator must raise it or sweep orphans.
    #[error("signaling channel limit reached")]
    LimitExceeded,
    /// The signaling service could not answer.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// Signaling channels: one per participant (the mesh).
#[async_trait]
pub trait SignalingChannels: Send + Sync + 'static {
    /// Creates a channel with this name and tags.
    ///
    /// # Errors
    /// [`ChannelError::LimitExceeded`]; [`ChannelError::Unavailable`].
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError>;

    /// Deletes a channel. Deleting a channel that is already gone succeeds (idempotent), so that
    /// clean-up can be retried safely.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`].
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError>;

    /// Endpoints and ICE servers for connecting to `channel` as `role` (client `client_id`).
    ///
    /// # Errors
    /// [`ChannelError::NotFound`]; [`ChannelError::Unavailable`].
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError>;

    /// Like [`Self::endpoints`], but the ICE servers may be only those that cost no call (STUN):
    /// a joiner's client uses its *own* channel's TURN servers for every link (docs/deploy-aws.md,
    /// "TURN allocations"), so a join asks for TURN on its own channel only, and the KVS adapter
    /// skips one `GetIceServerConfig` round trip per peer (KVS allows 5 per second per channel;
    /// ten joiners asking on the first one's channel are throttled). Defaults to `endpoints`,
    /// for adapters whose ICE servers are free.
    ///
    /// # Errors
    /// [`ChannelError::NotFound`]; [`ChannelError::Unavailable`].
    async fn signaling_endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        self.endpoints(channel, role, client_id).await
    }

    /// Every `voice-*` channel, for the orphan sweep.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`].
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError>;
}

/// A secret string: serialised as is (the client needs it), but never shown by `Debug`, so that
/// it cannot leak into logs through `{:?}` or `tracing` fields.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// What a participant's client authenticates with to reach its signaling channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Temporary AWS credentials (STS), scoped by a session policy.
    AwsSession {
        /// Access key id (not secret on its own).
        access_key_id: String,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token.
        session_token: Secret,
        /// The region the channels live in.
        region: String,
    },
    /// A signed bearer token for the self-hosted relay.
    Token {
        /// The token.
        token: Secret,
    },
}

/// What a participant may do, for the credential issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRequest {
    /// The room.
    pub voice_room: VoiceRoomId,
    /// The participant.
    pub user: UserId,
    /// Its connection.
    pub connection: ConnectionId,
    /// Its KVS client id.
    pub client_id: ClientId,
    /// Exactly the (channel, role) pairs to allow: master on its own, viewer on earlier peers'.
    pub grants: Vec<ChannelGrant>,
    /// How long they should last (at most one hour).
    pub ttl: Duration,
}

/// Credentials and when they stop working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// The credentials.
    pub credentials: Credentials,
    /// Expiry; clients refresh before it.
    pub expires_at: Timestamp,
}

/// Errors of the [`CredentialIssuer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The issuer could not answer.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// Issues credentials scoped to exactly one participant's (channel, role) pairs.
#[async_trait]
pub trait CredentialIssuer: Send + Sync + 'static {
    /// Issues credentials allowing exactly `request.grants`, for at most `request.ttl`.
    ///
    /// # Errors
    /// [`CredentialError::Unavailable`].
    async fn issue(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, CredentialError>;
}

/// Errors of the [`Notifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The connection no longer exists (API Gateway `GoneException`, a closed socket). The
    /// service treats it as a disconnect.
    #[error("connection is gone")]
    Gone,
    /// The event could not be delivered this time.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// Pushes events to connections.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Sends one event to one connection.
    ///
    /// # Errors
    /// [`NotifyError::Gone`]; [`NotifyError::Unavailable`].
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError>;
}

/// The current time. A port so that tests (and the proptest model) control it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// Fresh unique ids. A port so that tests get predictable ones.
pub trait IdGenerator: Send + Sync + 'static {
    /// A new voice room id.
    fn voice_room_id(&self) -> VoiceRoomId;
    /// A new `voice-{unique}` channel name.
    fn channel_name(&self) -> ChannelName;
    /// A new recording id. Unique as long as [`IdGenerator::voice_room_id`] is (it is derived
    /// from one), so every existing generator has it.
    fn recording_id(&self) -> crate::recording::RecordingId {
        crate::recording::RecordingId::from_unique(self.voice_room_id().as_str())
    }
}

/// The set of adapters a [`VoiceService`](crate::service::VoiceService) runs on. One type per
/// deployment names its eight adapters once, instead of eight generic parameters everywhere.
pub trait Ports: Send + Sync + 'static {
    /// Voice-room storage.
    type Store: VoiceRoomStore;
    /// The chat app's users, rooms and connections.
    type Directory: ChatDirectory;
    /// Signaling channels.
    type Channels: SignalingChannels;
    /// Credential issuing.
    type Credentials: CredentialIssuer;
    /// Event delivery.
    type Notifier: Notifier;
    /// Time.
    type Clock: Clock;
    /// Id generation.
    type Ids: IdGenerator;
    /// Released signaling channels kept for reuse ([`NoPool`](crate::pool::NoPool) where
    /// channels are free and instant, as on the self-hosted relay).
    type Pool: ChannelPool;
}

/// The adapter instances for one [`Ports`] set.
pub struct Adapters<P: Ports> {
    /// Voice-room storage.
    pub store: P::Store,
    /// The chat app's directory.
    pub directory: P::Directory,
    /// Signaling channels.
    pub channels: P::Channels,
    /// Credential issuing.
    pub credentials: P::Credentials,
    /// Event delivery.
    pub notifier: P::Notifier,
    /// Time.
    pub clock: P::Clock,
    /// Id generation.
    pub ids: P::Ids,
    /// The channel pool.
    pub pool: P::Pool,
}
