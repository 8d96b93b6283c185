//! The `VoiceRoom` aggregate: its state, its pure transitions and the mesh connection plan.
//!
//! Every transition either returns the events it caused or a typed refusal, and never leaves the
//! room half-changed: the checks run before the first mutation. Persisting the new state (with
//! the version bump for optimistic concurrency) is the service's job, not the room's.
//!
//! # Why a mesh
//! A Kinesis Video Streams signaling channel is a star: one master, viewers that may only talk
//! to the master. For group audio every participant is master of its own channel, and a joiner
//! connects as viewer to the channel of every participant who joined before it. Over the whole
//! room this yields exactly one peer connection per pair. The self-hosted relay follows the same
//! plan so that one web client speaks to both deployments.

use serde::{Deserialize, Serialize};

use crate::ids::{
    ChannelArn, ChannelName, ChatRoomId, ClientId, ConnectionId, UserId, VoiceRoomId,
};
use crate::recording::{Recording, RecordingId, RecordingStop, RecordingStopReason};
use crate::screen::{ScreenShare, ScreenSharePolicy, ScreenShareStopReason};
use crate::time::Timestamp;

/// Upper bound on room capacity. A KVS channel takes at most 10 viewers, and in a full mesh each
/// participant's channel has one viewer per later joiner, so 10 participants is the hard limit.
pub const MAX_CAPACITY: u8 = 10;

/// How many participants a room may hold: 1..=[`MAX_CAPACITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Capacity(u8);

impl Capacity {
    /// Validates a capacity.
    ///
    /// # Errors
    /// [`InvalidCapacity`] when `n` is 0 or above [`MAX_CAPACITY`].
    pub fn new(n: u8) -> Result<Self, InvalidCapacity> {
        if (1..=MAX_CAPACITY).contains(&n) {
            Ok(Self(n))
        } else {
            Err(InvalidCapacity(n))
        }
    }

    /// The number of participants allowed.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Self(MAX_CAPACITY)
    }
}

impl TryFrom<u8> for Capacity {
    type Error = InvalidCapacity;
    fn try_from(n: u8) -> Result<Self, InvalidCapacity> {
        Self::new(n)
    }
}

impl From<Capacity> for u8 {
    fn from(c: Capacity) -> u8 {
        c.0
    }
}

/// A capacity outside 1..=10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("room capacity must be between 1 and {MAX_CAPACITY} (a KVS channel takes at most 10 viewers), got {0}")]
pub struct InvalidCapacity(pub u8);

/// A signaling channel as the domain knows it: the name we chose and the reference the
/// signaling adapter gave back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignalingChannel {
    /// `voice-{uuid}`.
    pub name: ChannelName,
    /// The adapter's reference (an ARN on AWS).
    pub arn: ChannelArn,
}

/// The role a client takes on one signaling channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChannelRole {
    /// Owner of the channel; answers offers from viewers.
    Master,
    /// Connects to the channel's master by sending it an offer.
    Viewer,
}

/// One member of a voice room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Who.
    pub user: UserId,
    /// The connection that joined; events and disconnects are tracked per connection.
    pub connection: ConnectionId,
    /// The participant's own channel, on which it is master.
    pub channel: SignalingChannel,
    /// When it joined. Join order is the order of [`VoiceRoom::participants`].
    pub joined_at: Timestamp,
    /// Whether it has muted its microphone (advisory state shown to others).
    pub muted: bool,
    /// Since when its connection has been gone (`None` while connected). A reconnecting
    /// participant keeps its place, role and mute state for the service's reconnect grace, so
    /// that a network blip or a server restart is not a leave; the same user joining from a new
    /// connection resumes it, and the sweep removes it once the grace has passed. Absent in rooms
    /// stored before resume existed, which read as connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnecting_since: Option<Timestamp>,
    /// When its connection last proved alive to the service (see [`VoiceRoom::touch`]); `None`
    /// until the first proof, when [`Participant::last_heard`] falls back on the join. Only a
    /// deployment that cannot see its connections' liveness (AWS: API Gateway does not ping
    /// clients) records it, and only there do its keepalives and its sweep apply
    /// [`VoiceRoom::mark_silent_reconnecting`] (see [`VoiceRoom::apply_liveness`]).
    /// Absent in rooms stored before liveness existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

impl Participant {
    /// Whether its connection is gone and it waits, within the grace, to be resumed.
    pub fn is_reconnecting(&self) -> bool {
        self.reconnecting_since.is_some()
    }

    /// The last time its connection is known to have been alive: its last recorded keepalive,
    /// or its join (a resume sets [`Participant::last_seen`]) if that is later.
    pub fn last_heard(&self) -> Timestamp {
        self.last_seen
            .map_or(self.joined_at, |t| t.max(self.joined_at))
    }
}

/// The least time between two recorded keepalives of one participant: a client that sends
/// keepalives faster than this costs one store write per interval, not one per request. Well
/// under the web client's in-voice keepalive period (5 s), so that each of its keepalives is
/// recorded even when two arrive a little closer than 5 s apart (network jitter): the recorded
/// time then lags the real one by at most this, never by a whole period.
pub const TOUCH_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a room ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EndReason {
    /// The room's master ended it.
    EndedByMaster {
        /// The master.
        by: UserId,
    },
    /// The chat room's admin ended it.
    EndedByAdmin {
        /// The admin.
        by: UserId,
    },
    /// The last participant left or disconnected.
    LastParticipantLeft,
    /// The sweep found no live connection in it.
    Abandoned,
}

/// Whether a room is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RoomStatus {
    /// Running; members may join.
    Active,
    /// Over; kept for history (and DynamoDB TTL) but nobody may join.
    Ended {
        /// When.
        at: Timestamp,
        /// Why.
        reason: EndReason,
    },
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeaveReason {
    /// It asked to.
    Left,
    /// Its connection went away.
    Disconnected,
    /// The room ended.
    RoomEnded,
}

/// Something that happened to a voice room, to be told to the chat room's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum VoiceEvent {
    /// A voice room was started in a chat room.
    #[serde(rename_all = "camelCase")]
    VoiceStarted {
        /// The new room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who started it (and is its master).
        master: UserId,
    },
    /// Someone joined.
    #[serde(rename_all = "camelCase")]
    ParticipantJoined {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who.
        user: UserId,
        /// Their KVS client id (from their connection): on AWS the joiner's offers arrive at
        /// each earlier participant's channel under this id, and a page that knows it from the
        /// event need not ask the room who is calling (one Lambda call per earlier participant).
        /// Absent for a connection id too long to encode as one (the page then asks).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<ClientId>,
        /// Their current mute state.
        muted: bool,
    },
    /// Someone left.
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who.
        user: UserId,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone muted or unmuted.
    #[serde(rename_all = "camelCase")]
    MuteChanged {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who.
        user: UserId,
        /// The new state.
        muted: bool,
        /// Whether a moderator holds it muted (only a moderator can lift it).
        server_muted: bool,
    },
    /// A participant's connection went away; it keeps its place for the reconnect grace and
    /// peers should show it as reconnecting (its media links are down) rather than gone.
    #[serde(rename_all = "camelCase")]
    ParticipantReconnecting {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who.
        user: UserId,
    },
    /// A participant came back on a new connection (same place, role and mute state); peers
    /// rebuild their links with it.
    #[serde(rename_all = "camelCase")]
    ParticipantResumed {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who.
        user: UserId,
        /// Their KVS client id now (a resume from a new connection changes it), as in
        /// [`VoiceEvent::ParticipantJoined`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<ClientId>,
    },
    /// The master left and the earliest remaining participant took over.
    #[serde(rename_all = "camelCase")]
    MasterChanged {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// The new master.
        master: UserId,
    },
    /// The room ended.
    #[serde(rename_all = "camelCase")]
    VoiceEnded {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Why.
        reason: EndReason,
    },
    /// The room is being recorded from now on: every participant's client shows it, and a
    /// joiner is told before its audio is captured.
    #[serde(rename_all = "camelCase")]
    RecordingStarted {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// The recording.
        recording_id: RecordingId,
        /// Who records it.
        by: UserId,
    },
    /// The recording stopped (what was uploaded is kept as a finished file).
    #[serde(rename_all = "camelCase")]
    RecordingStopped {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// The recording.
        recording_id: RecordingId,
        /// Why.
        reason: RecordingStopReason,
    },
    /// A participant shares its screen from now on: receivers show its screen track large
    /// (and no other participant's).
    #[serde(rename_all = "camelCase")]
    ScreenShareStarted {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// The sharer.
        user: UserId,
    },
    /// The screen share stopped: receivers drop the large view.
    #[serde(rename_all = "camelCase")]
    ScreenShareStopped {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// Who was sharing.
        user: UserId,
        /// Why.
        reason: ScreenShareStopReason,
    },
    /// The master or the chat room's admin changed who may share a screen.
    #[serde(rename_all = "camelCase")]
    ScreenSharePolicyChanged {
        /// The room.
        voice_room_id: VoiceRoomId,
        /// Its chat room.
        chat_room_id: ChatRoomId,
        /// The new policy.
        policy: ScreenSharePolicy,
        /// Who changed it.
        by: UserId,
    },
}

impl VoiceEvent {
    /// The chat room whose connections should hear of this event.
    pub fn chat_room_id(&self) -> &ChatRoomId {
        match self {
            VoiceEvent::VoiceStarted { chat_room_id, .. }
            | VoiceEvent::ParticipantJoined { chat_room_id, .. }
            | VoiceEvent::ParticipantLeft { chat_room_id, .. }
            | VoiceEvent::MuteChanged { chat_room_id, .. }
            | VoiceEvent::ParticipantReconnecting { chat_room_id, .. }
            | VoiceEvent::ParticipantResumed { chat_room_id, .. }
            | VoiceEvent::MasterChanged { chat_room_id, .. }
            | VoiceEvent::VoiceEnded { chat_room_id, .. }
            | VoiceEvent::RecordingStarted { chat_room_id, .. }
            | VoiceEvent::RecordingStopped { chat_room_id, .. }
            | VoiceEvent::ScreenShareStarted { chat_room_id, .. }
            | VoiceEvent::ScreenShareStopped { chat_room_id, .. }
            | VoiceEvent::ScreenSharePolicyChanged { chat_room_id, .. } => chat_room_id,
        }
    }
}

/// What removing participants caused: the events to publish and the channels no longer anyone's
/// (to delete).
pub type Departure = (Vec<VoiceEvent>, Vec<SignalingChannel>);

/// A refused transition. The service wraps these into its per-use-case errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The room has ended.
    #[error("the voice room has ended")]
    Ended,
    /// The room holds `capacity` participants already.
    #[error("the voice room is full ({capacity} participants)")]
    Full {
        /// The capacity.
        capacity: u8,
    },
    /// The user is not in the room.
    #[error("the user is not a participant of the voice room")]
    NotParticipant,
    /// The user may not end the room.
    #[error("only the voice room's master or the chat room's admin may end it")]
    NotAllowedToEnd,
    /// The user may not mute others: only the master and the chat room's admin moderate, and
    /// the master does not moderate the admin.
    #[error("only the voice room's master or the chat room's admin may mute others")]
    NotAllowedToModerate,
    /// A moderator muted the user; they may not unmute themselves.
    #[error("a moderator muted this participant")]
    ServerMuted,
    /// The channel given to a joiner is already someone else's.
    #[error("the signaling channel is already used by another participant")]
    ChannelInUse,
    /// The user may not start or stop a recording.
    #[error("only the voice room's master or the chat room's admin may start or stop a recording")]
    NotAllowedToRecord,
    /// A recording is already running.
    #[error("the voice room is already being recorded")]
    AlreadyRecording,
    /// No recording is running.
    #[error("the voice room is not being recorded")]
    NotRecording,
    /// The room's screen-share policy does not let the user share (or the user may not stop
    /// someone else's share, or set the policy).
    #[error("the voice room's screen-share rule does not allow this")]
    NotAllowedToShare,
    /// Someone else shares a screen already (one sharer at a time).
    #[error("someone else is sharing a screen")]
    ScreenShareBusy,
    /// Nobody shares a screen.
    #[error("nobody is sharing a screen")]
    NotSharing,
}

