//! The use cases: what a caller can ask of voice rooms, over whatever adapters a deployment uses.
//!
//! Each use case reads, decides with a pure [`VoiceRoom`] transition, writes with a
//! compare-and-set, cleans up what it created if it cannot finish, and only then tells the chat
//! room. The order matters:
//! - a channel is acquired (claimed from the pool, or created) before the room records it, and
//!   given back (or deleted, without a pool) if the record fails, so no billed channel is left
//!   without a room or the pool (and the sweep catches what a crash leaves);
//! - a channel a participant no longer holds goes back into the pool in quarantine
//!   ([`LeasePolicy::free_from`]) rather than being deleted, so it is reused once no credential
//!   issued for it can be used any more; without a pool it is deleted;
//! - credentials are issued before the join is recorded, so a failed issue leaves no participant
//!   without credentials;
//! - notifications go out after the write and never fail the use case; a connection reported
//!   "gone" is removed from its voice room like a disconnect.
//! - a store write that reports a failure is read back before anything is cleaned up, since a
//!   timeout may hide a write that landed: deleting the channel of a participant who was stored
//!   after all would break the room, while a channel kept when in doubt is only an orphan, which
//!   the sweep deletes.

use futures_util::future::{join, select, try_join3, try_join_all, Either};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::errors::{
    AccessError, DependencyError, DisconnectError, EndVoiceError, GetVoiceRoomError,
    JoinVoiceError, LeaveVoiceError, PortName, RestartError, ServerMuteError, SetMuteError,
    StartVoiceError, SweepError,
};
use crate::errors::{
    RecorderUploadError, RecordingAccessError, RecordingUploadError, StartRecordingError,
    StopRecordingError,
};
use crate::ids::{ChannelArn, ChatRoomId, ClientId, ConnectionId, UserId, VoiceRoomId};
use crate::pool::{
    ChannelLease, ChannelPool, LeaseHolder, LeasePolicy, PoolError, PoolSlot,
    DEFAULT_IDLE_EVICTION, KVS_SESSION_CAP,
};
use crate::ports::{
    Adapters, ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, Clock, CredentialIssuer,
    CredentialRequest, IdGenerator, IssuedCredentials, Membership, Notifier, NotifyError,
    PortFailure, Ports, SignalingChannels, StoreError, VoiceRoomStore,
};
use crate::recording::RecordingId;
use crate::room::{
    Capacity, ChannelGrant, ChannelRole, JoinOutcome, LeaveReason, SignalingChannel,
    TransitionError, VoiceEvent, VoiceRoom,
};
use crate::time::Timestamp;

/// `startScreenShare`, `stopScreenShare` and `setScreenSharePolicy` (see [`crate::screen`]).
mod screen_share;
mod teardown;

pub use teardown::TeardownReport;

/// The longest credentials may live: KVS signaling connections last at most an hour, and
/// credentials from a role assumed by a Lambda are role-chained, which STS caps at an hour.
pub const MAX_CREDENTIAL_TTL: Duration = Duration::from_secs(3600);

/// Tunables of the service, with the defaults a deployment gets unless it says otherwise.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Participants per room (default 10, the KVS limit).
    pub capacity: Capacity,
    /// Credential lifetime (default and maximum one hour).
    pub credential_ttl: Duration,
    /// How many times a compare-and-set is retried after a concurrent change (default 16).
    pub cas_retries: u32,
    /// Channels younger than this are never swept, since a join may be about to record them
    /// (default five minutes).
    pub orphan_grace: Duration,
    /// How long a participant whose connection went away keeps its place, waiting for the same
    /// user to resume from a new connection (default 30 s). Once it has passed, the sweep removes
    /// the participant as a leave with reason `disconnected`. Zero means no resume: a disconnect
    /// is a leave at once, as before resume existed.
    pub reconnect_grace: Duration,
    /// How long a signaling connection may outlive the credential that opened it (default
    /// [`KVS_SESSION_CAP`], one hour): part of a pooled channel's quarantine.
    pub channel_session_cap: Duration,
    /// How long a pooled channel may stay free and unused before the sweep deletes it
    /// (default [`DEFAULT_IDLE_EVICTION`], seven days).
    pub channel_idle_eviction: Duration,
    /// How long a participant's connection may go without a keepalive before it is treated as
    /// disconnected (reconnecting, then removed after the reconnect grace), by the others'
    /// keepalives to its room or by the sweep ([`VoiceRoom::apply_liveness`]). `None` (the
    /// default): the deployment sees its connections' liveness itself and reports a dead one
    /// through [`VoiceService::on_disconnect`] (the self-hosted server pings every WebSocket).
    /// The Lambda sets it (default [`DEFAULT_LIVENESS_TIMEOUT`]): API Gateway does not ping
    /// clients, so a half-open connection would otherwise stay listed until API Gateway's
    /// 10-minute idle close. A keepalive is `getVoiceRoom` from the participant's connection.
    pub liveness_timeout: Option<Duration>,
}

/// The [`ServiceConfig::liveness_timeout`] the Lambda uses unless told otherwise: the web client
/// sends a keepalive every 5 s while in voice, so this is two periods (one late keepalive is no
/// false alarm, and a participant wrongly taken for dead is connected again by its next one).
/// Since every keepalive applies the rule to its room, a silently dead participant is
/// reconnecting at most 10 + 5 s after its last keepalive (the timeout, then the others' next
/// keepalive) and gone once the reconnect grace (15 s) has passed since it was overdue: within
/// about 10 + 15 + 5 = 30 s.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ServiceConfig::reconnect_grace`]: long enough for a Wi-Fi/cellular switch, a
/// page reload or a server restart, short enough that a participant who really left does not
/// linger in everyone's list.
pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(15);

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            capacity: Capacity::default(),
            credential_ttl: MAX_CREDENTIAL_TTL,
            cas_retries: 16,
            orphan_grace: Duration::from_secs(300),
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
            channel_session_cap: KVS_SESSION_CAP,
            channel_idle_eviction: DEFAULT_IDLE_EVICTION,
            liveness_timeout: None,
        }
    }
}

/// Access to one signaling channel in one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAccess {
    /// The channel.
    pub channel: SignalingChannel,
    /// The role to take on it.
    pub role: ChannelRole,
    /// Where to connect, and the ICE servers.
    pub endpoints: ChannelEndpoints,
}

/// A channel of an earlier participant, which the joiner connects to as viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAccess {
    /// The earlier participant.
    pub user: UserId,
    /// Its channel, role viewer.
    pub access: ChannelAccess,
}

/// What `getVoiceCredentials` returns: the room, the caller's connection plan with endpoints,
/// and credentials scoped to exactly that plan.
#[derive(Debug, Clone)]
pub struct VoiceGrant {
    /// The room after the join.
    pub room: VoiceRoom,
    /// The caller.
    pub user: UserId,
    /// The caller's KVS client id (derived from its connection).
    pub client_id: ClientId,
    /// Own channel, role master.
    pub own: ChannelAccess,
    /// Earlier participants' channels, role viewer, in join order.
    pub peers: Vec<PeerAccess>,
    /// Credentials for exactly `own` and `peers`.
    pub credentials: IssuedCredentials,
    /// When the service issued them, by the service's clock: with `credentials.expires_at` it
    /// gives the lifetime without trusting the client's clock (a browser's clock may be off by
    /// hours, which would make "expires_at - now" meaningless there).
    pub issued_at: Timestamp,
    /// Whether this call added the caller (false for a refresh).
    pub newly_joined: bool,
}

/// What a disconnect changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectReport {
    /// Rooms the connection was removed from (only with a zero reconnect grace).
    pub rooms_left: Vec<VoiceRoomId>,
    /// Rooms in which the connection's participant is now reconnecting.
    pub rooms_reconnecting: Vec<VoiceRoomId>,
}

/// What a sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Rooms ended because nobody live was in them.
    pub rooms_ended: Vec<VoiceRoomId>,
    /// Participants removed because their reconnect grace had passed (or, with a zero grace,
    /// because their connection was gone).
    pub participants_removed: usize,
    /// Participants marked reconnecting because their connection was found gone (a missed
    /// `$disconnect`).
    pub participants_reconnecting: usize,
    /// Orphan channels deleted.
    pub channels_deleted: usize,
    /// Pooled channels held by no participant (a join that claimed one and never recorded its
    /// participant, a release that failed) put back into the pool, in quarantine.
    pub leases_reclaimed: usize,
    /// Pooled channels deleted because they were unused longer than the idle eviction.
    pub channels_evicted: usize,
    /// Steps that failed and will be tried again by the next sweep.
    pub failures: usize,
}

/// What [`VoiceService`]'s liveness step did to one room (the sweep's, or a keepalive's).
struct LivenessApplied {
    /// The room as it is now (as read if nothing was written).
    room: VoiceRoom,
    /// The events to publish.
    events: Vec<VoiceEvent>,
    /// Participants it marked reconnecting (silent past the liveness timeout).
    reconnecting: usize,
    /// Participants it removed (reconnecting past the grace).
    removed: usize,
    /// Whether it ended the room (its last participant removed).
    ended: bool,
}

/// Refusal of the membership gate, before conversion into a use case's error.
enum GateError {
    Access(AccessError),
    Dependency(DependencyError),
}

impl From<DependencyError> for GateError {
    fn from(e: DependencyError) -> Self {
        Self::Dependency(e)
    }
}

impl From<GateError> for StartVoiceError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Access(a) => Self::Access(a),
            GateError::Dependency(d) => Self::Dependency(d),
        }
    }
}

impl From<GateError> for GetVoiceRoomError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Access(a) => Self::Access(a),
            GateError::Dependency(d) => Self::Dependency(d),
        }
    }
}

