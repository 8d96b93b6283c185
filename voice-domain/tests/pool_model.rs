//! Model-based property test of channel pooling: random command sequences (start, join,
//! refresh, leave, end, disconnect, keepalive, time passing, sweep) drive a `VoiceService` whose
//! pool keeps released channels, over small in-test fakes of every port; half the cases with the
//! AWS liveness rule on, under which a keepalive (`getVoiceRoom`) may itself remove silent
//! participants and release their channels. After every command it checks:
//!
//! - **no overlap**: every credential a caller received for a channel (its use window: from its
//!   issue until it expires plus the session cap, the longest a connection opened with it can
//!   last) ends before the channel is next claimed by another holder;
//! - credentials are only ever handed out for channels the pool records as held;
//! - every participant's channel is held in the pool, and every pooled channel exists;
//! - **pool size ≤ peak concurrent holders**, where a holder is a channel held by a participant
//!   or still in quarantine (credentials for it may still be usable): the pool grows only when
//!   every channel it has is taken;
//! - after a sweep, no free channel idle longer than the idle eviction is left;
//! - after a participant's keepalive (liveness on): it is connected, and its room holds nobody
//!   connected but silent for the liveness timeout, nor anybody reconnecting for the grace.
//!
//! The fakes are deliberately plain (no faults, sequential): what is under test is the
//! service's rule, not an adapter. Runtime-agnostic like `use_cases.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::executor::block_on;
use proptest::prelude::*;
use voice_domain::pool::{
    ChannelLease, ChannelPool, LeaseHolder, PoolError, PoolSlot, PooledChannel,
};
use voice_domain::ports::{
    Adapters, ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, Clock, CredentialError,
    CredentialIssuer, CredentialRequest, Credentials, DirectoryError, IdGenerator,
    IssuedCredentials, ListedChannel, MemberState, Membership, Notifier, NotifyError, Ports,
    Secret, SignalingChannels, StoreError, VoiceRoomStore,
};
use voice_domain::{
    ChannelArn, ChannelName, ChannelRole, ChatRoomId, ClientId, ConnectionId, ServiceConfig,
    SignalingChannel, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId, VoiceService,
};

const USERS: usize = 5;
const CHATS: usize = 2;
const T0: u64 = 1_700_000_000_000;

/// Everything the fakes share, behind one mutex (never held across an `.await`).
#[derive(Default)]
struct World {
    now: u64,
    /// Sequence number of every recorded event, so that events at the same instant are ordered.
    seq: u64,
    rooms: HashMap<VoiceRoomId, VoiceRoom>,
    /// connection → user, for live connections.
    live: HashMap<ConnectionId, UserId>,
    /// user index → connection generation.
    generation: [u32; USERS],
    /// Existing channels: ARN → (channel, created at).
    channels: BTreeMap<String, (SignalingChannel, Timestamp)>,
    next_id: u64,
    /// ARN → slot, in insertion order (a claim takes the first claimable).
    pool: Vec<PooledChannel>,
    /// ARN → (seq, time) of each time the pool handed the channel to a holder.
    claims: HashMap<String, Vec<(u64, u64)>>,
    /// Credentials delivered to callers: (seq, channel ARN, end of use window).
    delivered: Vec<(u64, String, u64)>,
    /// The largest number of channels held or in quarantine seen after a command.
    peak_holders: usize,
    /// Runs inside the next credential issue: what another request does meanwhile.
    on_issue: Option<Hook>,
    /// Makes the fake pool break the rule: claim free channels still in quarantine.
    ignore_quarantine: bool,
}

type Shared = Arc<Mutex<World>>;

/// Something another request does while a credential is being issued.
type Hook = Box<dyn FnOnce(&mut World) + Send>;

fn lock(w: &Shared) -> std::sync::MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

struct FStore(Shared);
struct FDirectory(Shared);
struct FChannels(Shared);
struct FIssuer(Shared);
struct FNotifier;
struct FClock(Shared);
struct FIds(Shared);
struct FPool(Shared);