/// A room rebuilt from storage broke an invariant. Adapters return this (wrapped in their port
/// error) rather than handing the service a room it cannot reason about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored voice room is inconsistent: {0}")]
pub struct CorruptRoom(pub String);

/// All of a room's state, with public fields, for adapters that persist it. Convert back with
/// [`VoiceRoom::from_parts`], which checks the invariants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceRoomParts {
    /// The room's id.
    pub id: VoiceRoomId,
    /// The chat room it belongs to.
    pub chat_room: ChatRoomId,
    /// Current master.
    pub master: UserId,
    /// Active or ended.
    pub status: RoomStatus,
    /// In join order.
    pub participants: Vec<Participant>,
    /// Max participants.
    pub capacity: Capacity,
    /// Optimistic-concurrency version; starts at 1, +1 per stored change.
    pub version: u64,
    /// When it started.
    pub created_at: Timestamp,
    /// Users a moderator (the master or the chat room's admin) has muted, sorted: they join
    /// muted and cannot unmute themselves until a moderator lifts it. Kept on the room, not
    /// the participant, so leaving and joining again does not lift it. Absent in rooms stored
    /// before server mute existed, which read as nobody muted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_muted: Vec<UserId>,
    /// The running recording, or the last one once stopped (absent in rooms stored before
    /// recording existed, and in rooms never recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recording>,
    /// Who may share a screen (absent = `anyone`, also in rooms stored before screen sharing
    /// was a rule of the domain).
    #[serde(default, skip_serializing_if = "ScreenSharePolicy::is_default")]
    pub screen_share_policy: ScreenSharePolicy,
    /// The running screen share, if any (at most one; its sharer is a connected participant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_share: Option<ScreenShare>,
}

/// A voice room. Fields are private so that every change goes through a transition that keeps
/// the invariants:
/// - while active, the master is a participant and there is at least one participant;
/// - once ended, there are no participants and the room never becomes active again;
/// - participants are unique by user and by channel, and at most `capacity`;
/// - participants are in join order, which is what the mesh plan is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceRoom {
    parts: VoiceRoomParts,
}

/// One edge of the mesh: `viewer` connects to `master`'s channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshLink {
    /// The channel (owned by `master`).
    pub channel: SignalingChannel,
    /// The channel's owner, who joined earlier.
    pub master: UserId,
    /// The later joiner, who sends the offer.
    pub viewer: UserId,
}

/// What one participant must do: be master of its own channel, and be viewer on each earlier
/// participant's channel. This is also exactly the scope of its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// Whose plan.
    pub user: UserId,
    /// Own channel, role master.
    pub own_channel: SignalingChannel,
    /// Earlier participants' channels, role viewer, in join order.
    pub peers: Vec<PeerChannel>,
}

/// One channel a participant connects to as viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChannel {
    /// The earlier participant.
    pub user: UserId,
    /// Its channel.
    pub channel: SignalingChannel,
}

/// A (channel, role) pair a participant's credentials allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelGrant {
    /// The channel's reference.
    pub channel: ChannelArn,
    /// The role allowed on it.
    pub role: ChannelRole,
}

impl ConnectionPlan {
    /// The exact (channel, role) pairs this plan needs, master first: what credentials must allow
    /// and nothing more.
    pub fn grants(&self) -> Vec<ChannelGrant> {
        std::iter::once(ChannelGrant {
            channel: self.own_channel.arn.clone(),
            role: ChannelRole::Master,
        })
        .chain(self.peers.iter().map(|p| ChannelGrant {
            channel: p.channel.arn.clone(),
            role: ChannelRole::Viewer,
        }))
        .collect()
    }
}

/// What `join` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// A new participant; events to publish.
    Joined(Vec<VoiceEvent>),
    /// The user was already in the room on this connection: nothing changed (credential refresh).
    AlreadyJoined,
    /// The user was already in the room on another connection (reconnecting, or not yet noticed
    /// as gone), or was reconnecting: this connection replaces the old one, which can no longer
    /// act for the participant; it keeps its channel, place, role and mute state.
    Reconnected {
        /// The connection the participant had before.
        previous: ConnectionId,
        /// `participantResumed`, to publish.
        events: Vec<VoiceEvent>,
    },
}

/// Whether `user` is among `participants` and connected (not waiting out a reconnect grace):
/// what a running recording's recorder and a screen share's sharer must be in a stored room.
fn has_connected(participants: &[Participant], user: &UserId) -> bool {
    participants
        .iter()
        .any(|p| &p.user == user && !p.is_reconnecting())
}