impl From<GateError> for JoinVoiceError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Access(a) => Self::Access(a),
            GateError::Dependency(d) => Self::Dependency(d),
        }
    }
}

/// Why the endpoints and credentials of a join's plan could not be assembled.
enum GrantError {
    /// A channel of the plan does not exist: the plan may be stale (a peer left, the room
    /// ended); the error to report if it is not, and the channel.
    Vanished(JoinVoiceError, SignalingChannel),
    /// Any other failure.
    Failed(JoinVoiceError),
}

/// What a `getVoiceCredentials` may do for a caller who is not a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinMode {
    /// Join them (the original's behaviour; also a refresh or a resume for a participant).
    JoinOrRefresh,
    /// Refuse ([`JoinVoiceError::NotParticipant`]): the caller only meant to refresh.
    RefreshOnly,
}

/// The channel a join acquired for its caller, until the join is recorded.
#[derive(Default)]
struct Acquired {
    /// The channel, if one was acquired and may have to be given back.
    channel: Option<SignalingChannel>,
    /// Whether the signaling service said it does not exist.
    vanished: bool,
    /// Whether the pool was already asked (and had nothing, if `channel` is `None`): the next
    /// acquisition creates a channel without asking again.
    pool_tried: bool,
}

/// What one join has fetched so far, reused when it loses a race and tries again: endpoints do
/// not change during a channel's life, the own channel's TURN credentials last minutes, and
/// credentials for the same (channel, role) pairs are still exactly the right ones. A lost race
/// then costs only what the new plan adds (usually the winner's channel and new credentials).
#[derive(Default)]
struct GrantCache {
    /// (channel, role) → its access.
    access: HashMap<(SignalingChannel, ChannelRole), ChannelAccess>,
    /// The last credentials, the exact grants they allow and when they were issued.
    credentials: Option<(Vec<ChannelGrant>, IssuedCredentials, Timestamp)>,
}

/// Why a compare-and-set modification did not happen.
enum ModifyError {
    NotFound,
    Rejected(TransitionError),
    Dependency(DependencyError),
}

/// The voice-room use cases over one set of adapters. Cheap to share behind an `Arc`; every
/// method takes `&self`.
pub struct VoiceService<P: Ports> {
    ports: Adapters<P>,
    config: ServiceConfig,
}

impl<P: Ports> VoiceService<P> {
    /// A service over `ports` with `config`. The credential TTL is capped at one hour.
    pub fn new(ports: Adapters<P>, mut config: ServiceConfig) -> Self {
        config.credential_ttl = config.credential_ttl.min(MAX_CREDENTIAL_TTL);
        Self { ports, config }
    }