#[async_trait]
impl VoiceRoomStore for FStore {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let mut w = lock(&self.0);
        if let Some(r) = w
            .rooms
            .values()
            .find(|r| r.is_active() && r.chat_room() == room.chat_room())
        {
            return Err(StoreError::AlreadyActive {
                existing: r.id().clone(),
            });
        }
        w.rooms.insert(room.id().clone(), room.clone());
        Ok(())
    }
    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        Ok(lock(&self.0).rooms.get(id).cloned())
    }
    async fn active_in_chat_room(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError> {
        Ok(lock(&self.0)
            .rooms
            .values()
            .find(|r| r.is_active() && r.chat_room() == chat_room)
            .cloned())
    }
    async fn active_with_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<VoiceRoom>, StoreError> {
        Ok(lock(&self.0)
            .rooms
            .values()
            .filter(|r| r.is_active() && r.participant_on(connection).is_some())
            .cloned()
            .collect())
    }
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let mut w = lock(&self.0);
        let stored = w.rooms.get(room.id()).ok_or(StoreError::NotFound)?;
        if stored.version() + 1 != room.version() {
            return Err(StoreError::VersionConflict);
        }
        w.rooms.insert(room.id().clone(), room.clone());
        Ok(())
    }
    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        Ok(lock(&self.0)
            .rooms
            .values()
            .filter(|r| r.is_active())
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ChatDirectory for FDirectory {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        Ok(lock(&self.0).live.get(connection).cloned())
    }
    async fn membership(
        &self,
        _chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        Ok(Some(Membership {
            state: MemberState::Approved,
            is_admin: user.as_str() == "u0",
        }))
    }
    async fn connections_of(
        &self,
        _chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        Ok(lock(&self.0).live.keys().cloned().collect())
    }
}

#[async_trait]
impl SignalingChannels for FChannels {
    async fn create(
        &self,
        name: &ChannelName,
        _tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        let mut w = lock(&self.0);
        let ch = SignalingChannel {
            name: name.clone(),
            arn: ChannelArn::parse(format!(
                "arn:aws:kinesisvideo:us-east-1:123456789012:channel/{name}/1"
            ))
            .map_err(|e| {
                ChannelError::Unavailable(voice_domain::ports::PortFailure::permanent(
                    e.to_string(),
                ))
            })?,
        };
        let now = Timestamp::from_millis(w.now);
        w.channels
            .insert(ch.arn.as_str().to_owned(), (ch.clone(), now));
        Ok(ch)
    }
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        lock(&self.0).channels.remove(channel.arn.as_str());
        Ok(())
    }
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        _role: ChannelRole,
        _client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        if !lock(&self.0).channels.contains_key(channel.arn.as_str()) {
            return Err(ChannelError::NotFound);
        }
        Ok(ChannelEndpoints {
            wss: "wss://signal".to_owned(),
            https: None,
            ice_servers: Vec::new(),
        })
    }
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        Ok(lock(&self.0)
            .channels
            .values()
            .map(|(channel, created_at)| ListedChannel {
                channel: channel.clone(),
                tags: None,
                created_at: *created_at,
            })
            .collect())
    }
}

#[async_trait]
impl CredentialIssuer for FIssuer {
    async fn issue(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, CredentialError> {
        let now = {
            let mut w = lock(&self.0);
            if let Some(hook) = w.on_issue.take() {
                hook(&mut w);
            }
            Timestamp::from_millis(w.now)
        };
        Ok(IssuedCredentials {
            credentials: Credentials::Token {
                token: Secret::new("t"),
            },
            expires_at: now.plus(request.ttl),
        })
    }
}

#[async_trait]
impl Notifier for FNotifier {
    async fn send(&self, _to: &ConnectionId, _event: &VoiceEvent) -> Result<(), NotifyError> {
        Ok(())
    }
}

impl Clock for FClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(lock(&self.0).now)
    }
}

impl IdGenerator for FIds {
    fn voice_room_id(&self) -> VoiceRoomId {
        let mut w = lock(&self.0);
        w.next_id += 1;
        VoiceRoomId::parse(format!("vr-{}", w.next_id)).expect("valid id")
    }
    fn channel_name(&self) -> ChannelName {
        let mut w = lock(&self.0);
        w.next_id += 1;
        ChannelName::from_unique(&format!("c{}", w.next_id)).expect("valid name")
    }
}

/// Records `w.pool[i]` as held by `holder` since `now` (and the claim, for the overlap check).
fn take(w: &mut World, i: usize, holder: &LeaseHolder, now: Timestamp) -> (ChannelLease, PoolSlot) {
    let was = std::mem::replace(
        &mut w.pool[i].slot,
        PoolSlot::Held {
            holder: holder.clone(),
            claimed_at: now,
        },
    );
    let channel = w.pool[i].channel.clone();
    w.seq += 1;
    let at = (w.seq, now.as_millis());
    w.claims
        .entry(channel.arn.as_str().to_owned())
        .or_default()
        .push(at);
    (
        ChannelLease {
            channel,
            holder: holder.clone(),
            claimed_at: now,
        },
        was,
    )
}

