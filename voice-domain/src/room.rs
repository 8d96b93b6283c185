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

use crate::ids::{ChannelArn, ChannelName, ChatRoomId, ConnectionId, UserId, VoiceRoomId};
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
}

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
}

impl VoiceEvent {
    /// The chat room whose connections should hear of this event.
    pub fn chat_room_id(&self) -> &ChatRoomId {
        match self {
            VoiceEvent::VoiceStarted { chat_room_id, .. }
            | VoiceEvent::ParticipantJoined { chat_room_id, .. }
            | VoiceEvent::ParticipantLeft { chat_room_id, .. }
            | VoiceEvent::MuteChanged { chat_room_id, .. }
            | VoiceEvent::MasterChanged { chat_room_id, .. }
            | VoiceEvent::VoiceEnded { chat_room_id, .. } => chat_room_id,
        }
    }
}

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
    /// The channel given to a joiner is already someone else's.
    #[error("the signaling channel is already used by another participant")]
    ChannelInUse,
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
    /// The user was already in the room on another connection, which is replaced by this one;
    /// it keeps its channel. The old connection is returned.
    Reconnected {
        /// The connection the participant had before.
        previous: ConnectionId,
    },
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
                }],
                capacity,
                version: 1,
                created_at: now,
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
            if p.connection == connection {
                return Ok(JoinOutcome::AlreadyJoined);
            }
            let previous = std::mem::replace(&mut p.connection, connection);
            return Ok(JoinOutcome::Reconnected { previous });
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
        self.parts.participants.push(Participant {
            user: user.clone(),
            connection,
            channel,
            joined_at: now,
            muted: false,
        });
        Ok(JoinOutcome::Joined(vec![VoiceEvent::ParticipantJoined {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user,
            muted: false,
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
        let mut events = vec![VoiceEvent::ParticipantLeft {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            user: gone.user.clone(),
            reason,
        }];
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
    /// [`TransitionError::Ended`] or [`TransitionError::NotParticipant`].
    pub fn set_muted(
        &mut self,
        user: &UserId,
        muted: bool,
    ) -> Result<Vec<VoiceEvent>, TransitionError> {
        if !self.is_active() {
            return Err(TransitionError::Ended);
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
        }])
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
        let events = vec![VoiceEvent::VoiceEnded {
            voice_room_id: self.parts.id.clone(),
            chat_room_id: self.parts.chat_room.clone(),
            reason,
        }];
        (events, channels)
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