    /// The adapters, for entrypoints that also need them directly (the self-hosted server's
    /// relay reads the store to route signaling messages).
    pub fn ports(&self) -> &Adapters<P> {
        &self.ports
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// `createVoiceRoom`: an approved member of `chat_room` starts a voice room and becomes its
    /// master and first participant. Everyone in the chat room is told.
    ///
    /// # Errors
    /// [`StartVoiceError`]: not identified / not approved, a room already active (with its id),
    /// or a dependency failure, after which no channel and no room are left behind.
    #[tracing::instrument(skip(self), fields(connection_id = %caller, chat_room_id = %chat_room))]
    pub async fn start_voice(
        &self,
        caller: &ConnectionId,
        chat_room: &ChatRoomId,
    ) -> Result<VoiceRoom, StartVoiceError> {
        let (user, _) = self.approved_member(caller, chat_room).await?;
        if let Some(active) = self.ports.store.active_in_chat_room(chat_room).await? {
            return Err(StartVoiceError::AlreadyActive {
                voice_room_id: active.id().clone(),
            });
        }
        let voice_room_id = self.ports.ids.voice_room_id();
        let tags = ChannelTags {
            chat_room: chat_room.clone(),
            voice_room: voice_room_id.clone(),
            owner: user.clone(),
        };
        let channel = self.acquire_channel(&tags, true).await?;
        let (room, events) = VoiceRoom::start(
            voice_room_id,
            chat_room.clone(),
            user,
            caller.clone(),
            channel.clone(),
            self.config.capacity,
            self.ports.clock.now(),
        );
        match self.ports.store.create_if_none_active(&room).await {
            Ok(()) => {}
            Err(StoreError::AlreadyActive { existing }) => {
                self.discard_unused(room.id(), &channel, false).await;
                return Err(StartVoiceError::AlreadyActive {
                    voice_room_id: existing,
                });
            }
            // A failure may hide a write that landed (a timeout after the write): deleting the
            // channel then would leave a stored master without its channel. The room id is
            // fresh, so the room existing at all means the write landed.
            Err(e @ StoreError::Unavailable(_)) => match self.ports.store.get(room.id()).await {
                Ok(Some(_)) => {
                    warn!(error = %e, voice_room_id = %room.id(), "room create reported a failure but landed");
                }
                Ok(None) => {
                    self.discard_unused(room.id(), &channel, false).await;
                    return Err(e.into());
                }
                Err(check) => {
                    // Unknown: keep the channel. If the room was not stored, it is an orphan
                    // (tagged), which the sweep deletes after the grace period.
                    warn!(error = %check, channel = %channel.name, "cannot tell whether the room was stored; leaving its channel to the sweep");
                    return Err(e.into());
                }
            },
            Err(e) => {
                self.discard_unused(room.id(), &channel, false).await;
                return Err(e.into());
            }
        }
        info!(voice_room_id = %room.id(), "voice room started");
        self.publish(events).await;
        Ok(room)
    }

    /// `getVoiceCredentials`: joins the caller to the room (or refreshes its credentials if it
    /// is in already) and returns its connection plan with endpoints and credentials scoped to
    /// exactly that plan.
    ///
    /// # Errors
    /// [`JoinVoiceError`]: not identified / not approved, no such room, ended, full, or a
    /// dependency failure, after which no channel and no participant are left behind.
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn join_voice(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceGrant, JoinVoiceError> {
        self.join_or_refresh(caller, voice_room, JoinMode::JoinOrRefresh)
            .await
    }

    /// `getVoiceCredentials` with `"refresh": true`: as [`Self::join_voice`] for a participant
    /// (a refresh, or a resume from another connection of the same user), but never a new
    /// join. A page refreshes on a timer; a refresh it sent just before leaving may be handled
    /// after the leave (AWS runs one connection's requests in parallel), and as a join it would
    /// bring back a participant whose page has gone: listed, called by every newcomer, never
    /// answering.
    ///
    /// # Errors
    /// As [`Self::join_voice`], plus [`JoinVoiceError::NotParticipant`] when the caller's user
    /// is not (or no longer) a participant; nothing is written then.
    #[tracing::instrument(skip_all, fields(voice_room_id = %voice_room))]
    pub async fn refresh_voice(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceGrant, JoinVoiceError> {
        self.join_or_refresh(caller, voice_room, JoinMode::RefreshOnly)
            .await
    }

    async fn join_or_refresh(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
        mode: JoinMode,
    ) -> Result<VoiceGrant, JoinVoiceError> {
        // With a pool, a join looks for a claimable channel (a read, which changes nothing)
        // while the caller and the room are read, and claims that one candidate beside the
        // gate (issue 14). Not for a refresh, which never needs a new channel. (A resume from
        // a new connection, or a caller refused later, makes this read for nothing: it claims
        // nothing, so there is nothing to give back.)
        let looks = mode == JoinMode::JoinOrRefresh && self.ports.pool.is_pooling();
        let find = async {
            if looks {
                Some(self.ports.pool.find(self.ports.clock.now()).await)
            } else {
                None
            }
        };
        let (lookup, found) = join(self.caller_and_room(caller, voice_room), find).await;
        let (user, room) = lookup.map_err(|e| match e {
            Lookup::NotIdentified => AccessError::NotIdentified.into(),
            Lookup::NotFound => JoinVoiceError::VoiceRoomNotFound,
            Lookup::Dependency(d) => JoinVoiceError::Dependency(d),
        })?;
        if mode == JoinMode::RefreshOnly && room.is_active() && room.participant(&user).is_none() {
            return Err(JoinVoiceError::NotParticipant);
        }
        let client_id = ClientId::from_connection(caller);
        let mut created = Acquired::default();
        // With a pool, a joiner who needs a channel claims a free one while the gate is asked:
        // independent reads/writes in one round trip instead of in a row (issue 14). The
        // candidate was found beside the first reads, so the claim is one conditional write.
        // Only the pool's claim is speculative, never a creation (nor any call to the channels
        // service or the credential issuer), and a claim for a caller the gate refuses goes
        // back at once, free (no credential was issued for it).
        if self.ports.pool.is_pooling()
            && room.is_active()
            && room.participant(&user).is_none()
            && !room.is_full()
        {
            let tags = ChannelTags {
                chat_room: room.chat_room().clone(),
                voice_room: room.id().clone(),
                owner: user.clone(),
            };
            let gate = self.gate(&user, room.chat_room());
            let (gate, claim) = match found {
                // Nothing claimable a moment ago: the join creates a channel once the gate
                // has passed, without asking the pool again.
                Some(Ok(None)) => {
                    created.pool_tried = true;
                    (gate.await, Ok(None))
                }
                // A candidate: claim it if it is still free. If another claim took it first,
                // `created.pool_tried` stays false, so the join claims as before (a new look
                // and claim) or creates.
                Some(Ok(Some(arn))) => {
                    let (gate, claim) = join(gate, self.claim_found_pooled(&arn, &tags)).await;
                    if matches!(claim, Ok(Some(_))) {
                        created.pool_tried = true;
                    }
                    (gate, claim)
                }
                // The look-up failed (or was not made): look and claim beside the gate.
                Some(Err(_)) | None => {
                    created.pool_tried = true;
                    join(gate, self.claim_pooled(&tags)).await
                }
            };
            match (gate, claim) {
                (Ok(_), Ok(ch)) => created.channel = ch,
                (Ok(_), Err(e)) => return Err(e.into()),
                (Err(refused), Ok(Some(ch))) => {
                    self.discard_unused(voice_room, &ch, false).await;
                    return Err(refused.into());
                }
                (Err(refused), Err(_)) | (Err(refused), Ok(None)) => return Err(refused.into()),
            }
        } else {
            self.gate(&user, room.chat_room()).await?;
        }
        let client_id = match client_id {
            Ok(id) => id,
            Err(e) => {
                if let Some(ch) = created.channel.take() {
                    self.discard_unused(voice_room, &ch, false).await;
                }
                return Err(DependencyError::new(
                    PortName::Channels,
                    PortFailure::permanent(e.to_string()),
                )
                .into());
            }
        };

        // The audience of the join's event (`participantJoined`, or `participantResumed` for a
        // resume from another connection) is read while the join runs, once per join (not per
        // compare-and-set retry), so that after the room write the reply waits only for the
        // posts (issue 14). Only once the gate has passed, and only when the join is expected
        // to tell anyone: a refresh on the same connection publishes nothing.
        // The cost: a connection that opens in the chat room between this read and the post
        // (a few round trips, ~150 ms on AWS; longer if the compare-and-set is retried) misses
        // this one event. A client reads the voice room when it opens the chat room, which
        // covers it unless that read, too, came before the room write: then its list lacks
        // the joiner until the room's next event (a join of its own reads the room afresh).
        let chat_room = room.chat_room().clone();
        let tells = room.is_active()
            && room
                .participant(&user)
                .map_or(mode == JoinMode::JoinOrRefresh, |p| {
                    &p.connection != caller || p.is_reconnecting()
                });
        let audience = async {
            if !tells {
                return None;
            }
            match self.ports.directory.connections_of(&chat_room).await {
                Ok(targets) => Some(targets),
                Err(e) => {
                    // Read again when publishing, as any other use case does.
                    debug!(error = %e, "could not read the chat room's connections ahead of the join");
                    None
                }
            }
        };
        let (result, audience) = {
            let work =
                std::pin::pin!(self.join_loop(room, &user, caller, &client_id, &mut created, mode));
            let audience = std::pin::pin!(audience);
            match select(work, audience).await {
                Either::Left((result, pending)) => {
                    // Wait for the audience only if there is something to tell.
                    let audience = match &result {
                        Ok((_, events)) if !events.is_empty() => pending.await,
                        _ => None,
                    };
                    (result, audience)
                }
                Either::Right((audience, work)) => (work.await, audience),
            }
        };
        // A channel acquired for this join but not recorded for it never reached anyone: its
        // credentials were dropped unsent. (A concurrent join from another tab may have won
        // with its own channel.)
        let unused = match &result {
            Ok((grant, _)) => created.channel.filter(|ch| *ch != grant.own.channel),
            Err(_) => created.channel,
        };
        if let Some(ch) = unused {
            self.discard_unused(voice_room, &ch, created.vanished).await;
        }
        let (grant, events) = result?;
        self.publish_to(events, audience.map(|targets| (chat_room, targets)))
            .await;
        Ok(grant)
    }

    async fn join_loop(
        &self,
        mut room: VoiceRoom,
        user: &UserId,
        caller: &ConnectionId,
        client_id: &ClientId,
        created: &mut Acquired,
        mode: JoinMode,
    ) -> Result<(VoiceGrant, Vec<VoiceEvent>), JoinVoiceError> {
        let mut cache = GrantCache::default();
        for _ in 0..=self.config.cas_retries {
            // A channel created on this attempt, not yet recorded in the pool.
            let mut to_record: Option<ChannelLease> = None;
            if !room.is_active() {
                return Err(JoinVoiceError::Ended);
            }
            let channel = match room.participant(user) {
                Some(p) => p.channel.clone(),
                // Checked on every attempt: a leave may land between two.
                None if mode == JoinMode::RefreshOnly => {
                    return Err(JoinVoiceError::NotParticipant)
                }
                None if room.is_full() => {
                    return Err(JoinVoiceError::RoomFull {
                        capacity: room.capacity().get(),
                    })
                }
                None => match &created.channel {
                    Some(ch) => ch.clone(),
                    None => {
                        let tags = ChannelTags {
                            chat_room: room.chat_room().clone(),
                            voice_room: room.id().clone(),
                            owner: user.clone(),
                        };
                        // A new channel is recorded in the pool beside the grant below,
                        // not before it (issue 14: a pool miss waits one round trip less).
                        let (ch, lease) = self.new_channel(&tags, !created.pool_tried).await?;
                        created.pool_tried = true;
                        to_record = lease;
                        created.channel.insert(ch).clone()
                    }
                },
            };
            let mut next = room.clone();
            let outcome = match next.join(
                user.clone(),
                caller.clone(),
                channel.clone(),
                self.ports.clock.now(),
            ) {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Record the new channel first, so that it goes back to the pool.
                    if let Some(lease) = to_record.take() {
                        self.record_new(&lease, created).await?;
                    }
                    return Err(match e {
                        TransitionError::Full { capacity } => JoinVoiceError::RoomFull { capacity },
                        _ => JoinVoiceError::Ended,
                    });
                }
            };
            // The endpoints and credentials, and (for a channel just created) its record in
            // the pool, at once: all of them finish before the room write, so no channel is
            // left without a participant or the pool, and none is named in a reply unrecorded.
            let granted = self.grant_for(&next, user, caller, client_id, &mut cache);
            let granted = match to_record.take() {
                Some(lease) => {
                    let (granted, recorded) = join(granted, self.record_new(&lease, created)).await;
                    recorded?;
                    granted
                }
                None => granted.await,
            };
            let (own, peers, credentials, issued_at) = match granted {
                Ok(grant) => grant,
                Err(GrantError::Vanished(e, gone)) => {
                    // A channel of the plan is gone: a peer left, or the room ended, after
                    // the room was read. A changed room gives a new plan (or `Ended`); an
                    // unchanged one means the channel really vanished (a pooled channel
                    // deleted behind the pool's back must then leave the pool).
                    if created.channel.as_ref() == Some(&gone) {
                        created.vanished = true;
                    }
                    let now = self
                        .ports
                        .store
                        .get(room.id())
                        .await?
                        .ok_or(JoinVoiceError::VoiceRoomNotFound)?;
                    if now.version() != room.version() {
                        debug!("a channel of the plan vanished with a concurrent change; retrying");
                        room = now;
                        continue;
                    }
                    return Err(e);
                }
                Err(GrantError::Failed(e)) => return Err(e),
            };
            let newly_joined = matches!(outcome, JoinOutcome::Joined(_));
            if outcome == JoinOutcome::AlreadyJoined && self.ports.pool.is_pooling() {
                // A refresh writes nothing, so nothing proves that the peers' channels in its
                // plan were still held when the credentials were issued: a peer may have left
                // (and released its channel into quarantine) in between, and credentials
                // issued after a release would outlive the quarantine. Read again: an
                // unchanged room means every channel of the plan was held after the issue.
                let now = self
                    .ports
                    .store
                    .get(room.id())
                    .await?
                    .ok_or(JoinVoiceError::VoiceRoomNotFound)?;
                if now.version() != room.version() {
                    debug!("the room changed while refreshing; issuing again for the new plan");
                    room = now;
                    continue;
                }
            }
            if outcome != JoinOutcome::AlreadyJoined {
                next.bump_version();
                match self.ports.store.update(&next).await {
                    Ok(()) => {}
                    Err(StoreError::VersionConflict) => {
                        debug!("concurrent change while joining; retrying");
                        room = self
                            .ports
                            .store
                            .get(next.id())
                            .await?
                            .ok_or(JoinVoiceError::VoiceRoomNotFound)?;
                        continue;
                    }
                    Err(StoreError::NotFound) => return Err(JoinVoiceError::VoiceRoomNotFound),
                    Err(e @ StoreError::Unavailable(_)) => {
                        // The write may have landed anyway (a timeout after the write).
                        let own = &channel;
                        match self.ports.store.get(next.id()).await {
                            Ok(Some(stored))
                                if stored.participant(user).is_some_and(|p| {
                                    &p.channel == own && &p.connection == caller
                                }) =>
                            {
                                warn!(error = %e, "join reported a failure but landed");
                            }
                            Ok(stored) => {
                                // Never delete a channel a stored participant holds.
                                if stored.is_some_and(|r| {
                                    r.participants().iter().any(|p| &p.channel == own)
                                }) {
                                    created.channel = None;
                                }
                                return Err(e.into());
                            }
                            Err(check) => {
                                // Unknown: keep the channel; if nobody holds it, the sweep
                                // deletes it after the grace period.
                                warn!(error = %check, "cannot tell whether the join was stored; leaving its channel to the sweep");
                                created.channel = None;
                                return Err(e.into());
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // The caller publishes the events, to the audience it read beside this loop.
            let events = match outcome {
                JoinOutcome::Joined(events) => {
                    info!(user_id = %user, "participant joined");
                    events
                }
                JoinOutcome::Reconnected { events, .. } => {
                    info!(user_id = %user, "participant resumed on a new connection");
                    events
                }
                JoinOutcome::AlreadyJoined => Vec::new(),
            };
            let grant = VoiceGrant {
                room: next,
                user: user.clone(),
                client_id: client_id.clone(),
                own,
                peers,
                credentials,
                issued_at,
                newly_joined,
            };
            return Ok((grant, events));
        }
        Err(StoreError::VersionConflict.into())
    }

    /// Endpoints for every channel of `user`'s plan, and credentials for exactly those (with
    /// when they were issued), reusing what `cache` holds from an earlier try of the same join.
    ///
    /// Every link of the joiner uses its own channel's ICE servers (docs/deploy-aws.md, "TURN
    /// allocations"): TURN is asked for on the own channel only, and each peer's access carries
    /// the own channel's list.
    async fn grant_for(
        &self,
        room: &VoiceRoom,
        user: &UserId,
        caller: &ConnectionId,
        client_id: &ClientId,
        cache: &mut GrantCache,
    ) -> Result<(ChannelAccess, Vec<PeerAccess>, IssuedCredentials, Timestamp), GrantError> {
        let plan = room
            .plan_for(user)
            .expect("join just placed the user in the room");
        let grants = plan.grants();
        // The endpoints of every channel and the credentials do not depend on each other: ask
        // for all of them at once, so the 10th joiner waits for about one round trip to the
        // channels service, not ten (issue 14). The first failure wins; the rest are dropped.
        let known = |ch: &SignalingChannel, role: ChannelRole| {
            cache.access.get(&(ch.clone(), role)).cloned()
        };
        let own = async {
            match known(&plan.own_channel, ChannelRole::Master) {
                Some(a) => Ok(a),
                None => {
                    self.access(&plan.own_channel, ChannelRole::Master, client_id, true)
                        .await
                }
            }
        };
        let peers = try_join_all(plan.peers.iter().map(|p| async move {
            let access = match known(&p.channel, ChannelRole::Viewer) {
                Some(a) => a,
                None => {
                    self.access(&p.channel, ChannelRole::Viewer, client_id, false)
                        .await?
                }
            };
            Ok::<_, GrantError>(PeerAccess {
                user: p.user.clone(),
                access,
            })
        }));
        let reusable = cache
            .credentials
            .as_ref()
            .filter(|(g, _, _)| *g == grants)
            .map(|(_, c, at)| (c.clone(), *at));
        let request = CredentialRequest {
            voice_room: room.id().clone(),
            user: user.clone(),
            connection: caller.clone(),
            client_id: client_id.clone(),
            grants: grants.clone(),
            ttl: self.config.credential_ttl,
        };
        let credentials = async {
            if let Some(done) = reusable {
                return Ok(done);
            }
            let issued = self
                .ports
                .credentials
                .issue(&request)
                .await
                .map_err(|e| GrantError::Failed(e.into()))?;
            Ok((issued, self.ports.clock.now()))
        };
        let (own, mut peers, (credentials, issued_at)) = try_join3(own, peers, credentials).await?;
        cache
            .access
            .insert((own.channel.clone(), ChannelRole::Master), own.clone());
        for p in &mut peers {
            cache.access.insert(
                (p.access.channel.clone(), ChannelRole::Viewer),
                p.access.clone(),
            );
            p.access.endpoints.ice_servers = own.endpoints.ice_servers.clone();
        }
        cache.credentials = Some((grants, credentials.clone(), issued_at));
        Ok((own, peers, credentials, issued_at))
    }

    /// Endpoints of `channel` for `role`; with `ice`, its ICE servers too (TURN: a call to the
    /// signaling service), else only those that cost nothing.
    async fn access(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
        ice: bool,
    ) -> Result<ChannelAccess, GrantError> {
        let channels = &self.ports.channels;
        let endpoints = if ice {
            channels.endpoints(channel, role, client_id).await
        } else {
            channels.signaling_endpoints(channel, role, client_id).await
        }
        .map_err(|e| match e {
            ChannelError::NotFound => GrantError::Vanished(e.into(), channel.clone()),
            e => GrantError::Failed(e.into()),
        })?;
        Ok(ChannelAccess {
            channel: channel.clone(),
            role,
            endpoints,
        })
    }

    /// `leaveVoiceRoom`: the caller leaves. A leaving master hands over to the earliest
    /// remaining participant; the last one out ends the room. Its channel is deleted.
    ///
    /// # Errors
    /// [`LeaveVoiceError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn leave_voice(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceRoom, LeaveVoiceError> {
        let user = self
            .identify(caller)
            .await?
            .ok_or(LeaveVoiceError::NotIdentified)?;
        let now = self.ports.clock.now();
        let (room, (events, released)) = self
            .modify(voice_room, |r| {
                acting_on(r, &user, caller)?;
                r.leave(&user, LeaveReason::Left, now).map(Some)
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => LeaveVoiceError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => LeaveVoiceError::Ended,
                ModifyError::Rejected(_) => LeaveVoiceError::NotParticipant,
                ModifyError::Dependency(d) => LeaveVoiceError::Dependency(d),
            })?
            .expect_changed();
        // Tell first, then release (as `end_voice`): the others drop their link to the leaver
        // on `participantLeft` instead of reconnecting to its closing channel.
        self.publish(events).await;
        self.release_channels(voice_room, &released).await;
        Ok(room)
    }

    /// `setMute`: records the caller's mute state and tells the chat room (only if it changed).
    ///
    /// # Errors
    /// [`SetMuteError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn set_mute(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
        muted: bool,
    ) -> Result<VoiceRoom, SetMuteError> {
        let user = self
            .identify(caller)
            .await?
            .ok_or(SetMuteError::NotIdentified)?;
        let (room, events) = self
            .modify(voice_room, |r| {
                acting_on(r, &user, caller)?;
                r.set_muted(&user, muted)
                    .map(|ev| (!ev.is_empty()).then_some(ev))
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => SetMuteError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => SetMuteError::Ended,
                ModifyError::Rejected(TransitionError::ServerMuted) => SetMuteError::ServerMuted,
                ModifyError::Rejected(_) => SetMuteError::NotParticipant,
                ModifyError::Dependency(d) => SetMuteError::Dependency(d),
            })?;
        self.publish(events.unwrap_or_default()).await;
        Ok(room)
    }

    /// `serverMute`: a moderator (the room's master from its current connection, or the chat
    /// room's admin) mutes `target` for everyone, or lifts it (`muted` false). See
    /// [`VoiceRoom::set_server_muted`] for the rule; the chat room hears `muteChanged`.
    ///
    /// # Errors
    /// [`ServerMuteError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn server_mute(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
        target: &UserId,
        muted: bool,
    ) -> Result<VoiceRoom, ServerMuteError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => ServerMuteError::NotIdentified,
                Lookup::NotFound => ServerMuteError::VoiceRoomNotFound,
                Lookup::Dependency(d) => ServerMuteError::Dependency(d),
            })?;
        let caller_is_admin = self.is_admin(room.chat_room(), &user).await?;
        let target_is_admin = self.is_admin(room.chat_room(), target).await?;
        let (room, events) = self
            .modify(voice_room, |r| {
                // A master's old connection (replaced by a resume) no longer moderates.
                let master_here = acting_on(r, &user, caller).is_ok();
                let moderator_is_admin = caller_is_admin;
                if !moderator_is_admin && !master_here {
                    return Err(TransitionError::NotAllowedToModerate);
                }
                r.set_server_muted(&user, moderator_is_admin, target, target_is_admin, muted)
                    .map(|ev| (!ev.is_empty()).then_some(ev))
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => ServerMuteError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => ServerMuteError::Ended,
                ModifyError::Rejected(TransitionError::NotParticipant) => {
                    ServerMuteError::NotParticipant
                }
                ModifyError::Rejected(_) => ServerMuteError::NotAllowed,
                ModifyError::Dependency(d) => ServerMuteError::Dependency(d),
            })?;
        info!(user_id = %user, target = %target, muted, "server mute");
        self.publish(events.unwrap_or_default()).await;
        Ok(room)
    }

    /// `endVoiceRoom`: the room's master, or the chat room's admin, ends it. Every channel is
    /// deleted and the chat room is told.
    ///
    /// # Errors
    /// [`EndVoiceError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn end_voice(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceRoom, EndVoiceError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => EndVoiceError::NotIdentified,
                Lookup::NotFound => EndVoiceError::VoiceRoomNotFound,
                Lookup::Dependency(d) => EndVoiceError::Dependency(d),
            })?;
        if !room.is_active() {
            return Err(EndVoiceError::Ended);
        }
        let is_admin = self.is_admin(room.chat_room(), &user).await?;
        let now = self.ports.clock.now();
        let (room, (events, released)) = self
            .modify(voice_room, |r| {
                // The master's old connection (replaced by a resume) may no longer end it.
                if !is_admin && acting_on(r, &user, caller).is_err() {
                    return Err(TransitionError::NotAllowedToEnd);
                }
                r.end(&user, is_admin, now).map(Some)
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => EndVoiceError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => EndVoiceError::Ended,
                ModifyError::Rejected(_) => EndVoiceError::NotAllowed,
                ModifyError::Dependency(d) => EndVoiceError::Dependency(d),
            })?
            .expect_changed();
        info!(user_id = %user, "voice room ended");
        // Tell first, then release: deleting a channel closes its signaling connections, and a
        // page that sees its connection close before it hears `voiceEnded` reconnects to a
        // channel that is going away (refused, and counted against KVS's ConnectAs* rate).
        self.publish(events).await;
        self.release_channels(voice_room, &released).await;
        Ok(room)
    }

    /// The active voice room of a chat room, for a member entering it (so the client can show
    /// "Join Voice"). Only approved members may ask.
    ///
    /// # Errors
    /// [`GetVoiceRoomError`].
    pub async fn active_voice(
        &self,
        caller: &ConnectionId,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, GetVoiceRoomError> {
        self.approved_member(caller, chat_room).await?;
        let room = self
            .ports
            .store
            .active_in_chat_room(chat_room)
            .await
            .map_err(|e| GetVoiceRoomError::Dependency(e.into()))?;
        Ok(match room {
            Some(r) => Some(self.heard_from(caller, r).await),
            None => None,
        })
    }

    /// Liveness (only with [`ServiceConfig::liveness_timeout`]): `caller`'s `getVoiceRoom` is
    /// its keepalive. If it is a participant of `room`, it is recorded alive (at most once per
    /// [`crate::room::TOUCH_MIN_INTERVAL`]; connected again with `participantResumed` if it had
    /// been taken for dead), and the liveness rule is applied to the whole room in the same
    /// write ([`VoiceRoom::apply_liveness`], as the sweep does): the others not heard from for
    /// the timeout become reconnecting, and those reconnecting for the grace leave (hand-over,
    /// the room ends with its last, channels released, events published). So a silently dead
    /// participant is removed by the others' keepalives, not only by the minute sweep. Nothing
    /// is written when nothing changes. Best effort: a write that fails is logged and the room is
    /// returned as read, since the next keepalive (or the sweep) applies the rule again.
    async fn heard_from(&self, caller: &ConnectionId, room: VoiceRoom) -> VoiceRoom {
        if self.config.liveness_timeout.is_none() {
            return room;
        }
        let now = self.ports.clock.now();
        match self.apply_liveness(&room, Some(caller), now).await {
            Ok(applied) => {
                self.publish(applied.events).await;
                if applied.room.is_active() {
                    applied.room
                } else {
                    room
                }
            }
            Err(ModifyError::NotFound | ModifyError::Rejected(_)) => room,
            Err(ModifyError::Dependency(d)) => {
                warn!(error = %d, voice_room_id = %room.id(), "could not record a keepalive");
                room
            }
        }
    }

    /// [`VoiceRoom::apply_liveness`] on `room` at `now` with the configured liveness timeout and
    /// reconnect grace, for the sweep (`keepalive` `None`) and a keepalive: written only if it
    /// changes something (tried first on `room` as read, then compare-and-set on the stored
    /// room), the channels it frees released. Nothing is published: the caller does.
    async fn apply_liveness(
        &self,
        room: &VoiceRoom,
        keepalive: Option<&ConnectionId>,
        now: Timestamp,
    ) -> Result<LivenessApplied, ModifyError> {
        let (timeout, grace) = (self.config.liveness_timeout, self.config.reconnect_grace);
        let mut applied = LivenessApplied {
            room: room.clone(),
            events: Vec::new(),
            reconnecting: 0,
            removed: 0,
            ended: false,
        };
        if room
            .clone()
            .apply_liveness(keepalive, now, timeout, grace)
            .is_none()
        {
            return Ok(applied);
        }
        let (after, change) = self
            .modify(room.id(), |r| {
                Ok(r.apply_liveness(keepalive, now, timeout, grace))
            })
            .await?;
        applied.room = after;
        let Some((events, released)) = change else {
            return Ok(applied);
        };
        self.release_channels(room.id(), &released).await;
        for e in &events {
            match e {
                VoiceEvent::ParticipantReconnecting { .. } => applied.reconnecting += 1,
                VoiceEvent::ParticipantLeft { .. } => applied.removed += 1,
                _ => {}
            }
        }
        applied.ended = !applied.room.is_active();
        applied.events = events;
        if applied.reconnecting > 0 {
            info!(voice_room_id = %room.id(), silent = applied.reconnecting, "no keepalive within the liveness timeout; participants reconnecting");
        }
        if applied.removed > 0 {
            info!(voice_room_id = %room.id(), removed = applied.removed, "reconnect grace passed; participants removed");
        }
        Ok(applied)
    }

    /// `$disconnect`: the connection went away. Its participant in any voice room becomes
    /// reconnecting (keeping its place, role and mute state) and the chat room is told
    /// `participantReconnecting`; the same user joining from a new connection within the
    /// reconnect grace resumes it, and the sweep removes it afterwards. With a zero grace the
    /// participant leaves at once (handing over or ending as `leave` does, its channel deleted).
    ///
    /// # Errors
    /// [`DisconnectError`] if the store could not be read or written; the sweep will finish.
    #[tracing::instrument(skip(self), fields(connection_id = %connection))]
    pub async fn on_disconnect(
        &self,
        connection: &ConnectionId,
    ) -> Result<DisconnectReport, DisconnectError> {
        let (report, events, failed) = self.remove_connection(connection).await?;
        // Rooms that were changed are announced even if another one could not be.
        self.publish(events).await;
        match failed {
            Some(d) => Err(d.into()),
            None => Ok(report),
        }
    }

    /// Start-up of a server whose previous process may have left active voice rooms: no
    /// connection of that process exists any more, so every participant of every active room
    /// becomes reconnecting as of now. Those who come back within the reconnect grace resume
    /// into the same voice room; the sweep removes the others (and ends rooms nobody came back
    /// to). With a zero grace this is a sweep, which ends those rooms at once. Returns the rooms
    /// kept.
    ///
    /// # Errors
    /// [`RestartError`] if the rooms could not be listed; a room that could not be written is
    /// logged and left to the sweep (its participants' connections are gone, so the sweep marks
    /// them reconnecting in turn).
    #[tracing::instrument(skip(self))]
    pub async fn restarted(&self) -> Result<Vec<VoiceRoomId>, RestartError> {
        if self.config.reconnect_grace.is_zero() {
            self.sweep().await.map_err(|SweepError::Dependency(d)| d)?;
            return Ok(Vec::new());
        }
        let now = self.ports.clock.now();
        let mut kept = Vec::new();
        let mut events = Vec::new();
        for room in self.ports.store.list_active().await? {
            let outcome = self
                .modify(room.id(), |r| {
                    let evs = r.mark_all_reconnecting(now);
                    Ok((!evs.is_empty()).then_some(evs))
                })
                .await;
            match outcome {
                Ok((_, Some(evs))) => {
                    events.extend(evs);
                    kept.push(room.id().clone());
                }
                Ok((_, None)) | Err(ModifyError::NotFound | ModifyError::Rejected(_)) => {}
                Err(ModifyError::Dependency(d)) => {
                    warn!(error = %d, voice_room_id = %room.id(), "could not keep a voice room of the previous process; the sweep will handle it");
                }
            }
        }
        info!(
            rooms = kept.len(),
            "voice rooms of the previous process wait for their participants to resume"
        );
        self.publish(events).await;
        Ok(kept)
    }

    /// Takes `connection` out of every active room it is in: marks its participant reconnecting,
    /// or (zero grace) removes it. A room that cannot be written is skipped (the first such
    /// failure is returned alongside), so that the rooms that were changed still get their
    /// channels deleted and their events published.
    async fn remove_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<(DisconnectReport, Vec<VoiceEvent>, Option<DependencyError>), DisconnectError> {
        let rooms = self.ports.store.active_with_connection(connection).await?;
        let mut report = DisconnectReport::default();
        let mut events = Vec::new();
        let mut failed = None;
        let now = self.ports.clock.now();
        let resumable = !self.config.reconnect_grace.is_zero();
        for room in rooms {
            let outcome = self
                .modify(room.id(), |r| {
                    if resumable {
                        return Ok(r.mark_reconnecting(connection, now)?.map(|evs| (evs, None)));
                    }
                    match r.participant_on(connection) {
                        Some(p) => {
                            let user = p.user.clone();
                            r.leave(&user, LeaveReason::Disconnected, now)
                                .map(|(evs, released)| Some((evs, Some(released))))
                        }
                        None => Ok(None),
                    }
                })
                .await;
            match outcome {
                Ok((_, Some((evs, Some(released))))) => {
                    self.release_channels(room.id(), &released).await;
                    events.extend(evs);
                    report.rooms_left.push(room.id().clone());
                }
                Ok((_, Some((evs, None)))) => {
                    info!(voice_room_id = %room.id(), "participant reconnecting");
                    events.extend(evs);
                    report.rooms_reconnecting.push(room.id().clone());
                }
                Ok((_, None)) | Err(ModifyError::NotFound | ModifyError::Rejected(_)) => {}
                Err(ModifyError::Dependency(d)) => {
                    warn!(error = %d, voice_room_id = %room.id(), "could not take the connection out of a voice room");
                    failed.get_or_insert(d);
                }
            }
        }
        Ok((report, events, failed))
    }

    /// Sweep: marks reconnecting the participants whose connection the chat app no longer knows
    /// (a missed `$disconnect`), removes those whose reconnect grace has passed (as a leave with
    /// reason `disconnected`: hand-over, and the room ends when the last one goes), and deletes
    /// `voice-*` channels no participant holds and the pool does not keep (older than the
    /// orphan grace). With a pool, it also reclaims leases nobody holds and deletes channels
    /// idle longer than the idle eviction (see `sweep_pool`). With a zero
    /// reconnect grace, participants with a gone connection are removed at once and a room with
    /// nobody live is ended as abandoned. Run it on a schedule; it is idempotent.
    ///
    /// # Errors
    /// [`SweepError`] only if the rooms or channels could not be listed; individual failures are
    /// counted in the report and retried by the next sweep.
    #[tracing::instrument(skip(self))]
    pub async fn sweep(&self) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        let mut events = Vec::new();
        let now = self.ports.clock.now();
        let grace = self.config.reconnect_grace;
        for room in self.ports.store.list_active().await? {
            let mut dead = Vec::new();
            for p in room.participants().iter().filter(|p| !p.is_reconnecting()) {
                match self.ports.directory.user_of(&p.connection).await {
                    Ok(Some(u)) if u == p.user => {}
                    Ok(_) => dead.push(p.connection.clone()),
                    Err(e) => {
                        warn!(error = %e, "sweep could not check a connection");
                        report.failures += 1;
                    }
                }
            }
            if grace.is_zero() && !dead.is_empty() && dead.len() == room.participants().len() {
                // The list may be stale: someone may have joined since. Abandon only a room in
                // which nobody but the dead is left; otherwise just remove the dead below.
                let outcome = self
                    .modify(room.id(), |r| {
                        if r.participants()
                            .iter()
                            .all(|p| dead.contains(&p.connection))
                        {
                            r.abandon(now).map(Some)
                        } else {
                            Ok(None)
                        }
                    })
                    .await;
                match outcome {
                    Ok((_, Some((evs, released)))) => {
                        self.release_channels(room.id(), &released).await;
                        events.extend(evs);
                        report.rooms_ended.push(room.id().clone());
                        continue;
                    }
                    Ok((_, None)) => {}
                    Err(ModifyError::NotFound | ModifyError::Rejected(_)) => continue,
                    Err(ModifyError::Dependency(d)) => {
                        warn!(error = %d, voice_room_id = %room.id(), "sweep could not end room");
                        report.failures += 1;
                        continue;
                    }
                }
            }
            for conn in dead {
                match self.remove_connection(&conn).await {
                    Ok((r, evs, failed)) => {
                        report.participants_removed += r.rooms_left.len();
                        report.participants_reconnecting += r.rooms_reconnecting.len();
                        events.extend(evs);
                        if failed.is_some() {
                            report.failures += 1;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "sweep could not take a dead connection out");
                        report.failures += 1;
                    }
                }
            }
            // Liveness and expiry: the rule every keepalive also applies to its room; here for
            // the rooms nobody sends a keepalive to any more.
            match self.apply_liveness(&room, None, now).await {
                Ok(applied) => {
                    report.participants_reconnecting += applied.reconnecting;
                    report.participants_removed += applied.removed;
                    if applied.ended {
                        report.rooms_ended.push(room.id().clone());
                    }
                    events.extend(applied.events);
                }
                Err(ModifyError::NotFound | ModifyError::Rejected(_)) => {}
                Err(ModifyError::Dependency(d)) => {
                    warn!(error = %d, voice_room_id = %room.id(), "sweep could not apply the liveness rule");
                    report.failures += 1;
                }
            }
        }
        let orphans: Result<(), SweepError> = async {
            let held: HashSet<_> = self
                .ports
                .store
                .list_active()
                .await?
                .iter()
                .flat_map(|r| r.participants().iter().map(|p| p.channel.arn.clone()))
                .collect();
            let pooled = if self.ports.pool.is_pooling() {
                self.ports.pool.list().await?
            } else {
                Vec::new()
            };
            let listed = self.ports.channels.list().await?;
            self.sweep_pool(&held, &pooled, &listed, now, &mut report)
                .await;
            let in_pool: HashSet<_> = pooled.iter().map(|p| &p.channel.arn).collect();
            for listed in listed {
                if held.contains(&listed.channel.arn)
                    || in_pool.contains(&listed.channel.arn)
                    || now.since(listed.created_at) < self.config.orphan_grace
                {
                    continue;
                }
                match self.ports.channels.delete(&listed.channel).await {
                    Ok(()) => {
                        info!(channel = %listed.channel.name, "deleted orphan channel");
                        report.channels_deleted += 1;
                    }
                    Err(e) => {
                        warn!(error = %e, channel = %listed.channel.name, "could not delete orphan channel");
                        report.failures += 1;
                    }
                }
            }
            Ok(())
        }
        .await;
        // What the first phase changed is announced even if the orphan phase could not list.
        self.publish(events).await;
        orphans.map(|()| report)
    }

    /// The pool's part of the sweep. A lease no participant holds, older than the orphan grace
    /// (a join that claimed it and failed to record or give it back, a release that failed),
    /// goes back into the pool in quarantine, as if released now: credentials may have been
    /// issued for it. A free channel unused for longer than the idle eviction is taken out of
    /// the pool (conditionally: a claim that comes first wins) and deleted, but only if the
    /// signaling service lists it as this deployment's (tagged by this stack); the pool then
    /// shrinks towards what the recent peak needs.
    async fn sweep_pool(
        &self,
        held: &HashSet<crate::ids::ChannelArn>,
        pooled: &[crate::pool::PooledChannel],
        listed: &[crate::ports::ListedChannel],
        now: Timestamp,
        report: &mut SweepReport,
    ) {
        let policy = self.lease_policy();
        let ours: HashSet<_> = listed.iter().map(|l| &l.channel.arn).collect();
        for p in pooled {
            match &p.slot {
                PoolSlot::Held { holder, claimed_at }
                    if !held.contains(&p.channel.arn)
                        && now.since(*claimed_at) >= self.config.orphan_grace =>
                {
                    let free_from = policy.free_from(now, true);
                    match self
                        .ports
                        .pool
                        .release(&p.channel, &holder.voice_room, now, free_from)
                        .await
                    {
                        Ok(()) => {
                            info!(channel = %p.channel.name, "reclaimed a pooled channel nobody holds; in quarantine");
                            report.leases_reclaimed += 1;
                        }
                        Err(PoolError::NotHeld) => {}
                        Err(e) => {
                            warn!(error = %e, channel = %p.channel.name, "could not reclaim a pooled channel");
                            report.failures += 1;
                        }
                    }
                }
                PoolSlot::Free { released_at, .. }
                    if policy.idle(&p.slot, now) && ours.contains(&p.channel.arn) =>
                {
                    match self.ports.pool.evict(&p.channel, *released_at).await {
                        Ok(true) => match self.ports.channels.delete(&p.channel).await {
                            Ok(()) => {
                                info!(channel = %p.channel.name, "deleted an idle pooled channel");
                                report.channels_evicted += 1;
                            }
                            Err(e) => {
                                // Out of the pool and held by nobody: an orphan the next
                                // sweep deletes.
                                warn!(error = %e, channel = %p.channel.name, "could not delete an idle pooled channel");
                                report.failures += 1;
                            }
                        },
                        Ok(false) => {}
                        Err(e) => {
                            warn!(error = %e, channel = %p.channel.name, "could not evict an idle pooled channel");
                            report.failures += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `startRecording`: the voice room's master or the chat room's admin, as a connected
    /// participant, starts recording the room in its own browser. Every member of the chat room
    /// is told (`recordingStarted`); the room view says `recording` from now on, so a joiner is
    /// told before its audio is captured.
    ///
    /// # Errors
    /// [`StartRecordingError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn start_recording(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceRoom, StartRecordingError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => AccessError::NotIdentified.into(),
                Lookup::NotFound => StartRecordingError::VoiceRoomNotFound,
                Lookup::Dependency(d) => StartRecordingError::Dependency(d),
            })?;
        let membership = match self.gate(&user, room.chat_room()).await {
            Ok(m) => m,
            Err(GateError::Access(a)) => return Err(a.into()),
            Err(GateError::Dependency(d)) => return Err(d.into()),
        };
        let id = self.ports.ids.recording_id();
        let now = self.ports.clock.now();
        let (room, events) = self
            .modify(voice_room, |r| {
                acting_on(r, &user, caller)?;
                r.start_recording(&user, membership.is_admin, id.clone(), now)
                    .map(Some)
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => StartRecordingError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => StartRecordingError::Ended,
                ModifyError::Rejected(TransitionError::NotAllowedToRecord) => {
                    StartRecordingError::NotAllowed
                }
                ModifyError::Rejected(TransitionError::AlreadyRecording) => {
                    StartRecordingError::AlreadyRecording
                }
                ModifyError::Rejected(_) => StartRecordingError::NotParticipant,
                ModifyError::Dependency(d) => StartRecordingError::Dependency(d),
            })?
            .expect_changed();
        info!(user_id = %user, recording_id = %id, "recording started");
        self.publish(events).await;
        Ok(room)
    }

    /// `stopRecording`: the master, the chat room's admin or the recorder stops the running
    /// recording; the chat room is told (`recordingStopped`).
    ///
    /// # Errors
    /// [`StopRecordingError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn stop_recording(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceRoom, StopRecordingError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => StopRecordingError::NotIdentified,
                Lookup::NotFound => StopRecordingError::VoiceRoomNotFound,
                Lookup::Dependency(d) => StopRecordingError::Dependency(d),
            })?;
        let is_admin = self.is_admin(room.chat_room(), &user).await?;
        let now = self.ports.clock.now();
        let (room, events) = self
            .modify(voice_room, |r| {
                // A participant's replaced connection may no longer act for it.
                if !is_admin && acting_on(r, &user, caller).is_err() {
                    return Err(TransitionError::NotAllowedToRecord);
                }
                r.stop_recording(&user, is_admin, now).map(Some)
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => StopRecordingError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => StopRecordingError::Ended,
                ModifyError::Rejected(TransitionError::NotRecording) => {
                    StopRecordingError::NotRecording
                }
                ModifyError::Rejected(_) => StopRecordingError::NotAllowed,
                ModifyError::Dependency(d) => StopRecordingError::Dependency(d),
            })?
            .expect_changed();
        info!(user_id = %user, "recording stopped");
        self.publish(events).await;
        Ok(room)
    }

    /// Whether an upload to `recording` of `voice_room` is taken now: it is the room's
    /// recording and runs, or stopped less than the final-chunk grace ago. Returns the room
    /// (its chat room names where the file belongs).
    ///
    /// # Errors
    /// [`RecordingUploadError`].
    pub async fn recording_upload(
        &self,
        voice_room: &VoiceRoomId,
        recording: &RecordingId,
    ) -> Result<VoiceRoom, RecordingUploadError> {
        let room = self
            .ports
            .store
            .get(voice_room)
            .await?
            .ok_or(RecordingUploadError::VoiceRoomNotFound)?;
        if room.accepts_upload(recording, self.ports.clock.now()) {
            Ok(room)
        } else {
            Err(RecordingUploadError::Closed)
        }
    }

    /// The caller's connection makes `recording` of `voice_room` (it is its recorder's current
    /// connection: the recording stops when that connection drops) and it still takes uploads:
    /// what a storage asks before minting upload URLs for the recorder. With `finishing`, the
    /// recording must also have stopped: its recorder says everything is uploaded.
    ///
    /// # Errors
    /// [`RecorderUploadError`].
    pub async fn recorder_upload(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
        recording: &RecordingId,
        finishing: bool,
    ) -> Result<VoiceRoom, RecorderUploadError> {
        let user = self
            .identify(caller)
            .await?
            .ok_or(RecorderUploadError::NotIdentified)?;
        let room = self
            .ports
            .store
            .get(voice_room)
            .await?
            .ok_or(RecorderUploadError::VoiceRoomNotFound)?;
        let rec = room
            .recording()
            .filter(|r| &r.id == recording && r.by == user)
            .ok_or(RecorderUploadError::NotRecorder)?;
        // While it runs, only the recorder's connection that is in the room may upload (a
        // replaced connection can no longer act for it); once stopped, the recorder's user may
        // finish it from any connection within the grace.
        if rec.is_running() && acting_on(&room, &user, caller).is_err() {
            return Err(RecorderUploadError::NotRecorder);
        }
        if finishing && rec.is_running() {
            return Err(RecorderUploadError::StillRunning);
        }
        if !room.accepts_upload(recording, self.ports.clock.now()) {
            return Err(RecorderUploadError::Closed);
        }
        Ok(room)
    }

    /// The caller may list `chat_room`'s recordings and be handed download links: it is the
    /// admin or an approved member ([`crate::gate::may_download`]). Returns who it is.
    ///
    /// # Errors
    /// [`RecordingAccessError`].
    pub async fn recordings_access(
        &self,
        caller: &ConnectionId,
        chat_room: &ChatRoomId,
    ) -> Result<UserId, RecordingAccessError> {
        let user = self
            .identify(caller)
            .await?
            .ok_or(AccessError::NotIdentified)?;
        self.may_download(&user, chat_room).await?;
        Ok(user)
    }

    /// `user` may download `chat_room`'s recordings now (checked again when a download link is
    /// used: a member removed since the link was handed out is refused).
    ///
    /// # Errors
    /// [`RecordingAccessError`].
    pub async fn may_download(
        &self,
        user: &UserId,
        chat_room: &ChatRoomId,
    ) -> Result<(), RecordingAccessError> {
        let membership = self.ports.directory.membership(chat_room, user).await?;
        crate::gate::may_download(membership)?;
        Ok(())
    }

    /// What the use cases on one voice room (join, end, server mute, start and stop recording)
    /// read first: who calls and the room they name (whether they administer its chat room is
    /// [`Self::is_admin`], asked after each use case's own early refusals).
    async fn caller_and_room(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<(UserId, VoiceRoom), Lookup> {
        // Independent reads, in one round trip (issue 14: a join's sequential round trips);
        // the caller's identity is still checked first.
        let (user, room) = join(self.identify(caller), self.ports.store.get(voice_room)).await;
        let user = user?.ok_or(Lookup::NotIdentified)?;
        let room = room
            .map_err(|e| Lookup::Dependency(e.into()))?
            .ok_or(Lookup::NotFound)?;
        Ok((user, room))
    }

    /// Whether `user` administers `chat_room`.
    async fn is_admin(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<bool, DependencyError> {
        Ok(self
            .ports
            .directory
            .membership(chat_room, user)
            .await?
            .is_some_and(|m| m.is_admin))
    }

    /// The user behind a connection.
    async fn identify(&self, caller: &ConnectionId) -> Result<Option<UserId>, DependencyError> {
        Ok(self.ports.directory.user_of(caller).await?)
    }

    /// Checks that `user` is an approved member (or the admin) of `chat_room`.
    async fn gate(&self, user: &UserId, chat_room: &ChatRoomId) -> Result<Membership, GateError> {
        let membership = self
            .ports
            .directory
            .membership(chat_room, user)
            .await
            .map_err(DependencyError::from)?;
        Membership::require_approved(membership).map_err(GateError::Access)
    }

    /// Identifies the caller and checks it is an approved member of `chat_room`.
    async fn approved_member(
        &self,
        caller: &ConnectionId,
        chat_room: &ChatRoomId,
    ) -> Result<(UserId, Membership), GateError> {
        let user = self
            .identify(caller)
            .await?
            .ok_or(GateError::Access(AccessError::NotIdentified))?;
        let membership = self.gate(&user, chat_room).await?;
        Ok((user, membership))
    }

    /// Read, apply `change`, compare-and-set; retried on a concurrent change. `change` returns
    /// `Ok(None)` when there is nothing to write.
    async fn modify<T>(
        &self,
        id: &VoiceRoomId,
        mut change: impl FnMut(&mut VoiceRoom) -> Result<Option<T>, TransitionError>,
    ) -> Result<(VoiceRoom, Option<T>), ModifyError> {
        let dep = |e: StoreError| ModifyError::Dependency(e.into());
        for _ in 0..=self.config.cas_retries {
            let room = self
                .ports
                .store
                .get(id)
                .await
                .map_err(dep)?
                .ok_or(ModifyError::NotFound)?;
            let mut next = room.clone();
            let Some(out) = change(&mut next).map_err(ModifyError::Rejected)? else {
                return Ok((room, None));
            };
            next.bump_version();
            match self.ports.store.update(&next).await {
                Ok(()) => return Ok((next, Some(out))),
                Err(StoreError::VersionConflict) => {
                    debug!(voice_room_id = %id, "concurrent change; retrying");
                }
                Err(StoreError::NotFound) => return Err(ModifyError::NotFound),
                Err(e @ StoreError::Unavailable(_)) => {
                    // The write may have landed anyway (a timeout after the write); then the
                    // change happened and its clean-up (deleting released channels) must run.
                    // Otherwise, or if we cannot tell, nothing is released: a channel the
                    // change would have freed is either still held or an orphan for the sweep.
                    return match self.ports.store.get(id).await {
                        Ok(Some(stored)) if stored == next => {
                            warn!(error = %e, voice_room_id = %id, "update reported a failure but landed");
                            Ok((next, Some(out)))
                        }
                        _ => Err(dep(e)),
                    };
                }
                Err(e) => return Err(dep(e)),
            }
        }
        Err(dep(StoreError::VersionConflict))
    }

    /// Deletes channels no participant holds any more. A failure is logged, not returned: the
    /// channel is tagged, and the sweep deletes it later.
    /// Deletes `channels` concurrently (independent calls: ending a room of ten is one round
    /// trip, not ten).
    async fn delete_channels(&self, channels: &[SignalingChannel]) {
        futures_util::future::join_all(channels.iter().map(|ch| async move {
            if let Err(e) = self.ports.channels.delete(ch).await {
                warn!(error = %e, channel = %ch.name, "could not delete channel; the sweep will retry");
            }
        }))
        .await;
    }

    /// The pool's rule in force: the configured credential lifetime (capped at one hour), the
    /// session cap and the idle eviction.
    pub fn lease_policy(&self) -> LeasePolicy {
        LeasePolicy {
            credential_ttl: self.config.credential_ttl,
            session_cap: self.config.channel_session_cap,
            margin: crate::pool::QUARANTINE_MARGIN,
            idle_eviction: self.config.channel_idle_eviction,
        }
    }

    /// A channel for a new participant (`tags.owner` in `tags.voice_room`): with a pool (and
    /// `try_pool`: the caller has not asked it already), a free channel whose quarantine is over
    /// (already `ACTIVE`: no wait), else a new one recorded in the pool as held; without, a new
    /// one.
    ///
    /// A new channel the pool could not record is left alone rather than deleted: the record
    /// may have landed (a timeout after the write), and deleting a channel the pool lists
    /// would later hand out a channel that does not exist. The sweep settles it either way (a
    /// held lease nobody records is put back in quarantine; an unlisted channel is an orphan).
    async fn acquire_channel(
        &self,
        tags: &ChannelTags,
        try_pool: bool,
    ) -> Result<SignalingChannel, DependencyError> {
        let (channel, lease) = self.new_channel(tags, try_pool).await?;
        if let Some(lease) = lease {
            self.ports.pool.add(&lease).await?;
            info!(channel = %channel.name, "pool grown by a new channel");
        }
        Ok(channel)
    }

    /// [`Self::acquire_channel`] without recording a created channel in the pool: the channel,
    /// and the lease the caller must [`ChannelPool::add`] before the channel is stored in a
    /// room (`None` for a claimed channel, or without a pool).
    async fn new_channel(
        &self,
        tags: &ChannelTags,
        try_pool: bool,
    ) -> Result<(SignalingChannel, Option<ChannelLease>), DependencyError> {
        let pool = &self.ports.pool;
        if !pool.is_pooling() {
            let channel = self
                .ports
                .channels
                .create(&self.ports.ids.channel_name(), tags)
                .await?;
            return Ok((channel, None));
        }
        if try_pool {
            if let Some(channel) = self.claim_pooled(tags).await? {
                return Ok((channel, None));
            }
        }
        let channel = self
            .ports
            .channels
            .create(&self.ports.ids.channel_name(), tags)
            .await?;
        let lease = ChannelLease {
            channel: channel.clone(),
            holder: LeaseHolder {
                voice_room: tags.voice_room.clone(),
                user: tags.owner.clone(),
            },
            claimed_at: self.ports.clock.now(),
        };
        Ok((channel, Some(lease)))
    }

    /// Records a channel a join just created (`created.channel`) in the pool. If that fails,
    /// the channel is left alone (`created.channel` forgotten) rather than given back or
    /// deleted, as [`Self::acquire_channel`] does: the record may have landed.
    async fn record_new(
        &self,
        lease: &ChannelLease,
        created: &mut Acquired,
    ) -> Result<(), DependencyError> {
        match self.ports.pool.add(lease).await {
            Ok(()) => {
                info!(channel = %lease.channel.name, "pool grown by a new channel");
                Ok(())
            }
            Err(e) => {
                created.channel = None;
                Err(e.into())
            }
        }
    }

    /// A free pooled channel whose quarantine is over, claimed for `tags.owner`, or `None` (no
    /// such channel, or no pool).
    async fn claim_pooled(
        &self,
        tags: &ChannelTags,
    ) -> Result<Option<SignalingChannel>, DependencyError> {
        let pool = &self.ports.pool;
        if !pool.is_pooling() {
            return Ok(None);
        }
        let holder = LeaseHolder {
            voice_room: tags.voice_room.clone(),
            user: tags.owner.clone(),
        };
        let now = self.ports.clock.now();
        let claimed = pool.claim(&holder, now).await?;
        self.checked_claim(&holder, claimed, now).await
    }

    /// The pooled channel `arn` (a candidate the pool's `find` gave), claimed for `tags.owner`
    /// if it is still free and out of quarantine, or `None` (someone else was first).
    async fn claim_found_pooled(
        &self,
        arn: &ChannelArn,
        tags: &ChannelTags,
    ) -> Result<Option<SignalingChannel>, DependencyError> {
        let holder = LeaseHolder {
            voice_room: tags.voice_room.clone(),
            user: tags.owner.clone(),
        };
        let now = self.ports.clock.now();
        let claimed = self.ports.pool.claim_found(arn, &holder, now).await?;
        self.checked_claim(&holder, claimed, now).await
    }

    /// The channel of a claim made at `now`, if the slot it was taken from allowed it
    /// ([`LeasePolicy::claimable`]); a channel the rule does not allow is put back as it was.
    async fn checked_claim(
        &self,
        holder: &LeaseHolder,
        claimed: Option<(ChannelLease, PoolSlot)>,
        now: Timestamp,
    ) -> Result<Option<SignalingChannel>, DependencyError> {
        let pool = &self.ports.pool;
        let policy = self.lease_policy();
        match claimed {
            Some((lease, was)) if policy.claimable(&was, now) => {
                debug!(channel = %lease.channel.name, "claimed a pooled channel");
                Ok(Some(lease.channel))
            }
            Some((lease, was)) => {
                // The adapter handed out a channel the rule does not allow: put it back as it
                // was and use a new one. Never hand it on.
                error!(channel = %lease.channel.name, ?was, "the pool offered a channel still in quarantine; not using it");
                if let PoolSlot::Free {
                    released_at,
                    free_from,
                } = was
                {
                    if let Err(e) = pool
                        .release(&lease.channel, &holder.voice_room, released_at, free_from)
                        .await
                    {
                        warn!(error = %e, channel = %lease.channel.name, "could not put the channel back; the sweep will");
                    }
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Gives back a channel acquired for `voice_room` that no stored participant holds and
    /// whose credentials, if any were issued, never left this call. With a pool it is free at
    /// once (or, if it vanished from the signaling service, forgotten); without, deleted.
    async fn discard_unused(
        &self,
        voice_room: &VoiceRoomId,
        channel: &SignalingChannel,
        vanished: bool,
    ) {
        let pool = &self.ports.pool;
        if !pool.is_pooling() {
            self.delete_channels(std::slice::from_ref(channel)).await;
            return;
        }
        let now = self.ports.clock.now();
        let free_from = self.lease_policy().free_from(now, false);
        let res = match pool.release(channel, voice_room, now, free_from).await {
            Ok(()) if vanished => pool.evict(channel, now).await.map(|_| ()),
            other => other,
        };
        match res {
            Ok(()) => {}
            Err(PoolError::NotHeld) => {
                debug!(channel = %channel.name, "channel not held by the room; left to the sweep");
            }
            Err(e) => {
                warn!(error = %e, channel = %channel.name, "could not give an unused channel back; the sweep will");
            }
        }
    }

    /// Channels `voice_room`'s participants no longer hold (they left, or the room ended): with
    /// a pool, back into it in quarantine until every credential issued for them is unusable
    /// ([`LeasePolicy::free_from`]); without, deleted. A failure is logged, not returned: the
    /// sweep reclaims (or deletes) a channel nobody holds.
    async fn release_channels(&self, voice_room: &VoiceRoomId, channels: &[SignalingChannel]) {
        let pool = &self.ports.pool;
        if !pool.is_pooling() {
            self.delete_channels(channels).await;
            return;
        }
        let now = self.ports.clock.now();
        let free_from = self.lease_policy().free_from(now, true);
        for ch in channels {
            match pool.release(ch, voice_room, now, free_from).await {
                Ok(()) => debug!(channel = %ch.name, "channel back in the pool, in quarantine"),
                // Not pooled (a room from before the pool existed) or reclaimed by the sweep
                // already: never delete it here, another room may hold it by now.
                Err(PoolError::NotHeld) => {
                    debug!(channel = %ch.name, "released channel not held in the pool; left to the sweep");
                }
                Err(e) => {
                    warn!(error = %e, channel = %ch.name, "could not release channel into the pool; the sweep will");
                }
            }
        }
    }

    /// Tells every connection of each event's chat room. Connections reported gone are removed
    /// from their voice rooms, and the events that causes are published in turn (each gone
    /// connection is handled once, so this terminates).
    async fn publish(&self, events: Vec<VoiceEvent>) {
        self.publish_to(events, None).await;
    }

    /// [`Self::publish`], with the connections of one chat room already read (`known`: the
    /// join reads them beside its other calls): the first events of that chat room go to
    /// those; anything else, and the events caused by gone connections, read the chat room's
    /// connections as usual.
    async fn publish_to(
        &self,
        mut events: Vec<VoiceEvent>,
        mut known: Option<(ChatRoomId, Vec<ConnectionId>)>,
    ) {
        let mut handled: HashSet<ConnectionId> = HashSet::new();
        while !events.is_empty() {
            let mut gone = Vec::new();
            for event in &events {
                let read = match &known {
                    Some((chat_room, targets)) if chat_room == event.chat_room_id() => {
                        Ok(targets.clone())
                    }
                    _ => {
                        self.ports
                            .directory
                            .connections_of(event.chat_room_id())
                            .await
                    }
                };
                let targets = match read {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(error = %e, "could not list the chat room's connections; event not sent");
                        continue;
                    }
                };
                // Every connection at once: a 10-person room's event is one round trip to the
                // notifier, not ten in a row before the caller gets its answer (issue 14). Each
                // connection still gets the events in order.
                let sent = futures_util::future::join_all(
                    targets
                        .iter()
                        .map(|conn| self.ports.notifier.send(conn, event)),
                )
                .await;
                for (conn, res) in targets.into_iter().zip(sent) {
                    match res {
                        Ok(()) => {}
                        Err(NotifyError::Gone) => {
                            if !gone.contains(&conn) {
                                gone.push(conn);
                            }
                        }
                        Err(e) => warn!(error = %e, connection_id = %conn, "event not delivered"),
                    }
                }
            }
            events = Vec::new();
            // What a gone connection's removal causes is published to a fresh read.
            known = None;
            for conn in gone {
                if handled.insert(conn.clone()) {
                    match self.remove_connection(&conn).await {
                        // A room it could not be removed from was logged; the sweep finishes it.
                        Ok((_, evs, _)) => events.extend(evs),
                        Err(e) => {
                            warn!(error = %e, connection_id = %conn, "could not remove a gone connection")
                        }
                    }
                }
            }
        }
    }
}

/// Refuses `user` acting from `caller` when it is a participant on another connection: after a
/// resume, only the new connection acts for the participant.
fn acting_on(
    room: &VoiceRoom,
    user: &UserId,
    caller: &ConnectionId,
) -> Result<(), TransitionError> {
    match room.participant(user) {
        Some(p) if room.is_active() && &p.connection != caller => {
            Err(TransitionError::NotParticipant)
        }
        _ => Ok(()),
    }
}

/// For transitions that always change something (`leave`, `end`): unwraps the `Some`.
trait ExpectChanged<T> {
    fn expect_changed(self) -> (VoiceRoom, T);
}

impl<T> ExpectChanged<T> for (VoiceRoom, Option<T>) {
    fn expect_changed(self) -> (VoiceRoom, T) {
        let (room, out) = self;
        (room, out.expect("transition always returns Some"))
    }
}

/// Why [`VoiceService::caller_and_room`] found no caller or room.
enum Lookup {
    NotIdentified,
    NotFound,
    Dependency(DependencyError),
}

impl From<DependencyError> for Lookup {
    fn from(d: DependencyError) -> Self {
        Self::Dependency(d)
    }
}