#[async_trait]
impl ChannelPool for FPool {
    fn is_pooling(&self) -> bool {
        true
    }
    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        let mut w = lock(&self.0);
        let broken = w.ignore_quarantine;
        let Some(i) = w.pool.iter().position(
            |p| matches!(p.slot, PoolSlot::Free { free_from, .. } if broken || free_from <= now),
        ) else {
            return Ok(None);
        };
        Ok(Some(take(&mut w, i, holder, now)))
    }
    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        let w = lock(&self.0);
        let broken = w.ignore_quarantine;
        Ok(w
            .pool
            .iter()
            .find(|p| matches!(p.slot, PoolSlot::Free { free_from, .. } if broken || free_from <= now))
            .map(|p| p.channel.arn.clone()))
    }
    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        let mut w = lock(&self.0);
        let broken = w.ignore_quarantine;
        let Some(i) = w.pool.iter().position(|p| {
            p.channel.arn == *arn
                && matches!(p.slot, PoolSlot::Free { free_from, .. } if broken || free_from <= now)
        }) else {
            return Ok(None);
        };
        Ok(Some(take(&mut w, i, holder, now)))
    }
    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError> {
        let mut w = lock(&self.0);
        w.pool.push(PooledChannel {
            channel: lease.channel.clone(),
            slot: PoolSlot::Held {
                holder: lease.holder.clone(),
                claimed_at: lease.claimed_at,
            },
        });
        w.seq += 1;
        let at = (w.seq, lease.claimed_at.as_millis());
        w.claims
            .entry(lease.channel.arn.as_str().to_owned())
            .or_default()
            .push(at);
        Ok(())
    }
    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError> {
        let mut w = lock(&self.0);
        let p = w
            .pool
            .iter_mut()
            .find(|p| p.channel == *channel)
            .ok_or(PoolError::NotHeld)?;
        match &p.slot {
            PoolSlot::Held { holder, .. } if holder.voice_room == *voice_room => {
                p.slot = PoolSlot::Free {
                    released_at,
                    free_from,
                };
                Ok(())
            }
            _ => Err(PoolError::NotHeld),
        }
    }
    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        Ok(lock(&self.0).pool.clone())
    }
    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        let mut w = lock(&self.0);
        let before = w.pool.len();
        w.pool.retain(|p| {
            !(p.channel == *channel
                && matches!(p.slot, PoolSlot::Free { released_at: r, .. } if r == released_at))
        });
        Ok(w.pool.len() < before)
    }
}

struct ModelPorts;

impl Ports for ModelPorts {
    type Store = FStore;
    type Directory = FDirectory;
    type Channels = FChannels;
    type Credentials = FIssuer;
    type Notifier = FNotifier;
    type Clock = FClock;
    type Ids = FIds;
    type Pool = FPool;
}

#[derive(Debug, Clone)]
enum Cmd {
    Start {
        chat: usize,
        user: usize,
    },
    /// Join, or refresh when already in.
    Join {
        chat: usize,
        user: usize,
    },
    Leave {
        chat: usize,
        user: usize,
    },
    End {
        chat: usize,
        user: usize,
    },
    Disconnect {
        user: usize,
    },
    Advance {
        secs: u64,
    },
    /// `getVoiceRoom` from the user's connection: a keepalive if it is a participant.
    Keepalive {
        chat: usize,
        user: usize,
    },
    Sweep,
}

/// The liveness timeout of the cases with the rule on (the Lambda's default).
const LIVENESS: Duration = Duration::from_secs(10);

fn cmd() -> impl Strategy<Value = Cmd> {
    let chat = 0..CHATS;
    let user = 0..USERS;
    prop_oneof![
        2 => (chat.clone(), user.clone()).prop_map(|(chat, user)| Cmd::Start { chat, user }),
        6 => (chat.clone(), user.clone()).prop_map(|(chat, user)| Cmd::Join { chat, user }),
        3 => (chat.clone(), user.clone()).prop_map(|(chat, user)| Cmd::Leave { chat, user }),
        1 => (chat, user.clone()).prop_map(|(chat, user)| Cmd::End { chat, user }),
        1 => user.clone().prop_map(|user| Cmd::Disconnect { user }),
        4 => prop::sample::select(vec![1u64, 5, 12, 20, 600, 3600, 7300, 8 * 24 * 3600])
            .prop_map(|secs| Cmd::Advance { secs }),
        4 => (0..CHATS, user).prop_map(|(chat, user)| Cmd::Keepalive { chat, user }),
        2 => Just(Cmd::Sweep),
    ]
}