impl VoiceRoom {
    /// Starts a room with `master` as its first participant, master of `channel`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: VoiceRoomId,
        chat_room: ChatRoomId,
        master: UserId,
        connection: ConnectionId,
        channel: SignalingChannel,
        capacity: Capacity,
        now: Timestamp,
    ) -> (Self, Vec<VoiceEvent>) {
        let room = Self {
            parts: VoiceRoomParts {
                id: id.clone(),
                chat_room: chat_room.clone(),
                master: master.clone(),
                status: RoomStatus::Active,
                participants: vec![Participant {
                    user: master.clone(),
                    connection,
                    channel,
                    joined_at: now,
                    muted: false,
                    reconnecting_since: None,
                    last_seen: None,
                }],
                capacity,
                version: 1,
                created_at: now,
                server_muted: Vec::new(),
                recording: None,
                screen_share_policy: ScreenSharePolicy::default(),
                screen_share: None,
            },
        };
        let events = vec![
            VoiceEvent::VoiceStarted {
                voice_room_id: id.clone(),
                chat_room_id: chat_room.clone(),
                master: master.clone(),
            },
            VoiceEvent::ParticipantJoined {
                voice_room_id: id,
                chat_room_id: chat_room,
                user: master,
                client_id: ClientId::from_connection(&room.parts.participants[0].connection).ok(),
                muted: false,
            },
        ];
        (room, events)
    }

    /// Rebuilds a room from stored parts, checking every invariant.
    ///
    /// # Errors
    /// [`CorruptRoom`] naming the first invariant the parts break.
    pub fn from_parts(parts: VoiceRoomParts) -> Result<Self, CorruptRoom> {
        let active = parts.status == RoomStatus::Active;
        if parts.version == 0 {
            return Err(CorruptRoom("version must start at 1".into()));
        }
        if active && parts.participants.is_empty() {
            return Err(CorruptRoom("an active room has no participants".into()));
        }
        if !active && !parts.participants.is_empty() {
            return Err(CorruptRoom("an ended room still has participants".into()));
        }
        if active && !parts.participants.iter().any(|p| p.user == parts.master) {
            return Err(CorruptRoom("the master is not a participant".into()));
        }
        if parts.participants.len() > usize::from(parts.capacity.get()) {
            return Err(CorruptRoom("more participants than capacity".into()));
        }
        if let Some(r) = parts.recording.as_ref().filter(|r| r.is_running()) {
            if !active {
                return Err(CorruptRoom("an ended room is still recording".into()));
            }
            if !has_connected(&parts.participants, &r.by) {
                return Err(CorruptRoom(
                    "the recorder is not a connected participant".into(),
                ));
            }
        }
        if let Some(share) = &parts.screen_share {
            if !active {
                return Err(CorruptRoom("an ended room still has a screen share".into()));
            }
            if !has_connected(&parts.participants, &share.by) {
                return Err(CorruptRoom(
                    "the screen sharer is not a connected participant".into(),
                ));
            }
        }
        for (i, p) in parts.participants.iter().enumerate() {
            if parts.participants[..i]
                .iter()
                .any(|q| q.user == p.user || q.channel.arn == p.channel.arn)
            {
                return Err(CorruptRoom(format!(
                    "participant {} appears twice or shares a channel",
                    p.user
                )));
            }
        }
        if parts.server_muted.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CorruptRoom(
                "the server-muted users are not sorted and unique".into(),
            ));
        }
        Ok(Self { parts })
    }

    /// All state, for adapters that persist it.
    pub fn parts(&self) -> &VoiceRoomParts {
        &self.parts
    }

    /// Consumes the room into its parts.
    pub fn into_parts(self) -> VoiceRoomParts {
        self.parts
    }

    /// The room's id.
    pub fn id(&self) -> &VoiceRoomId {
        &self.parts.id
    }

    /// The chat room it belongs to.
    pub fn chat_room(&self) -> &ChatRoomId {
        &self.parts.chat_room
    }

    /// The current master (after hand-overs, not necessarily the starter).
    pub fn master(&self) -> &UserId {
        &self.parts.master
    }

    /// Active or ended.
    pub fn status(&self) -> &RoomStatus {
        &self.parts.status
    }

    /// Whether the room is running.
    pub fn is_active(&self) -> bool {
        self.parts.status == RoomStatus::Active
    }

    /// Participants in join order.
    pub fn participants(&self) -> &[Participant] {
        &self.parts.participants
    }

    /// Max participants.
    pub fn capacity(&self) -> Capacity {
        self.parts.capacity
    }

    /// The stored version this state corresponds to.
    pub fn version(&self) -> u64 {
        self.parts.version
    }

    /// When the room started.
    pub fn created_at(&self) -> Timestamp {
        self.parts.created_at
    }

    /// The participant that is `user`, if any.
    pub fn participant(&self, user: &UserId) -> Option<&Participant> {
        self.parts.participants.iter().find(|p| &p.user == user)
    }

    /// The participant on `connection`, if any.
    pub fn participant_on(&self, connection: &ConnectionId) -> Option<&Participant> {
        self.parts
            .participants
            .iter()
            .find(|p| &p.connection == connection)
    }

    /// Whether another participant fits.
    pub fn is_full(&self) -> bool {
        self.parts.participants.len() >= usize::from(self.parts.capacity.get())
    }

    /// Marks the state as the next stored version. The service calls this once per successful
    /// compare-and-set; the store compares the previous version.
    pub fn bump_version(&mut self) {
        self.parts.version += 1;
    }

    /// Adds `user` on `connection` with its own `channel` (already created by the service).
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::Full`], or
    /// [`TransitionError::ChannelInUse`] if `channel` belongs to someone else.
    pub fn join(
        &mut self,
        user: UserId,
        connection: ConnectionId,
        channel: SignalingChannel,
        now: Timestamp,
    ) -> Result<JoinOutcome, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        if let Some(p) = self.parts.participants.iter_mut().find(|p| p.user == user) {
            if p.connection == connection && !p.is_reconnecting() {
                return Ok(JoinOutcome::AlreadyJoined);
            }
            let previous = std::mem::replace(&mut p.connection, connection);
            let client_id = ClientId::from_connection(&p.connection).ok();
            p.reconnecting_since = None;
            // The new connection is alive now; the old one's silence is not held against it.
            p.last_seen = Some(now);
            // The old connection's browser was recording; the new one is not.
            let mut events: Vec<VoiceEvent> = self
                .stop_recording_of(&user, RecordingStopReason::RecorderDisconnected, now)
                .into_iter()
                .chain(self.stop_share_of(&user, ScreenShareStopReason::SharerDisconnected))
                .collect();
            events.push(VoiceEvent::ParticipantResumed {
                voice_room_id: self.parts.id.clone(),
                chat_room_id: self.parts.chat_room.clone(),
                user,
                client_id,
            });
            return Ok(JoinOutcome::Reconnected { previous, events });
        }
        if self.is_full() {
            return Err(TransitionError::Full {
                capacity: self.parts.capacity.get(),
            });
        }
        if self
            .parts
            .participants
            .iter()
            .any(|p| p.channel.arn == channel.arn)
        {
            return Err(TransitionError::ChannelInUse);
        }
        let muted = self.is_server_muted(&user);
        let client_id = ClientId::from_connection(&connection).ok();
        self.parts.participants.push(Participant {
            user: user.clone(),
            connection,
            channel,
            joined_at: now,
            muted,
            reconnecting_since: None,
            last_seen: None,
        });
        Ok(JoinOutcome::Joined(vec![VoiceEvent::ParticipantJoined {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user,
            client_id,
            muted,
        }]))
    }

    /// Removes `user`. If it was the master, the earliest remaining participant becomes master;
    /// if it was the last, the room ends. Returns the events and the channels that are no longer
    /// anyone's (to delete).
    ///
    /// # Errors
    /// [`TransitionError::Ended`] or [`TransitionError::NotParticipant`].
    pub fn leave(
        &mut self,
        user: &UserId,
        reason: LeaveReason,
        now: Timestamp,
    ) -> Result<(Vec<VoiceEvent>, Vec<SignalingChannel>), TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let idx = self
            .parts
            .participants
            .iter()
            .position(|p| &p.user == user)
            .ok_or(TransitionError::NotParticipant)?;
        let gone = self.parts.participants.remove(idx);
        let stopped = self.stop_recording_of(user, RecordingStopReason::RecorderLeft, now);
        let unshared = self.stop_share_of(user, ScreenShareStopReason::SharerLeft);
        let mut events: Vec<VoiceEvent> = stopped.into_iter().chain(unshared).collect();
        events.push(VoiceEvent::ParticipantLeft {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user: gone.user.clone(),
            reason,
        });
        let released = vec![gone.channel];
        match self.parts.participants.first() {
            None => {
                self.parts.status = RoomStatus::Ended {
                    at: now,
                    reason: EndReason::LastParticipantLeft,
                };
                events.push(VoiceEvent::VoiceEnded {
                    voice_room_id: self.parts.id.clone(),
                    chat_room_id: self.parts.chat_room.clone(),
                    reason: EndReason::LastParticipantLeft,
                });
            }
            Some(first) if &self.parts.master == user => {
                self.parts.master = first.user.clone();
                events.push(VoiceEvent::MasterChanged {
                    voice_room_id: self.parts.id.clone(),
                    chat_room_id: self.parts.chat_room.clone(),
                    master: first.user.clone(),
                });
            }
            Some(_) => {}
        }
        Ok((events, released))
    }

    /// Sets `user`'s mute state. Returns no event when nothing changed.
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::NotParticipant`], or
    /// [`TransitionError::ServerMuted`] for an unmute while a moderator holds the user muted.
    pub fn set_muted(
        &mut self,
        user: &UserId,
        muted: bool,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let server_muted = self.is_server_muted(user);
        if server_muted && !muted && self.participant(user).is_some() {
            return Err(TransitionError::ServerMuted);
        }
        let p = self
            .parts
            .participants
            .iter_mut()
            .find(|p| &p.user == user)
            .ok_or(TransitionError::NotParticipant)?;
        if p.muted == muted {
            return Ok(Vec::new());
        }
        p.muted = muted;
        Ok(vec![VoiceEvent::MuteChanged {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user: user.clone(),
            muted,
            server_muted,
        }])
    }

    /// Whether a moderator holds `user` muted in this room.
    pub fn is_server_muted(&self, user: &UserId) -> bool {
        self.parts.server_muted.binary_search(user).is_ok()
    }

    /// A moderator mutes `target` for everyone (`on`), or lifts it. Muting also mutes the
    /// target's microphone state; lifting it leaves the target muted: nobody but the user
    /// turns their microphone on (as Discord's server mute and Zoom's "ask to unmute"). The
    /// mute outlives a leave and a rejoin. Moderators: the master and the chat room's admin
    /// (`moderator_is_admin`); the master does not moderate the admin (`target_is_admin`).
    /// Returns no event when nothing changed.
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::NotAllowedToModerate`],
    /// [`TransitionError::NotParticipant`] (muting someone not in the room).
    pub fn set_server_muted(
        &mut self,
        moderator: &UserId,
        moderator_is_admin: bool,
        target: &UserId,
        target_is_admin: bool,
        on: bool,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let is_master = &self.parts.master == moderator;
        let allowed = moderator_is_admin || (is_master && !target_is_admin);
        if !allowed {
            return Err(TransitionError::NotAllowedToModerate);
        }
        let slot = self.parts.server_muted.binary_search(target);
        let participant = self
            .parts
            .participants
            .iter_mut()
            .find(|p| &p.user == target);
        let muted = match (on, slot, participant) {
            (true, _, None) => return Err(TransitionError::NotParticipant),
            (true, Ok(_), Some(_)) | (false, Err(_), _) => return Ok(Vec::new()),
            (true, Err(at), Some(p)) => {
                self.parts.server_muted.insert(at, target.clone());
                p.muted = true;
                true
            }
            (false, Ok(at), p) => {
                self.parts.server_muted.remove(at);
                match p {
                    Some(p) => p.muted,
                    // Lifted for someone who left: nothing to show in the room.
                    None => return Ok(Vec::new()),
                }
            }
        };
        Ok(vec![VoiceEvent::MuteChanged {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user: target.clone(),
            muted,
            server_muted: on,
        }])
    }

    /// Marks the participant on `connection` reconnecting as of `now` (its connection went away).
    /// Returns `None` when nobody is on that connection or it is already reconnecting.
    ///
    /// # Errors
    /// [`TransitionError::Ended`].
    pub fn mark_reconnecting(
        &mut self,
        connection: &ConnectionId,
        now: Timestamp,
    ) -> Result<Option<Vec<VoiceEvent>>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let Some(p) = self
            .parts
            .participants
            .iter_mut()
            .find(|p| &p.connection == connection && !p.is_reconnecting())
        else {
            return Ok(None);
        };
        p.reconnecting_since = Some(now);
        let user = p.user.clone();
        let mut events: Vec<VoiceEvent> = self
            .stop_recording_of(&user, RecordingStopReason::RecorderDisconnected, now)
            .into_iter()
            .chain(self.stop_share_of(&user, ScreenShareStopReason::SharerDisconnected))
            .collect();
        events.push(VoiceEvent::ParticipantReconnecting {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user,
        });
        Ok(Some(events))
    }

    /// Marks every participant reconnecting as of `now`, whatever it was: after a restart no
    /// connection of the previous process exists, and everyone gets the full grace from the
    /// moment the server can take them back. Returns the events (one per participant), empty
    /// for an ended room.
    pub fn mark_all_reconnecting(&mut self, now: Timestamp) -> Vec<VoiceEvent> {
        if !self.is_active() {
            return Vec::new();
        }
        let (id, chat) = (self.parts.id.clone(), self.parts.chat_room.clone());
        let stopped = self
            .running_recording()
            .map(|r| r.by.clone())
            .and_then(|by| {
                self.stop_recording_of(&by, RecordingStopReason::RecorderDisconnected, now)
            });
        let unshared = self.stop_share(ScreenShareStopReason::SharerDisconnected);
        stopped
            .into_iter()
            .chain(unshared)
            .chain(self.parts.participants.iter_mut().map(|p| {
                p.reconnecting_since = Some(now);
                VoiceEvent::ParticipantReconnecting {
                    voice_room_id: id.clone(),
                    chat_room_id: chat.clone(),
                    user: p.user.clone(),
                }
            }))
            .collect()
    }

    /// Records that the participant on `connection` is alive at `now` (its keepalive reached
    /// the service). Returns `None` when nothing changed, so that a store write is made only when
    /// needed: nothing for a connection that is not a participant's, nor when its last proof is
    /// younger than [`TOUCH_MIN_INTERVAL`]; otherwise the events (none for a plain record).
    ///
    /// A participant marked reconnecting while its connection is in fact alive (its keepalive
    /// was late, e.g. behind a Lambda cold start, and [`VoiceRoom::mark_silent_reconnecting`]
    /// took it for dead) is connected again by its next keepalive from that same connection:
    /// `participantResumed`, as for a resume from a new connection. A connection that really
    /// went away sends nothing more, so this never brings back a dead one; a recording or screen
    /// share stopped by the marking stays stopped.
    pub fn touch(&mut self, connection: &ConnectionId, now: Timestamp) -> Option<Vec<VoiceEvent>> {
        if !self.is_active() {
            return None;
        }
        let p = self
            .parts
            .participants
            .iter_mut()
            .find(|p| &p.connection == connection)?;
        if p.is_reconnecting() {
            p.reconnecting_since = None;
            p.last_seen = Some(now);
            return Some(vec![VoiceEvent::ParticipantResumed {
                voice_room_id: self.parts.id.clone(),
                chat_room_id: self.parts.chat_room.clone(),
                user: p.user.clone(),
                client_id: ClientId::from_connection(&p.connection).ok(),
            }]);
        }
        if now.since(p.last_heard()) < TOUCH_MIN_INTERVAL {
            return None;
        }
        p.last_seen = Some(now);
        Some(Vec::new())
    }

    /// The whole liveness rule for one room at `now`, as one transition (one store write), shared
    /// by the sweep (`keepalive` `None`) and a participant's keepalive (`Some(its connection)`):
    /// 1. the keepalive's participant is recorded alive ([`VoiceRoom::touch`], which also
    ///    connects it again if it was wrongly marked reconnecting);
    /// 2. with a `timeout` (a deployment that cannot see its connections, AWS), every connected
    ///    participant not heard from for it becomes reconnecting as of when it was overdue
    ///    ([`VoiceRoom::mark_silent_reconnecting`]);
    /// 3. every participant reconnecting for at least `grace` leaves with reason `disconnected`
    ///    ([`VoiceRoom::expire_reconnecting`]: master hand-over, the room ends with its last).
    ///
    /// So on AWS each keepalive applies the rule to its room: a silently dead participant is
    /// marked and removed by the others' keepalives, and the sweep is only the backstop for a
    /// room where nobody sends any more. Returns `None` when nothing changed (no write needed),
    /// for an ended room, and for a `keepalive` from a connection that is no participant's
    /// (only a participant's request proves anything). Otherwise the events and the channels
    /// released.
    pub fn apply_liveness(
        &mut self,
        keepalive: Option<&ConnectionId>,
        now: Timestamp,
        timeout: Option<std::time::Duration>,
        grace: std::time::Duration,
    ) -> Option<Departure> {
        if !self.is_active() {
            return None;
        }
        let mut changed = false;
        let mut events = Vec::new();
        if let Some(connection) = keepalive {
            match self.touch(connection, now) {
                Some(evs) => {
                    changed = true;
                    events.extend(evs);
                }
                None if self.participant_on(connection).is_none() => return None,
                None => {}
            }
        }
        if let Some(timeout) = timeout {
            let evs = self.mark_silent_reconnecting(now, timeout);
            changed |= !evs.is_empty();
            events.extend(evs);
        }
        let mut released = Vec::new();
        if let Ok(Some((evs, rel))) = self.expire_reconnecting(now, grace) {
            changed = true;
            events.extend(evs);
            released.extend(rel);
        }
        changed.then_some((events, released))
    }

    /// The liveness rule of a deployment that cannot see its connections (AWS): every connected
    /// participant not heard from for `timeout` at `now` is treated as disconnected, marked
    /// reconnecting as of the moment it became overdue (`last_heard + timeout`), so that its
    /// reconnect grace counts from then and not from whenever a keepalive or a sweep happens to
    /// notice; the same step may then remove it at once with [`VoiceRoom::expire_reconnecting`]
    /// (both are parts of [`VoiceRoom::apply_liveness`]). Returns the events
    /// (`participantReconnecting`, and a recording it was making stopped), empty if nobody is
    /// overdue or the room has ended.
    pub fn mark_silent_reconnecting(
        &mut self,
        now: Timestamp,
        timeout: std::time::Duration,
    ) -> Vec<VoiceEvent> {
        if !self.is_active() {
            return Vec::new();
        }
        let overdue: Vec<(ConnectionId, Timestamp)> = self
            .parts
            .participants
            .iter()
            .filter(|p| !p.is_reconnecting() && now.since(p.last_heard()) >= timeout)
            .map(|p| (p.connection.clone(), p.last_heard().plus(timeout)))
            .collect();
        let mut events = Vec::new();
        for (connection, since) in overdue {
            if let Ok(Some(evs)) = self.mark_reconnecting(&connection, since) {
                events.extend(evs);
            }
        }
        events
    }

    /// Removes, as a leave with reason `disconnected`, every participant that has been
    /// reconnecting for at least `grace` at `now`: master hand-over and auto-end as in
    /// [`VoiceRoom::leave`]. Returns `None` when nobody expired.
    ///
    /// # Errors
    /// [`TransitionError::Ended`].
    pub fn expire_reconnecting(
        &mut self,
        now: Timestamp,
        grace: std::time::Duration,
    ) -> Result<Option<Departure>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let expired: Vec<UserId> = self
            .parts
            .participants
            .iter()
            .filter(|p| p.reconnecting_since.is_some_and(|t| now.since(t) >= grace))
            .map(|p| p.user.clone())
            .collect();
        if expired.is_empty() {
            return Ok(None);
        }
        let (mut events, mut released) = (Vec::new(), Vec::new());
        for user in &expired {
            let (evs, rel) = self.leave(user, LeaveReason::Disconnected, now)?;
            events.extend(evs);
            released.extend(rel);
        }
        Ok(Some((events, released)))
    }

    /// Ends the room on `by`'s request. The master may always end it; the chat room's admin
    /// (`by_is_chat_admin`) may too, so a room whose master walked away can be closed.
    /// Returns the events and every participant's channel (to delete).
    ///
    /// # Errors
    /// [`TransitionError::Ended`] or [`TransitionError::NotAllowedToEnd`].
    pub fn end(
        &mut self,
        by: &UserId,
        by_is_chat_admin: bool,
        now: Timestamp,
    ) -> Result<(Vec<VoiceEvent>, Vec<SignalingChannel>), TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let reason = if &self.parts.master == by {
            EndReason::EndedByMaster { by: by.clone() }
        } else if by_is_chat_admin {
            EndReason::EndedByAdmin { by: by.clone() }
        } else {
            return Err(TransitionError::NotAllowedToEnd);
        };
        Ok(self.finish(reason, now))
    }

    /// Ends the room because nobody live is in it (the sweep's decision).
    ///
    /// # Errors
    /// [`TransitionError::Ended`] if it already ended.
    pub fn abandon(
        &mut self,
        now: Timestamp,
    ) -> Result<(Vec<VoiceEvent>, Vec<SignalingChannel>), TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        Ok(self.finish(EndReason::Abandoned, now))
    }

    fn finish(
        &mut self,
        reason: EndReason,
        now: Timestamp,
    ) -> (Vec<VoiceEvent>, Vec<SignalingChannel>) {
        let stopped = self.stop_running_recording(RecordingStopReason::RoomEnded, now);
        let unshared = self.stop_share(ScreenShareStopReason::RoomEnded);
        let channels = self
            .parts
            .participants
            .drain(..)
            .map(|p| p.channel)
            .collect();
        self.parts.status = RoomStatus::Ended {
            at: now,
            reason: reason.clone(),
        };
        let mut events: Vec<VoiceEvent> = stopped.into_iter().chain(unshared).collect();
        events.push(VoiceEvent::VoiceEnded {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            reason,
        });
        (events, channels)
    }

    /// The running recording, or the last one once stopped.
    pub fn recording(&self) -> Option<&Recording> {
        self.parts.recording.as_ref()
    }

    /// The running recording, if any.
    pub fn running_recording(&self) -> Option<&Recording> {
        self.parts.recording.as_ref().filter(|r| r.is_running())
    }

    /// Whether the room is being recorded.
    pub fn is_recording(&self) -> bool {
        self.running_recording().is_some()
    }

    /// Starts recording `id` in `by`'s browser. `by` must be a connected participant and the
    /// room's master or (`by_is_chat_admin`) the chat room's admin.
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::NotParticipant`],
    /// [`TransitionError::NotAllowedToRecord`] or [`TransitionError::AlreadyRecording`].
    pub fn start_recording(
        &mut self,
        by: &UserId,
        by_is_chat_admin: bool,
        id: RecordingId,
        now: Timestamp,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        if self.participant(by).is_none_or(|p| p.is_reconnecting()) {
            return Err(TransitionError::NotParticipant);
        }
        if &self.parts.master != by && !by_is_chat_admin {
            return Err(TransitionError::NotAllowedToRecord);
        }
        if self.is_recording() {
            return Err(TransitionError::AlreadyRecording);
        }
        self.parts.recording = Some(Recording {
            id: id.clone(),
            by: by.clone(),
            started_at: now,
            stopped: None,
        });
        Ok(vec![VoiceEvent::RecordingStarted {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            recording_id: id,
            by: by.clone(),
        }])
    }

    /// Stops the running recording on `by`'s request: the master, the chat room's admin or the
    /// recorder may.
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::NotRecording`] or
    /// [`TransitionError::NotAllowedToRecord`].
    pub fn stop_recording(
        &mut self,
        by: &UserId,
        by_is_chat_admin: bool,
        now: Timestamp,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let recorder = self
            .running_recording()
            .map(|r| r.by.clone())
            .ok_or(TransitionError::NotRecording)?;
        if &self.parts.master != by && !by_is_chat_admin && &recorder != by {
            return Err(TransitionError::NotAllowedToRecord);
        }
        Ok(self
            .stop_running_recording(RecordingStopReason::Stopped { by: by.clone() }, now)
            .into_iter()
            .collect())
    }

    /// Whether the recorder may upload to recording `id` at `now` (it is this room's, and it
    /// runs or stopped less than [`crate::recording::FINAL_CHUNK_GRACE`] ago).
    pub fn accepts_upload(&self, id: &RecordingId, now: Timestamp) -> bool {
        self.recording()
            .is_some_and(|r| &r.id == id && r.accepts_upload(now))
    }

    /// Stops the running recording if `user` is its recorder.
    fn stop_recording_of(
        &mut self,
        user: &UserId,
        reason: RecordingStopReason,
        now: Timestamp,
    ) -> Option<VoiceEvent> {
        if self.running_recording().is_some_and(|r| &r.by == user) {
            self.stop_running_recording(reason, now)
        } else {
            None
        }
    }

    /// Stops the running recording, if any, and returns its `recordingStopped`.
    fn stop_running_recording(
        &mut self,
        reason: RecordingStopReason,
        now: Timestamp,
    ) -> Option<VoiceEvent> {
        let r = self.parts.recording.as_mut().filter(|r| r.is_running())?;
        r.stopped = Some(RecordingStop {
            at: now,
            reason: reason.clone(),
        });
        Some(VoiceEvent::RecordingStopped {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            recording_id: r.id.clone(),
            reason,
        })
    }

    /// Who may share a screen in this room.
    pub fn screen_share_policy(&self) -> ScreenSharePolicy {
        self.parts.screen_share_policy
    }

    /// The running screen share, if any.
    pub fn screen_share(&self) -> Option<&ScreenShare> {
        self.parts.screen_share.as_ref()
    }

    /// The master or (`by_is_chat_admin`) the chat room's admin sets who may share a screen.
    /// Tightening it to `hosts` stops a share by anyone else at once (`sharer_is_chat_admin`
    /// says whether the current sharer administers the chat room). Returns no event when
    /// nothing changed.
    ///
    /// # Errors
    /// [`TransitionError::Ended`] or [`TransitionError::NotAllowedToShare`].
    pub fn set_screen_share_policy(
        &mut self,
        by: &UserId,
        by_is_chat_admin: bool,
        policy: ScreenSharePolicy,
        sharer_is_chat_admin: bool,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        if &self.parts.master != by && !by_is_chat_admin {
            return Err(TransitionError::NotAllowedToShare);
        }
        if self.parts.screen_share_policy == policy {
            return Ok(Vec::new());
        }
        self.parts.screen_share_policy = policy;
        let mut events = vec![VoiceEvent::ScreenSharePolicyChanged {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            policy,
            by: by.clone(),
        }];
        let sharer_is_host = self
            .screen_share()
            .is_some_and(|s| s.by == self.parts.master || sharer_is_chat_admin);
        if self.screen_share().is_some() && !policy.allows(sharer_is_host) {
            events.extend(self.stop_share(ScreenShareStopReason::PolicyChanged));
        }
        Ok(events)
    }

    /// `by` starts sharing its screen: it must be a connected participant, the policy must let
    /// it (`by_is_chat_admin` counts as a host), and nobody else may be sharing. Sharing again
    /// while already the sharer changes nothing (no event).
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::NotParticipant`],
    /// [`TransitionError::NotAllowedToShare`] or [`TransitionError::ScreenShareBusy`].
    pub fn start_screen_share(
        &mut self,
        by: &UserId,
        by_is_chat_admin: bool,
        now: Timestamp,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        if self.participant(by).is_none_or(|p| p.is_reconnecting()) {
            return Err(TransitionError::NotParticipant);
        }
        let is_host = &self.parts.master == by || by_is_chat_admin;
        if !self.parts.screen_share_policy.allows(is_host) {
            return Err(TransitionError::NotAllowedToShare);
        }
        match &self.parts.screen_share {
            Some(s) if &s.by == by => return Ok(Vec::new()),
            Some(_) => return Err(TransitionError::ScreenShareBusy),
            None => {}
        }
        self.parts.screen_share = Some(ScreenShare {
            by: by.clone(),
            since: now,
        });
        Ok(vec![VoiceEvent::ScreenShareStarted {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user: by.clone(),
        }])
    }

    /// Stops the running screen share on `by`'s request: the sharer, the master or
    /// (`by_is_chat_admin`) the chat room's admin may.
    ///
    /// # Errors
    /// [`TransitionError::Ended`], [`TransitionError::NotSharing`] or
    /// [`TransitionError::NotAllowedToShare`].
    pub fn stop_screen_share(
        &mut self,
        by: &UserId,
        by_is_chat_admin: bool,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
        }
        let sharer = self
            .screen_share()
            .map(|s| s.by.clone())
            .ok_or(TransitionError::NotSharing)?;
        if &sharer != by && &self.parts.master != by && !by_is_chat_admin {
            return Err(TransitionError::NotAllowedToShare);
        }
        Ok(self
            .stop_share(ScreenShareStopReason::Stopped { by: by.clone() })
            .into_iter()
            .collect())
    }

    /// Stops the screen share if `user` is its sharer.
    fn stop_share_of(
        &mut self,
        user: &UserId,
        reason: ScreenShareStopReason,
    ) -> Option<VoiceEvent> {
        if self.screen_share().is_some_and(|s| &s.by == user) {
            self.stop_share(reason)
        } else {
            None
        }
    }

    /// Stops the screen share, if any, and returns its `screenShareStopped`.
    fn stop_share(&mut self, reason: ScreenShareStopReason) -> Option<VoiceEvent> {
        let share = self.parts.screen_share.take()?;
        Some(VoiceEvent::ScreenShareStopped {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user: share.by,
            reason,
        })
    }

    /// The connection plan of `user`: master of its own channel, viewer on every earlier
    /// participant's channel. `None` if it is not a participant.
    pub fn plan_for(&self, user: &UserId) -> Option<ConnectionPlan> {
        let idx = self
            .parts
            .participants
            .iter()
            .position(|p| &p.user == user)?;
        let me = &self.parts.participants[idx];
        Some(ConnectionPlan {
            user: me.user.clone(),
            own_channel: me.channel.clone(),
            peers: self.parts.participants[..idx]
                .iter()
                .map(|p| PeerChannel {
                    user: p.user.clone(),
                    channel: p.channel.clone(),
                })
                .collect(),
        })
    }

    /// Every edge of the mesh: one per pair of participants, the later joiner as viewer.
    pub fn mesh(&self) -> Vec<MeshLink> {
        let ps = &self.parts.participants;
        let mut links = Vec::with_capacity(ps.len() * ps.len().saturating_sub(1) / 2);
        for (j, viewer) in ps.iter().enumerate() {
            for master in &ps[..j] {
                links.push(MeshLink {
                    channel: master.channel.clone(),
                    master: master.user.clone(),
                    viewer: viewer.user.clone(),
                });
            }
        }
        links
    }

    /// The mesh edge between two participants, whichever order they are given in: the channel
    /// of the one who joined first, with the other as viewer. `None` unless both are current
    /// participants and distinct. The self-hosted relay uses this to decide whether a signaling
    /// message may pass.
    pub fn link_between(&self, a: &UserId, b: &UserId) -> Option<MeshLink> {
        if a == b {
            return None;
        }
        let ia = self.parts.participants.iter().position(|p| &p.user == a)?;
        let ib = self.parts.participants.iter().position(|p| &p.user == b)?;
        let (m, v) = if ia < ib { (ia, ib) } else { (ib, ia) };
        let master = &self.parts.participants[m];
        Some(MeshLink {
            channel: master.channel.clone(),
            master: master.user.clone(),
            viewer: self.parts.participants[v].user.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Every transition of the aggregate, each refusal, and the mesh plan.

    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn conn(s: &str) -> ConnectionId {
        ConnectionId::parse(s).unwrap()
    }

    fn chan(s: &str) -> SignalingChannel {
        SignalingChannel {
            name: ChannelName::from_unique(s).unwrap(),
            arn: ChannelArn::parse(format!("arn:test:channel/voice-{s}")).unwrap(),
        }
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn vr() -> VoiceRoomId {
        VoiceRoomId::parse("vr-1").unwrap()
    }

    fn chat() -> ChatRoomId {
        ChatRoomId::parse("chat-1").unwrap()
    }

    /// A room started by `a` (capacity `cap`), then joined by each of `others` in order; user
    /// `x` is on connection `c-x` with channel `voice-x`.
    fn room_with(cap: u8, others: &[&str]) -> VoiceRoom {
        let (mut room, _) = VoiceRoom::start(
            vr(),
            chat(),
            user("a"),
            conn("c-a"),
            chan("a"),
            Capacity::new(cap).unwrap(),
            at(1_000),
        );
        for (i, o) in others.iter().enumerate() {
            let out = room
                .join(
                    user(o),
                    conn(&format!("c-{o}")),
                    chan(o),
                    at(2_000 + i as u64),
                )
                .unwrap();
            assert!(matches!(out, JoinOutcome::Joined(_)));
        }
        room
    }

    fn users(room: &VoiceRoom) -> Vec<&str> {
        room.participants()
            .iter()
            .map(|p| p.user.as_str())
            .collect()
    }

    #[test]
    fn capacity_accepts_1_to_10_only() {
        assert_eq!(Capacity::new(0), Err(InvalidCapacity(0)));
        assert_eq!(Capacity::new(11), Err(InvalidCapacity(11)));
        assert_eq!(Capacity::new(1).unwrap().get(), 1);
        assert_eq!(Capacity::new(10).unwrap().get(), 10);
        assert_eq!(Capacity::default().get(), MAX_CAPACITY);
        assert!(serde_json::from_str::<Capacity>("11").is_err());
        assert_eq!(serde_json::from_str::<Capacity>("3").unwrap().get(), 3);
    }

    #[test]
    fn start_makes_the_starter_master_and_sole_participant() {
        let (room, events) = VoiceRoom::start(
            vr(),
            chat(),
            user("a"),
            conn("c-a"),
            chan("a"),
            Capacity::new(4).unwrap(),
            at(1_000),
        );
        assert!(room.is_active());
        assert_eq!(room.status(), &RoomStatus::Active);
        assert_eq!(room.master(), &user("a"));
        assert_eq!(room.version(), 1);
        assert_eq!(room.created_at(), at(1_000));
        assert_eq!(room.capacity().get(), 4);
        assert_eq!(room.id(), &vr());
        assert_eq!(room.chat_room(), &chat());
        assert_eq!(
            room.participants(),
            &[Participant {
                user: user("a"),
                connection: conn("c-a"),
                channel: chan("a"),
                joined_at: at(1_000),
                muted: false,
                reconnecting_since: None,
                last_seen: None,
            }]
        );
        assert_eq!(
            events,
            vec![
                VoiceEvent::VoiceStarted {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    master: user("a"),
                },
                VoiceEvent::ParticipantJoined {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    user: user("a"),
                    client_id: Some(ClientId::parse("c-a").unwrap()),
                    muted: false,
                },
            ]
        );
        assert!(events.iter().all(|e| e.chat_room_id() == &chat()));
        // A started room satisfies every stored-state invariant.
        assert_eq!(VoiceRoom::from_parts(room.parts().clone()).unwrap(), room);
    }

    #[test]
    fn join_appends_in_order_and_announces() {
        let mut room = room_with(3, &[]);
        let out = room
            .join(user("b"), conn("c-b"), chan("b"), at(5_000))
            .unwrap();
        assert_eq!(
            out,
            JoinOutcome::Joined(vec![VoiceEvent::ParticipantJoined {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("b"),
                client_id: Some(ClientId::parse("c-b").unwrap()),
                muted: false,
            }])
        );
        assert_eq!(users(&room), ["a", "b"]);
        let b = room.participant(&user("b")).unwrap();
        assert_eq!(b.connection, conn("c-b"));
        assert_eq!(b.channel, chan("b"));
        assert_eq!(b.joined_at, at(5_000));
        assert!(!b.muted);
        assert_eq!(room.participant_on(&conn("c-b")).unwrap().user, user("b"));
        // Joining does not change the master, and the version is the service's business.
        assert_eq!(room.master(), &user("a"));
        assert_eq!(room.version(), 1);
    }

    #[test]
    fn join_on_the_same_connection_is_a_no_op() {
        let mut room = room_with(3, &["b"]);
        let before = room.clone();
        let out = room
            .join(user("b"), conn("c-b"), chan("other"), at(9_000))
            .unwrap();
        assert_eq!(out, JoinOutcome::AlreadyJoined);
        assert_eq!(room, before);
    }

    #[test]
    fn join_on_another_connection_moves_the_participant_and_keeps_its_channel() {
        let mut room = room_with(3, &["b"]);
        let out = room
            .join(user("b"), conn("c-b2"), chan("other"), at(9_000))
            .unwrap();
        assert_eq!(
            out,
            JoinOutcome::Reconnected {
                previous: conn("c-b"),
                events: vec![VoiceEvent::ParticipantResumed {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    user: user("b"),
                    client_id: Some(ClientId::parse("c-b2").unwrap()),
                }],
            }
        );
        assert_eq!(users(&room), ["a", "b"]);
        let b = room.participant(&user("b")).unwrap();
        assert_eq!(b.connection, conn("c-b2"));
        assert_eq!(b.channel, chan("b"), "keeps its own channel");
        assert_eq!(b.joined_at, at(2_000), "keeps its place in the mesh");
        assert!(room.participant_on(&conn("c-b")).is_none());
    }

    #[test]
    fn a_disconnect_marks_reconnecting_and_keeps_place_role_and_mute() {
        let mut room = room_with(3, &["b", "c"]);
        room.set_muted(&user("a"), true).unwrap();
        let evs = room.mark_reconnecting(&conn("c-a"), at(9_000)).unwrap();
        assert_eq!(
            evs,
            Some(vec![VoiceEvent::ParticipantReconnecting {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("a"),
            }])
        );
        assert_eq!(users(&room), ["a", "b", "c"]);
        assert_eq!(room.master(), &user("a"));
        let a = room.participant(&user("a")).unwrap();
        assert!(a.muted && a.is_reconnecting());
        assert_eq!(a.reconnecting_since, Some(at(9_000)));
        // A second disconnect of the same connection, or of an unknown one, changes nothing.
        let before = room.clone();
        assert_eq!(room.mark_reconnecting(&conn("c-a"), at(9_500)), Ok(None));
        assert_eq!(room.mark_reconnecting(&conn("c-zz"), at(9_500)), Ok(None));
        assert_eq!(room, before);
        // Stored and read back, the state survives.
        assert_eq!(VoiceRoom::from_parts(room.parts().clone()).unwrap(), room);
    }

    #[test]
    fn resuming_replaces_the_connection_and_clears_reconnecting() {
        let mut room = room_with(3, &["b"]);
        room.mark_reconnecting(&conn("c-b"), at(9_000)).unwrap();
        let out = room
            .join(user("b"), conn("c-b2"), chan("other"), at(9_100))
            .unwrap();
        assert!(matches!(
            out,
            JoinOutcome::Reconnected { ref previous, ref events }
                if previous == &conn("c-b") && events.len() == 1
        ));
        let b = room.participant(&user("b")).unwrap();
        assert_eq!(b.connection, conn("c-b2"));
        assert!(!b.is_reconnecting());
        assert!(room.participant_on(&conn("c-b")).is_none());
        assert_eq!(users(&room), ["a", "b"]);
        // Resuming on the very connection that was marked (after a restart that reuses ids)
        // clears the state too, and is announced.
        room.mark_reconnecting(&conn("c-b2"), at(9_200)).unwrap();
        assert!(matches!(
            room.join(user("b"), conn("c-b2"), chan("x"), at(9_300)),
            Ok(JoinOutcome::Reconnected { .. })
        ));
        assert!(!room.participant(&user("b")).unwrap().is_reconnecting());
    }

    #[test]
    fn expiry_removes_only_participants_past_the_grace_with_hand_over_and_auto_end() {
        let grace = std::time::Duration::from_millis(1_000);
        let mut room = room_with(3, &["b", "c"]);
        room.mark_reconnecting(&conn("c-a"), at(10_000)).unwrap();
        room.mark_reconnecting(&conn("c-c"), at(10_500)).unwrap();
        assert_eq!(room.expire_reconnecting(at(10_999), grace), Ok(None));
        let (evs, released) = room
            .expire_reconnecting(at(11_000), grace)
            .unwrap()
            .unwrap();
        assert_eq!(users(&room), ["b", "c"]);
        assert_eq!(room.master(), &user("b"), "hand-over as for a leave");
        assert_eq!(released, vec![chan("a")]);
        assert!(evs.contains(&VoiceEvent::ParticipantLeft {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("a"),
            reason: LeaveReason::Disconnected,
        }));
        assert!(evs
            .iter()
            .any(|e| matches!(e, VoiceEvent::MasterChanged { .. })));
        room.mark_reconnecting(&conn("c-b"), at(11_000)).unwrap();
        let (evs, released) = room
            .expire_reconnecting(at(12_000), grace)
            .unwrap()
            .unwrap();
        assert!(!room.is_active());
        assert_eq!(released.len(), 2);
        assert_eq!(
            evs.last(),
            Some(&VoiceEvent::VoiceEnded {
                voice_room_id: vr(),
                chat_room_id: chat(),
                reason: EndReason::LastParticipantLeft,
            })
        );
        assert_eq!(
            room.expire_reconnecting(at(99_000), grace),
            Err(TransitionError::Ended)
        );
    }

    #[test]
    fn a_restart_marks_everyone_reconnecting() {
        let mut room = room_with(3, &["b"]);
        room.mark_reconnecting(&conn("c-b"), at(5_000)).unwrap();
        let evs = room.mark_all_reconnecting(at(9_000));
        assert_eq!(evs.len(), 2);
        assert!(room
            .participants()
            .iter()
            .all(|p| p.reconnecting_since == Some(at(9_000))));
        room.end(&user("a"), false, at(9_500)).unwrap();
        assert!(room.mark_all_reconnecting(at(9_900)).is_empty());
    }

    #[test]
    fn a_full_room_refuses_newcomers_but_not_members() {
        let mut room = room_with(2, &["b"]);
        assert!(room.is_full());
        let before = room.clone();
        assert_eq!(
            room.join(user("c"), conn("c-c"), chan("c"), at(9_000)),
            Err(TransitionError::Full { capacity: 2 })
        );
        assert_eq!(room, before);
        // A member reconnecting to a full room is not a newcomer.
        assert!(matches!(
            room.join(user("b"), conn("c-b2"), chan("x"), at(9_000)),
            Ok(JoinOutcome::Reconnected { .. })
        ));
        assert_eq!(
            room.join(user("a"), conn("c-a"), chan("x"), at(9_000)),
            Ok(JoinOutcome::AlreadyJoined)
        );
    }

    #[test]
    fn an_ended_room_refuses_every_join() {
        let mut room = room_with(3, &["b"]);
        room.end(&user("a"), false, at(9_000)).unwrap();
        let before = room.clone();
        for (u, c) in [("c", "c-c"), ("a", "c-a"), ("b", "c-b2")] {
            assert_eq!(
                room.join(user(u), conn(c), chan(u), at(9_500)),
                Err(TransitionError::Ended)
            );
        }
        assert_eq!(room, before);
    }

    #[test]
    fn join_refuses_a_channel_someone_else_holds() {
        let mut room = room_with(3, &["b"]);
        let before = room.clone();
        assert_eq!(
            room.join(user("c"), conn("c-c"), chan("a"), at(9_000)),
            Err(TransitionError::ChannelInUse)
        );
        assert_eq!(
            room.join(user("c"), conn("c-c"), chan("b"), at(9_000)),
            Err(TransitionError::ChannelInUse)
        );
        assert_eq!(room, before);
    }

    #[test]
    fn a_leaving_non_master_releases_only_its_channel() {
        let mut room = room_with(4, &["b", "c"]);
        let (events, released) = room
            .leave(&user("b"), LeaveReason::Left, at(9_000))
            .unwrap();
        assert_eq!(released, vec![chan("b")]);
        assert_eq!(
            events,
            vec![VoiceEvent::ParticipantLeft {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("b"),
                reason: LeaveReason::Left,
            }]
        );
        assert_eq!(users(&room), ["a", "c"]);
        assert_eq!(room.master(), &user("a"));
        assert!(room.is_active());
    }

    #[test]
    fn a_leaving_master_hands_over_to_the_earliest_remaining_participant() {
        let mut room = room_with(5, &["b", "c", "d"]);
        // Make the earliest remaining participant not the last one, nor the most recent.
        let (events, released) = room
            .leave(&user("a"), LeaveReason::Disconnected, at(9_000))
            .unwrap();
        assert_eq!(released, vec![chan("a")]);
        assert_eq!(room.master(), &user("b"));
        assert_eq!(
            events,
            vec![
                VoiceEvent::ParticipantLeft {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    user: user("a"),
                    reason: LeaveReason::Disconnected,
                },
                VoiceEvent::MasterChanged {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    master: user("b"),
                },
            ]
        );
        // b leaves too: c (joined before d) takes over.
        room.leave(&user("c"), LeaveReason::Left, at(9_100))
            .unwrap();
        assert_eq!(room.master(), &user("b"), "non-master leaving keeps master");
        let (events, _) = room
            .leave(&user("b"), LeaveReason::Left, at(9_200))
            .unwrap();
        assert_eq!(room.master(), &user("d"));
        assert!(events.contains(&VoiceEvent::MasterChanged {
            voice_room_id: vr(),
            chat_room_id: chat(),
            master: user("d"),
        }));
        assert_eq!(VoiceRoom::from_parts(room.parts().clone()).unwrap(), room);
    }

    #[test]
    fn the_last_one_out_ends_the_room() {
        let mut room = room_with(3, &["b"]);
        room.leave(&user("a"), LeaveReason::Left, at(9_000))
            .unwrap();
        let (events, released) = room
            .leave(&user("b"), LeaveReason::Disconnected, at(9_500))
            .unwrap();
        assert_eq!(released, vec![chan("b")]);
        assert!(!room.is_active());
        assert!(room.participants().is_empty());
        assert_eq!(
            room.status(),
            &RoomStatus::Ended {
                at: at(9_500),
                reason: EndReason::LastParticipantLeft
            }
        );
        assert_eq!(
            events,
            vec![
                VoiceEvent::ParticipantLeft {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    user: user("b"),
                    reason: LeaveReason::Disconnected,
                },
                VoiceEvent::VoiceEnded {
                    voice_room_id: vr(),
                    chat_room_id: chat(),
                    reason: EndReason::LastParticipantLeft,
                },
            ]
        );
        assert_eq!(VoiceRoom::from_parts(room.parts().clone()).unwrap(), room);
    }

    #[test]
    fn leave_refuses_strangers_and_ended_rooms() {
        let mut room = room_with(3, &["b"]);
        let before = room.clone();
        assert_eq!(
            room.leave(&user("z"), LeaveReason::Left, at(9_000)),
            Err(TransitionError::NotParticipant)
        );
        assert_eq!(room, before);
        room.abandon(at(9_000)).unwrap();
        assert_eq!(
            room.leave(&user("a"), LeaveReason::Left, at(9_100)),
            Err(TransitionError::Ended)
        );
    }

    #[test]
    fn moderators_mute_others_and_only_they_lift_it() {
        let mut room = room_with(4, &["b", "c"]);
        let muted_event = |u: &str, muted: bool, server_muted: bool| VoiceEvent::MuteChanged {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user(u),
            muted,
            server_muted,
        };
        // Not a moderator: a participant who is neither master nor admin.
        assert_eq!(
            room.set_server_muted(&user("b"), false, &user("c"), false, true),
            Err(TransitionError::NotAllowedToModerate)
        );
        // The master does not moderate the chat room's admin; the admin moderates anyone.
        assert_eq!(
            room.set_server_muted(&user("a"), false, &user("c"), true, true),
            Err(TransitionError::NotAllowedToModerate)
        );
        assert_eq!(
            room.set_server_muted(&user("a"), false, &user("x"), false, true),
            Err(TransitionError::NotParticipant)
        );
        assert_eq!(
            room.set_server_muted(&user("a"), false, &user("b"), false, true),
            Ok(vec![muted_event("b", true, true)])
        );
        assert_eq!(
            room.set_server_muted(&user("a"), false, &user("b"), false, true),
            Ok(vec![]),
            "already muted: nothing to announce"
        );
        assert_eq!(
            room.set_muted(&user("b"), false),
            Err(TransitionError::ServerMuted),
            "the muted cannot unmute themselves"
        );
        assert_eq!(room.set_muted(&user("b"), true), Ok(vec![]));
        // Leaving and joining again does not lift it.
        room.leave(&user("b"), LeaveReason::Left, at(5_000))
            .unwrap();
        assert!(room.is_server_muted(&user("b")));
        room.join(user("b"), conn("c-b2"), chan("b2"), at(6_000))
            .unwrap();
        assert!(room.participant(&user("b")).unwrap().muted, "rejoins muted");
        // The admin lifts it; the microphone stays off until its owner turns it on.
        assert_eq!(
            room.set_server_muted(&user("c"), true, &user("b"), false, false),
            Ok(vec![muted_event("b", true, false)])
        );
        assert!(room.participant(&user("b")).unwrap().muted);
        assert_eq!(
            room.set_muted(&user("b"), false),
            Ok(vec![muted_event("b", false, false)])
        );
        let parts = room.clone().into_parts();
        assert_eq!(
            VoiceRoom::from_parts(parts).unwrap(),
            room,
            "survives storage"
        );
    }

    #[test]
    fn set_muted_changes_and_announces_once() {
        let mut room = room_with(3, &["b"]);
        assert_eq!(
            room.set_muted(&user("b"), true).unwrap(),
            vec![VoiceEvent::MuteChanged {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("b"),
                muted: true,
                server_muted: false,
            }]
        );
        assert!(room.participant(&user("b")).unwrap().muted);
        assert!(!room.participant(&user("a")).unwrap().muted);
        // Same state again: nothing changes, nothing to announce.
        let before = room.clone();
        assert_eq!(room.set_muted(&user("b"), true).unwrap(), vec![]);
        assert_eq!(room, before);
        assert_eq!(room.set_muted(&user("a"), false).unwrap(), vec![]);
        assert_eq!(room, before);
        // And back.
        assert_eq!(room.set_muted(&user("b"), false).unwrap().len(), 1);
        assert!(!room.participant(&user("b")).unwrap().muted);
    }

    #[test]
    fn set_muted_refuses_strangers_and_ended_rooms() {
        let mut room = room_with(3, &["b"]);
        assert_eq!(
            room.set_muted(&user("z"), true),
            Err(TransitionError::NotParticipant)
        );
        room.end(&user("a"), false, at(9_000)).unwrap();
        assert_eq!(
            room.set_muted(&user("a"), true),
            Err(TransitionError::Ended)
        );
    }

    #[test]
    fn the_master_ends_the_room_and_every_channel_is_released() {
        let mut room = room_with(4, &["b", "c"]);
        let (events, released) = room.end(&user("a"), false, at(9_000)).unwrap();
        assert_eq!(released, vec![chan("a"), chan("b"), chan("c")]);
        assert_eq!(
            events,
            vec![VoiceEvent::VoiceEnded {
                voice_room_id: vr(),
                chat_room_id: chat(),
                reason: EndReason::EndedByMaster { by: user("a") },
            }]
        );
        assert!(room.participants().is_empty());
        assert_eq!(
            room.status(),
            &RoomStatus::Ended {
                at: at(9_000),
                reason: EndReason::EndedByMaster { by: user("a") }
            }
        );
        assert_eq!(VoiceRoom::from_parts(room.parts().clone()).unwrap(), room);
    }

    #[test]
    fn the_master_who_is_also_admin_ends_as_master() {
        let mut room = room_with(4, &["b"]);
        let (events, _) = room.end(&user("a"), true, at(9_000)).unwrap();
        assert_eq!(
            events,
            vec![VoiceEvent::VoiceEnded {
                voice_room_id: vr(),
                chat_room_id: chat(),
                reason: EndReason::EndedByMaster { by: user("a") },
            }]
        );
    }

    #[test]
    fn the_chat_admin_ends_a_room_it_is_not_master_of() {
        // The admin need not even be a participant.
        let mut room = room_with(4, &["b"]);
        let (events, released) = room.end(&user("admin"), true, at(9_000)).unwrap();
        assert_eq!(released, vec![chan("a"), chan("b")]);
        assert_eq!(
            events,
            vec![VoiceEvent::VoiceEnded {
                voice_room_id: vr(),
                chat_room_id: chat(),
                reason: EndReason::EndedByAdmin { by: user("admin") },
            }]
        );
        assert!(!room.is_active());
    }

    #[test]
    fn others_may_not_end_the_room() {
        let mut room = room_with(4, &["b"]);
        let before = room.clone();
        assert_eq!(
            room.end(&user("b"), false, at(9_000)),
            Err(TransitionError::NotAllowedToEnd)
        );
        assert_eq!(
            room.end(&user("z"), false, at(9_000)),
            Err(TransitionError::NotAllowedToEnd)
        );
        assert_eq!(room, before);
        // After a hand-over the new master may, the old one may not.
        room.leave(&user("a"), LeaveReason::Left, at(9_100))
            .unwrap();
        assert_eq!(
            room.end(&user("a"), false, at(9_200)),
            Err(TransitionError::NotAllowedToEnd)
        );
        assert!(room.end(&user("b"), false, at(9_300)).is_ok());
        // Ending twice is refused, even by the admin.
        assert_eq!(
            room.end(&user("b"), true, at(9_400)),
            Err(TransitionError::Ended)
        );
    }

    #[test]
    fn abandon_ends_with_every_channel_released_once() {
        let mut room = room_with(4, &["b"]);
        let (events, released) = room.abandon(at(9_000)).unwrap();
        assert_eq!(released, vec![chan("a"), chan("b")]);
        assert_eq!(
            events,
            vec![VoiceEvent::VoiceEnded {
                voice_room_id: vr(),
                chat_room_id: chat(),
                reason: EndReason::Abandoned,
            }]
        );
        assert_eq!(
            room.status(),
            &RoomStatus::Ended {
                at: at(9_000),
                reason: EndReason::Abandoned
            }
        );
        assert_eq!(room.abandon(at(9_100)), Err(TransitionError::Ended));
    }

    #[test]
    fn bump_version_counts_stored_changes() {
        let mut room = room_with(4, &[]);
        room.bump_version();
        room.bump_version();
        assert_eq!(room.version(), 3);
        assert_eq!(room.clone().into_parts().version, 3);
    }

    fn good_parts() -> VoiceRoomParts {
        room_with(5, &["b", "c"]).into_parts()
    }

    fn corrupt(change: impl FnOnce(&mut VoiceRoomParts)) -> String {
        let mut parts = good_parts();
        change(&mut parts);
        VoiceRoom::from_parts(parts).unwrap_err().0
    }

    #[test]
    fn from_parts_round_trips_valid_rooms() {
        let parts = good_parts();
        assert_eq!(
            VoiceRoom::from_parts(parts.clone()).unwrap().into_parts(),
            parts
        );
        let mut ended = room_with(3, &["b"]);
        ended.end(&user("a"), false, at(9_000)).unwrap();
        let parts = ended.into_parts();
        assert_eq!(
            VoiceRoom::from_parts(parts.clone()).unwrap().into_parts(),
            parts
        );
    }

    #[test]
    fn from_parts_rejects_each_broken_invariant() {
        assert!(corrupt(|p| p.version = 0).contains("version"));
        assert!(corrupt(|p| p.participants.clear()).contains("no participants"));
        assert!(corrupt(|p| p.status = RoomStatus::Ended {
            at: at(1),
            reason: EndReason::Abandoned
        })
        .contains("ended room still has participants"));
        assert!(corrupt(|p| p.master = user("z")).contains("master is not a participant"));
        assert!(corrupt(|p| p.capacity = Capacity::new(2).unwrap()).contains("capacity"));
        assert!(corrupt(|p| {
            let dup = p.participants[0].clone();
            p.participants.push(Participant {
                connection: conn("c-other"),
                channel: chan("other"),
                ..dup
            });
        })
        .contains("appears twice"));
        assert!(corrupt(|p| {
            let shared = p.participants[0].channel.clone();
            p.participants[2].channel = shared;
        })
        .contains("shares a channel"));
        // Only the ARN identifies a channel: another name with the same ARN is the same one.
        assert!(corrupt(|p| {
            let arn = p.participants[0].channel.arn.clone();
            p.participants[1].channel = SignalingChannel {
                name: ChannelName::from_unique("renamed").unwrap(),
                arn,
            };
        })
        .contains("shares a channel"));
    }

    #[test]
    fn an_ended_room_may_name_any_master() {
        // History keeps the last master even though it is no longer a participant.
        let mut room = room_with(3, &["b"]);
        room.end(&user("a"), false, at(9_000)).unwrap();
        let mut parts = room.into_parts();
        parts.master = user("someone-else");
        assert!(VoiceRoom::from_parts(parts).is_ok());
    }

    #[test]
    fn each_joiner_is_viewer_on_every_earlier_participants_channel() {
        let room = room_with(5, &["b", "c", "d"]);
        let plan = room.plan_for(&user("c")).unwrap();
        assert_eq!(plan.user, user("c"));
        assert_eq!(plan.own_channel, chan("c"));
        assert_eq!(
            plan.peers,
            vec![
                PeerChannel {
                    user: user("a"),
                    channel: chan("a")
                },
                PeerChannel {
                    user: user("b"),
                    channel: chan("b")
                },
            ]
        );
        assert!(room.plan_for(&user("a")).unwrap().peers.is_empty());
        assert_eq!(room.plan_for(&user("d")).unwrap().peers.len(), 3);
        assert_eq!(room.plan_for(&user("z")), None);
    }

    #[test]
    fn grants_are_exactly_own_master_and_earlier_peers_viewer() {
        let room = room_with(5, &["b", "c"]);
        let grant = |s: &str, role| ChannelGrant {
            channel: chan(s).arn,
            role,
        };
        assert_eq!(
            room.plan_for(&user("c")).unwrap().grants(),
            vec![
                grant("c", ChannelRole::Master),
                grant("a", ChannelRole::Viewer),
                grant("b", ChannelRole::Viewer),
            ]
        );
        assert_eq!(
            room.plan_for(&user("a")).unwrap().grants(),
            vec![grant("a", ChannelRole::Master)]
        );
        // Never master on someone else's channel, never viewer on a later joiner's.
        for p in room.participants() {
            let grants = room.plan_for(&p.user).unwrap().grants();
            let idx = room
                .participants()
                .iter()
                .position(|q| q.user == p.user)
                .unwrap();
            for g in &grants {
                let owner = room
                    .participants()
                    .iter()
                    .position(|q| q.channel.arn == g.channel)
                    .unwrap();
                match g.role {
                    ChannelRole::Master => assert_eq!(owner, idx),
                    ChannelRole::Viewer => assert!(owner < idx),
                }
            }
            assert_eq!(grants.len(), idx + 1);
        }
    }

    #[test]
    fn the_mesh_has_one_link_per_pair_with_the_later_joiner_as_viewer() {
        for n in 1..=usize::from(MAX_CAPACITY) {
            let names: Vec<String> = (1..n).map(|i| format!("u{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let room = room_with(MAX_CAPACITY, &refs);
            let mesh = room.mesh();
            assert_eq!(mesh.len(), n * (n - 1) / 2, "n = {n}");
            let order = |u: &UserId| {
                room.participants()
                    .iter()
                    .position(|p| &p.user == u)
                    .unwrap()
            };
            let mut pairs = std::collections::HashSet::new();
            for link in &mesh {
                assert!(order(&link.master) < order(&link.viewer));
                assert_eq!(
                    link.channel,
                    room.participant(&link.master).unwrap().channel
                );
                assert!(pairs.insert((link.master.clone(), link.viewer.clone())));
                assert_eq!(
                    room.link_between(&link.viewer, &link.master).as_ref(),
                    Some(link)
                );
                assert_eq!(
                    room.link_between(&link.master, &link.viewer).as_ref(),
                    Some(link)
                );
            }
            // The mesh is the union of the plans.
            let from_plans: usize = room
                .participants()
                .iter()
                .map(|p| room.plan_for(&p.user).unwrap().peers.len())
                .sum();
            assert_eq!(from_plans, mesh.len());
        }
    }

    #[test]
    fn link_between_needs_two_distinct_current_participants() {
        let mut room = room_with(4, &["b", "c"]);
        assert_eq!(
            room.link_between(&user("c"), &user("a")),
            Some(MeshLink {
                channel: chan("a"),
                master: user("a"),
                viewer: user("c"),
            })
        );
        assert_eq!(
            room.link_between(&user("b"), &user("c")),
            Some(MeshLink {
                channel: chan("b"),
                master: user("b"),
                viewer: user("c"),
            })
        );
        assert_eq!(room.link_between(&user("a"), &user("a")), None);
        assert_eq!(room.link_between(&user("a"), &user("z")), None);
        assert_eq!(room.link_between(&user("z"), &user("a")), None);
        room.leave(&user("b"), LeaveReason::Left, at(9_000))
            .unwrap();
        assert_eq!(room.link_between(&user("b"), &user("c")), None);
        room.end(&user("a"), false, at(9_100)).unwrap();
        assert_eq!(room.link_between(&user("a"), &user("c")), None);
        assert!(room.mesh().is_empty());
    }

    #[test]
    fn events_serialise_with_the_wire_names() {
        let ev = VoiceEvent::MasterChanged {
            voice_room_id: vr(),
            chat_room_id: chat(),
            master: user("b"),
        };
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            serde_json::json!({
                "event": "masterChanged",
                "voiceRoomId": "vr-1",
                "chatRoomId": "chat-1",
                "master": "b"
            })
        );
    }

    fn share_events(events: &[VoiceEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                VoiceEvent::ScreenShareStarted { user, .. } => Some(format!("started {user}")),
                VoiceEvent::ScreenShareStopped { user, reason, .. } => Some(format!(
                    "stopped {user} {}",
                    serde_json::to_value(reason).unwrap()["kind"]
                )),
                VoiceEvent::ScreenSharePolicyChanged { policy, .. } => {
                    Some(format!("policy {}", policy.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn anyone_may_share_by_default_one_at_a_time() {
        let mut room = room_with(5, &["b", "c"]);
        assert_eq!(room.screen_share_policy(), ScreenSharePolicy::Anyone);
        let ev = room
            .start_screen_share(&user("b"), false, at(5_000))
            .unwrap();
        assert_eq!(share_events(&ev), ["started b"]);
        assert_eq!(room.screen_share().unwrap().by, user("b"));
        // Asking again changes nothing; someone else is refused while b shares.
        assert!(room
            .start_screen_share(&user("b"), false, at(5_001))
            .unwrap()
            .is_empty());
        assert_eq!(
            room.start_screen_share(&user("c"), false, at(5_002)),
            Err(TransitionError::ScreenShareBusy)
        );
        // Even the master waits for b to stop.
        assert_eq!(
            room.start_screen_share(&user("a"), true, at(5_002)),
            Err(TransitionError::ScreenShareBusy)
        );
        // Strangers are refused, as are reconnecting participants.
        assert_eq!(
            room.start_screen_share(&user("z"), false, at(5_003)),
            Err(TransitionError::NotParticipant)
        );
        let ev = room.stop_screen_share(&user("b"), false).unwrap();
        assert_eq!(share_events(&ev), ["stopped b \"stopped\""]);
        assert_eq!(
            room.stop_screen_share(&user("b"), false),
            Err(TransitionError::NotSharing)
        );
        room.mark_reconnecting(&conn("c-c"), at(6_000)).unwrap();
        assert_eq!(
            room.start_screen_share(&user("c"), false, at(6_001)),
            Err(TransitionError::NotParticipant)
        );
    }

    #[test]
    fn with_the_hosts_policy_only_the_master_and_the_admin_share() {
        let mut room = room_with(5, &["b", "c"]);
        assert_eq!(
            room.set_screen_share_policy(&user("b"), false, ScreenSharePolicy::Hosts, false),
            Err(TransitionError::NotAllowedToShare)
        );
        let ev = room
            .set_screen_share_policy(&user("a"), false, ScreenSharePolicy::Hosts, false)
            .unwrap();
        assert_eq!(share_events(&ev), ["policy hosts"]);
        assert!(room
            .set_screen_share_policy(&user("a"), false, ScreenSharePolicy::Hosts, false)
            .unwrap()
            .is_empty());
        assert_eq!(
            room.start_screen_share(&user("b"), false, at(5_000)),
            Err(TransitionError::NotAllowedToShare)
        );
        // The chat room's admin is a host wherever it sits in the room.
        room.start_screen_share(&user("c"), true, at(5_001))
            .unwrap();
        // Only the sharer, the master or the admin stop it.
        assert_eq!(
            room.stop_screen_share(&user("b"), false),
            Err(TransitionError::NotAllowedToShare)
        );
        let ev = room.stop_screen_share(&user("a"), false).unwrap();
        assert_eq!(share_events(&ev), ["stopped c \"stopped\""]);
        room.start_screen_share(&user("a"), false, at(5_002))
            .unwrap();
        assert_eq!(room.screen_share().unwrap().by, user("a"));
    }

    #[test]
    fn tightening_the_policy_stops_a_guest_share_but_not_a_host_one() {
        let mut room = room_with(5, &["b", "c"]);
        room.start_screen_share(&user("b"), false, at(5_000))
            .unwrap();
        let ev = room
            .set_screen_share_policy(&user("a"), false, ScreenSharePolicy::Hosts, false)
            .unwrap();
        assert_eq!(
            share_events(&ev),
            ["policy hosts", "stopped b \"policyChanged\""]
        );
        assert!(room.screen_share().is_none());
        room.set_screen_share_policy(&user("c"), true, ScreenSharePolicy::Anyone, false)
            .unwrap();
        // The admin sharing keeps sharing when the policy tightens.
        room.start_screen_share(&user("c"), true, at(5_001))
            .unwrap();
        let ev = room
            .set_screen_share_policy(&user("a"), false, ScreenSharePolicy::Hosts, true)
            .unwrap();
        assert_eq!(share_events(&ev), ["policy hosts"]);
        assert_eq!(room.screen_share().unwrap().by, user("c"));
    }

    #[test]
    fn the_share_ends_when_its_sharer_leaves_drops_resumes_or_the_room_ends() {
        let mut room = room_with(5, &["b", "c"]);
        room.start_screen_share(&user("b"), false, at(5_000))
            .unwrap();
        let (ev, _) = room
            .leave(&user("b"), LeaveReason::Left, at(5_100))
            .unwrap();
        assert_eq!(share_events(&ev), ["stopped b \"sharerLeft\""]);

        room.start_screen_share(&user("c"), false, at(5_200))
            .unwrap();
        let ev = room
            .mark_reconnecting(&conn("c-c"), at(5_300))
            .unwrap()
            .unwrap();
        assert_eq!(share_events(&ev), ["stopped c \"sharerDisconnected\""]);

        room.start_screen_share(&user("a"), false, at(5_400))
            .unwrap();
        let out = room
            .join(user("a"), conn("c-a2"), chan("a"), at(5_500))
            .unwrap();
        let JoinOutcome::Reconnected { events, .. } = out else {
            panic!("a resume")
        };
        assert_eq!(share_events(&events), ["stopped a \"sharerDisconnected\""]);

        room.start_screen_share(&user("a"), false, at(5_600))
            .unwrap();
        let ev = room.mark_all_reconnecting(at(5_700));
        assert_eq!(share_events(&ev), ["stopped a \"sharerDisconnected\""]);

        let mut room = room_with(5, &["b"]);
        room.start_screen_share(&user("b"), false, at(5_000))
            .unwrap();
        let (ev, _) = room.end(&user("a"), false, at(6_000)).unwrap();
        assert_eq!(share_events(&ev), ["stopped b \"roomEnded\""]);
        assert!(room.screen_share().is_none());
        assert_eq!(
            room.start_screen_share(&user("a"), false, at(6_001)),
            Err(TransitionError::Ended)
        );
        assert_eq!(
            room.set_screen_share_policy(&user("a"), false, ScreenSharePolicy::Hosts, false),
            Err(TransitionError::Ended)
        );
    }

    #[test]
    fn from_parts_refuses_a_share_nobody_connected_makes() {
        let mut parts = room_with(5, &["b"]).into_parts();
        parts.screen_share = Some(ScreenShare {
            by: user("z"),
            since: at(1),
        });
        assert!(VoiceRoom::from_parts(parts.clone())
            .unwrap_err()
            .0
            .contains("screen sharer"));
        parts.screen_share = Some(ScreenShare {
            by: user("b"),
            since: at(1),
        });
        parts.participants[1].reconnecting_since = Some(at(2));
        assert!(VoiceRoom::from_parts(parts).is_err());
        // Rooms stored before screen sharing read as `anyone`, nobody sharing.
        let old = serde_json::json!({
            "id": "vr-1", "chatRoom": "chat-1", "master": "a", "status": {"state": "active"},
            "participants": [], "capacity": 5, "version": 1, "createdAt": 1
        });
        let parts: VoiceRoomParts = serde_json::from_value(old).unwrap();
        assert_eq!(parts.screen_share_policy, ScreenSharePolicy::Anyone);
        assert!(parts.screen_share.is_none());
    }

    // Liveness (AWS): a participant whose keepalives stop is treated as disconnected.

    #[test]
    fn a_keepalive_records_the_connection_alive_at_most_once_per_interval() {
        let mut room = room_with(4, &["b"]);
        // b joined at 2_000: a keepalive sooner than the interval records nothing.
        assert_eq!(room.touch(&conn("c-b"), at(3_999)), None);
        assert_eq!(room.touch(&conn("c-b"), at(4_000)), Some(vec![]));
        assert_eq!(
            room.participant(&user("b")).unwrap().last_seen,
            Some(at(4_000))
        );
        assert_eq!(room.touch(&conn("c-b"), at(5_999)), None);
        assert_eq!(room.touch(&conn("c-b"), at(6_000)), Some(vec![]));
        assert_eq!(
            room.participant(&user("b")).unwrap().last_heard(),
            at(6_000)
        );
        // Not a participant's connection: nothing.
        assert_eq!(room.touch(&conn("c-zz"), at(60_000)), None);
    }

    #[test]
    fn a_keepalive_from_a_participant_taken_for_dead_connects_it_again() {
        let timeout = std::time::Duration::from_secs(10);
        let mut room = room_with(4, &["b"]);
        assert!(room.touch(&conn("c-a"), at(15_000)).is_some());
        // b's keepalive is late (a cold start): taken for dead as of 12_000.
        assert_eq!(room.mark_silent_reconnecting(at(15_000), timeout).len(), 1);
        assert!(room.participant(&user("b")).unwrap().is_reconnecting());
        // Its keepalive, from the same connection, arrives: b is connected again at once.
        assert_eq!(
            room.touch(&conn("c-b"), at(15_500)),
            Some(vec![VoiceEvent::ParticipantResumed {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("b"),
                client_id: Some(ClientId::parse("c-b").unwrap()),
            }])
        );
        let b = room.participant(&user("b")).unwrap();
        assert!(!b.is_reconnecting());
        assert_eq!(b.last_heard(), at(15_500));
        assert_eq!(b.channel, chan("b"), "kept its place and channel");
        // Alive for a whole timeout from then (a keeps sending): no grace runs out on it.
        assert!(room.touch(&conn("c-a"), at(25_000)).is_some());
        assert!(room
            .mark_silent_reconnecting(at(25_499), timeout)
            .is_empty());
        assert_eq!(
            room.expire_reconnecting(at(60_000), std::time::Duration::from_secs(15)),
            Ok(None)
        );
        // An ended room records nothing.
        room.end(&user("a"), false, at(30_000)).unwrap();
        assert_eq!(room.touch(&conn("c-b"), at(40_000)), None);
    }

    #[test]
    fn a_keepalive_applies_the_liveness_rule_to_its_room() {
        let timeout = Some(std::time::Duration::from_secs(10));
        let grace = std::time::Duration::from_secs(15);
        // a (master, joined at 1_000), b (2_000) and c (2_001); b goes silent, a and c keep
        // sending every 5 s.
        let mut room = room_with(4, &["b", "c"]);
        for t in [6_000, 11_000, 16_000, 21_000, 26_000] {
            let (evs, released) = room
                .apply_liveness(Some(&conn("c-a")), at(t), timeout, grace)
                .unwrap();
            assert!(released.is_empty());
            if t == 16_000 {
                // b (heard at its join, 2_000) silent for 14 s: reconnecting as of 12_000, by
                // a's keepalive.
                assert_eq!(
                    evs,
                    vec![VoiceEvent::ParticipantReconnecting {
                        voice_room_id: vr(),
                        chat_room_id: chat(),
                        user: user("b"),
                    }]
                );
            } else {
                assert!(evs.is_empty(), "only a touch at {t}: {evs:?}");
            }
            let (evs, _) = room
                .apply_liveness(Some(&conn("c-c")), at(t), timeout, grace)
                .unwrap();
            assert!(evs.is_empty(), "{evs:?}");
            // A second keepalive within the touch interval finds nothing to change: no write.
            assert_eq!(
                room.apply_liveness(Some(&conn("c-a")), at(t + 500), timeout, grace),
                None
            );
        }
        assert_eq!(
            room.participant(&user("b")).unwrap().reconnecting_since,
            Some(at(12_000))
        );
        // A request from a connection that is no participant's proves nothing and changes
        // nothing, even with b's grace over.
        assert_eq!(
            room.apply_liveness(Some(&conn("c-zz")), at(27_000), timeout, grace),
            None
        );
        // c's keepalive at 27_000 (15 s after b was overdue) removes b, no sweep needed.
        let (evs, released) = room
            .apply_liveness(Some(&conn("c-c")), at(27_000), timeout, grace)
            .unwrap();
        assert_eq!(
            evs,
            vec![VoiceEvent::ParticipantLeft {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("b"),
                reason: LeaveReason::Disconnected,
            }]
        );
        assert_eq!(released, vec![chan("b")]);
        assert_eq!(users(&room), vec!["a", "c"]);
        // The same rule without a keepalive (the sweep), when everyone went silent: a's grace
        // and c's pass, and the room ends with the last.
        let (evs, released) = room
            .apply_liveness(None, at(100_000), timeout, grace)
            .unwrap();
        assert!(
            evs.contains(&VoiceEvent::VoiceEnded {
                voice_room_id: vr(),
                chat_room_id: chat(),
                reason: EndReason::LastParticipantLeft,
            }),
            "{evs:?}"
        );
        assert_eq!(released.len(), 2);
        assert!(!room.is_active());
        assert_eq!(room.apply_liveness(None, at(200_000), timeout, grace), None);
    }

    #[test]
    fn a_participant_silent_for_the_timeout_becomes_reconnecting_from_when_it_was_overdue() {
        let timeout = std::time::Duration::from_secs(50);
        let grace = std::time::Duration::from_secs(15);
        let mut room = room_with(4, &["b", "c"]);
        // a and c keep sending keepalives; b (joined at 2_000) goes silent.
        for t in [20_000, 40_000, 60_000] {
            assert!(room.touch(&conn("c-a"), at(t)).is_some());
            assert!(room.touch(&conn("c-c"), at(t)).is_some());
        }
        assert!(room
            .mark_silent_reconnecting(at(51_999), timeout)
            .is_empty());
        let evs = room.mark_silent_reconnecting(at(70_000), timeout);
        assert_eq!(
            evs,
            vec![VoiceEvent::ParticipantReconnecting {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("b"),
            }]
        );
        let b = room.participant(&user("b")).unwrap();
        assert_eq!(b.reconnecting_since, Some(at(52_000)));
        // Once: b is reconnecting now, a and c were heard at 60_000.
        assert!(room
            .mark_silent_reconnecting(at(70_000), timeout)
            .is_empty());
        // The grace counts from when b was overdue, so one sweep can remove it.
        let (evs, released) = room
            .expire_reconnecting(at(67_000), grace)
            .unwrap()
            .unwrap();
        assert!(evs.contains(&VoiceEvent::ParticipantLeft {
            voice_room_id: vr(),
            chat_room_id: chat(),
            user: user("b"),
            reason: LeaveReason::Disconnected,
        }));
        assert_eq!(released, vec![chan("b")]);
        assert_eq!(users(&room), vec!["a", "c"]);
    }

    #[test]
    fn a_silent_master_is_handed_over_and_a_room_of_silent_people_ends() {
        let timeout = std::time::Duration::from_secs(50);
        let grace = std::time::Duration::from_secs(15);
        let mut room = room_with(4, &["b"]);
        assert!(room.touch(&conn("c-b"), at(40_000)).is_some());
        let evs = room.mark_silent_reconnecting(at(60_000), timeout);
        assert_eq!(evs.len(), 1, "only the master a is overdue: {evs:?}");
        room.expire_reconnecting(at(66_000), grace)
            .unwrap()
            .unwrap();
        assert_eq!(room.master(), &user("b"));
        assert!(room.is_active());
        let evs = room.mark_silent_reconnecting(at(200_000), timeout);
        assert_eq!(evs.len(), 1);
        room.expire_reconnecting(at(200_000), grace)
            .unwrap()
            .unwrap();
        assert!(!room.is_active());
        assert!(room
            .mark_silent_reconnecting(at(900_000), timeout)
            .is_empty());
        assert_eq!(room.touch(&conn("c-b"), at(900_000)), None);
    }

    #[test]
    fn a_resumed_participant_is_alive_from_its_resume() {
        let timeout = std::time::Duration::from_secs(50);
        let mut room = room_with(4, &["b"]);
        room.mark_reconnecting(&conn("c-b"), at(5_000)).unwrap();
        let out = room
            .join(user("b"), conn("c-b2"), chan("b"), at(100_000))
            .unwrap();
        assert!(matches!(out, JoinOutcome::Reconnected { .. }));
        assert_eq!(
            room.participant(&user("b")).unwrap().last_heard(),
            at(100_000)
        );
        let evs = room.mark_silent_reconnecting(at(120_000), timeout);
        // a (never heard after its join at 1_000) is overdue; b, resumed at 100_000, is not.
        assert_eq!(
            evs,
            vec![VoiceEvent::ParticipantReconnecting {
                voice_room_id: vr(),
                chat_room_id: chat(),
                user: user("a"),
            }]
        );
    }

    #[test]
    fn participants_stored_before_liveness_read_as_heard_at_their_join() {
        let room = room_with(4, &["b"]);
        let b = room.participant(&user("b")).unwrap().clone();
        let json = serde_json::to_value(&b).unwrap();
        assert!(
            !json.as_object().unwrap().contains_key("last_seen"),
            "{json}"
        );
        let back: Participant = serde_json::from_value(json).unwrap();
        assert_eq!(back.last_heard(), at(2_000));
    }
}