struct Model {
    w: Shared,
    svc: VoiceService<ModelPorts>,
}

fn user_id(u: usize) -> UserId {
    UserId::parse(format!("u{u}")).expect("valid user")
}

fn chat_id(c: usize) -> ChatRoomId {
    ChatRoomId::parse(format!("chat-{c}")).expect("valid chat room")
}

impl Model {
    fn new() -> Self {
        Self::with_liveness(None)
    }

    /// A model whose service applies the AWS liveness rule with `liveness` as its timeout.
    fn with_liveness(liveness: Option<Duration>) -> Self {
        let w: Shared = Arc::new(Mutex::new(World {
            now: T0,
            ..World::default()
        }));
        {
            let mut g = lock(&w);
            for u in 0..USERS {
                let c = ConnectionId::parse(format!("c-u{u}-0")).expect("valid connection");
                g.live.insert(c, user_id(u));
            }
        }
        let svc = VoiceService::new(
            Adapters::<ModelPorts> {
                store: FStore(w.clone()),
                directory: FDirectory(w.clone()),
                channels: FChannels(w.clone()),
                credentials: FIssuer(w.clone()),
                notifier: FNotifier,
                clock: FClock(w.clone()),
                ids: FIds(w.clone()),
                pool: FPool(w.clone()),
            },
            ServiceConfig {
                liveness_timeout: liveness,
                ..ServiceConfig::default()
            },
        );
        Self { w, svc }
    }

    fn conn(&self, u: usize) -> ConnectionId {
        let g = lock(&self.w).generation[u];
        ConnectionId::parse(format!("c-u{u}-{g}")).expect("valid connection")
    }

    fn active(&self, chat: usize) -> Option<VoiceRoomId> {
        let w = lock(&self.w);
        w.rooms
            .values()
            .find(|r| r.is_active() && r.chat_room() == &chat_id(chat))
            .map(|r| r.id().clone())
    }

    fn run(&self, cmd: &Cmd) -> Result<(), TestCaseError> {
        match *cmd {
            Cmd::Start { chat, user } => {
                let _ = block_on(self.svc.start_voice(&self.conn(user), &chat_id(chat)));
            }
            Cmd::Join { chat, user } => {
                let Some(room) = self.active(chat) else {
                    return Ok(());
                };
                if let Ok(grant) = block_on(self.svc.join_voice(&self.conn(user), &room)) {
                    self.record(&grant)?;
                }
            }
            Cmd::Leave { chat, user } => {
                if let Some(room) = self.active(chat) {
                    let _ = block_on(self.svc.leave_voice(&self.conn(user), &room));
                }
            }
            Cmd::End { chat, user } => {
                if let Some(room) = self.active(chat) {
                    let _ = block_on(self.svc.end_voice(&self.conn(user), &room));
                }
            }
            Cmd::Disconnect { user } => {
                let old = self.conn(user);
                {
                    let mut w = lock(&self.w);
                    w.live.remove(&old);
                    w.generation[user] += 1;
                    let g = w.generation[user];
                    let new =
                        ConnectionId::parse(format!("c-u{user}-{g}")).expect("valid connection");
                    w.live.insert(new, user_id(user));
                }
                let _ = block_on(self.svc.on_disconnect(&old));
            }
            Cmd::Advance { secs } => lock(&self.w).now += secs * 1000,
            Cmd::Keepalive { chat, user } => {
                let caller = self.conn(user);
                let Ok(Some(_)) = block_on(self.svc.active_voice(&caller, &chat_id(chat))) else {
                    return Ok(());
                };
                let Some(timeout) = self.svc.config().liveness_timeout else {
                    return Ok(());
                };
                let grace = self.svc.config().reconnect_grace;
                let w = lock(&self.w);
                let now = Timestamp::from_millis(w.now);
                let Some(room) = w
                    .rooms
                    .values()
                    .find(|r| r.is_active() && r.chat_room() == &chat_id(chat))
                    .filter(|r| r.participant_on(&caller).is_some())
                else {
                    return Ok(());
                };
                for p in room.participants() {
                    if p.connection == caller {
                        prop_assert!(
                            !p.is_reconnecting(),
                            "{} kept alive but reconnecting",
                            p.user
                        );
                    } else if let Some(since) = p.reconnecting_since {
                        prop_assert!(
                            now.since(since) < grace,
                            "{} reconnecting past the grace after a keepalive",
                            p.user
                        );
                    } else {
                        prop_assert!(
                            now.since(p.last_heard()) < timeout,
                            "{} silent past the timeout after a keepalive",
                            p.user
                        );
                    }
                }
            }
            Cmd::Sweep => {
                block_on(self.svc.sweep())
                    .map_err(|e| TestCaseError::fail(format!("sweep failed: {e}")))?;
                let policy = self.svc.lease_policy();
                let w = lock(&self.w);
                let now = Timestamp::from_millis(w.now);
                for p in &w.pool {
                    prop_assert!(
                        !policy.idle(&p.slot, now),
                        "an idle channel survived the sweep: {p:?}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Records the credentials of a grant, checking that every channel they name is held.
    fn record(&self, grant: &voice_domain::VoiceGrant) -> Result<(), TestCaseError> {
        let cap = self.svc.lease_policy().session_cap;
        let end = grant.credentials.expires_at.plus(cap).as_millis();
        let mut w = lock(&self.w);
        w.seq += 1;
        let seq = w.seq;
        let channels = std::iter::once(&grant.own.channel)
            .chain(grant.peers.iter().map(|p| &p.access.channel));
        for ch in channels {
            let held = w.pool.iter().any(|p| {
                p.channel == *ch && matches!(&p.slot, PoolSlot::Held { holder, .. } if holder.voice_room == *grant.room.id())
            });
            prop_assert!(
                held,
                "credentials for {} which the room does not hold",
                ch.name
            );
            w.delivered.push((seq, ch.arn.as_str().to_owned(), end));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut w = lock(&self.w);
        let now = Timestamp::from_millis(w.now);
        // No overlap: a credential's window ends before its channel's next claim.
        for (seq, arn, end) in &w.delivered {
            if let Some((_, at)) = w
                .claims
                .get(arn)
                .and_then(|c| c.iter().find(|(s, _)| s > seq))
            {
                prop_assert!(
                    end <= at,
                    "channel {arn} claimed at {at} while a credential issued for it works until {end}"
                );
            }
        }
        // Participants' channels are held by their room; pooled channels exist.
        for r in w.rooms.values().filter(|r| r.is_active()) {
            for p in r.participants() {
                let held = w.pool.iter().any(|e| {
                    e.channel == p.channel
                        && matches!(&e.slot, PoolSlot::Held { holder, .. } if holder.voice_room == *r.id())
                });
                prop_assert!(
                    held,
                    "{} holds {} but the pool does not say so",
                    p.user,
                    p.channel.name
                );
            }
        }
        for e in &w.pool {
            prop_assert!(
                w.channels.contains_key(e.channel.arn.as_str()),
                "pooled channel {} does not exist",
                e.channel.name
            );
        }
        // Pool size ≤ peak holders (held, or in quarantine).
        let holders = w
            .pool
            .iter()
            .filter(|e| match e.slot {
                PoolSlot::Held { .. } => true,
                PoolSlot::Free { free_from, .. } => free_from > now,
            })
            .count();
        w.peak_holders = w.peak_holders.max(holders);
        prop_assert!(
            w.pool.len() <= w.peak_holders,
            "pool of {} channels, but at most {} were ever held or in quarantine",
            w.pool.len(),
            w.peak_holders
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pooled_channels_never_overlap_credential_windows(
        cmds in prop::collection::vec(cmd(), 1..80),
        liveness in any::<bool>(),
    ) {
        let m = Model::with_liveness(liveness.then_some(LIVENESS));
        for c in &cmds {
            m.run(c)?;
            m.check()?;
        }
    }
}

/// The scenario the pool exists for: a daily meeting of the same size reuses yesterday's
/// channels (no creation) once their quarantine is over, and within it gets new ones.
#[test]
fn a_daily_meeting_reuses_its_channels() {
    let m = Model::new();
    let day = |m: &Model| {
        m.run(&Cmd::Start { chat: 0, user: 0 }).unwrap();
        for u in 0..USERS {
            m.run(&Cmd::Join { chat: 0, user: u }).unwrap();
        }
        m.run(&Cmd::Advance { secs: 3600 }).unwrap();
        m.run(&Cmd::End { chat: 0, user: 0 }).unwrap();
        m.check().unwrap();
    };
    day(&m);
    assert_eq!(lock(&m.w).channels.len(), USERS);
    m.run(&Cmd::Advance { secs: 23 * 3600 }).unwrap();
    day(&m);
    assert_eq!(
        lock(&m.w).channels.len(),
        USERS,
        "the second day created channels"
    );
    // Within the quarantine the same meeting cannot reuse them: it gets new ones.
    m.run(&Cmd::Advance { secs: 60 }).unwrap();
    day(&m);
    assert_eq!(lock(&m.w).channels.len(), 2 * USERS);
    // A week without meetings: the sweep deletes them all.
    m.run(&Cmd::Advance {
        secs: 8 * 24 * 3600,
    })
    .unwrap();
    m.run(&Cmd::Sweep).unwrap();
    assert!(lock(&m.w).channels.is_empty());
    assert!(lock(&m.w).pool.is_empty());
}

/// A refresh writes nothing, so only a second read proves that the peers in its plan still held
/// their channels after the issue. Here a peer leaves (and its channel goes into quarantine)
/// while the refresh's credentials are being issued: the refresh must come back with a plan
/// without that channel, never with credentials for a channel in quarantine.
#[test]
fn a_refresh_racing_a_leave_does_not_name_the_released_channel() {
    let m = Model::new();
    m.run(&Cmd::Start { chat: 0, user: 0 }).unwrap();
    m.run(&Cmd::Join { chat: 0, user: 0 }).unwrap();
    m.run(&Cmd::Join { chat: 0, user: 1 }).unwrap();
    m.run(&Cmd::Join { chat: 0, user: 2 }).unwrap();
    let room = m.active(0).unwrap();
    let policy = m.svc.lease_policy();
    let leaver = user_id(1);
    let gone = lock(&m.w).rooms[&room]
        .participant(&leaver)
        .unwrap()
        .channel
        .clone();
    let hook_room = room.clone();
    let hook_gone = gone.clone();
    lock(&m.w).on_issue = Some(Box::new(move |w: &mut World| {
        let now = Timestamp::from_millis(w.now);
        let r = w.rooms.get_mut(&hook_room).unwrap();
        r.leave(&leaver, voice_domain::room::LeaveReason::Left, now)
            .unwrap();
        r.bump_version();
        let p = w.pool.iter_mut().find(|p| p.channel == hook_gone).unwrap();
        p.slot = PoolSlot::Free {
            released_at: now,
            free_from: policy.free_from(now, true),
        };
    }));
    let grant = block_on(m.svc.join_voice(&m.conn(2), &room)).unwrap();
    assert!(lock(&m.w).on_issue.is_none(), "the race did not happen");
    assert!(
        grant.peers.iter().all(|p| p.access.channel != gone),
        "the refresh handed out credentials for a channel in quarantine"
    );
    m.record(&grant).unwrap();
}

/// The service checks the rule itself: a pool adapter that offers a channel still in quarantine
/// gets it back unchanged, and the join runs on a new channel.
#[test]
fn a_channel_offered_in_quarantine_is_put_back_and_not_used() {
    let m = Model::new();
    m.run(&Cmd::Start { chat: 0, user: 0 }).unwrap();
    m.run(&Cmd::Join { chat: 0, user: 0 }).unwrap();
    m.run(&Cmd::Join { chat: 0, user: 1 }).unwrap();
    m.run(&Cmd::Leave { chat: 0, user: 1 }).unwrap();
    let before = lock(&m.w)
        .pool
        .iter()
        .find(|p| matches!(p.slot, PoolSlot::Free { .. }))
        .cloned()
        .unwrap();
    lock(&m.w).ignore_quarantine = true;
    // (`record` inside `run` checks that the grant names only channels its room holds.)
    m.run(&Cmd::Join { chat: 0, user: 2 }).unwrap();
    let w = lock(&m.w);
    assert_eq!(w.channels.len(), 3, "the join did not get a new channel");
    let after = w.pool.iter().find(|p| p.channel == before.channel).unwrap();
    assert_eq!(
        after.slot, before.slot,
        "the quarantined channel was not put back as it was"
    );
}
