//! How many AWS round trips a join waits for, one after the other (issue 14: "≤ 3 sequential
//! AWS round trips for the 10th joiner, measured with a fake that adds 50 ms per call").
//!
//! The service runs on the in-memory adapters, each port wrapped in [`Delayed`], which adds
//! [`ROUND_TRIP`] per AWS call the AWS adapter makes for that port method (cold caches, the
//! adapters' code: [`aws_round_trips`]). The clock is tokio's paused clock, so the figures are
//! exact and the run takes no real time: a join's virtual duration divided by 50 ms *is* its
//! number of sequential round trips, independent of machine load (a test may assert it).
//!
//! Every call is logged with its start, so the report also splits the depth by service
//! (DynamoDB, KVS + STS, API Gateway) and counts the calls (`GetIceServerConfig` is the
//! `endpoints` call; `signaling_endpoints` makes none).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryPool,
    MemoryStore, SequentialIds,
};
use voice_domain::pool::{
    ChannelLease, ChannelPool, LeaseHolder, NoPool, PoolError, PoolSlot, PooledChannel,
};
use voice_domain::ports::{
    Adapters, ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, Clock as _,
    CredentialError, CredentialIssuer, CredentialRequest, DirectoryError, IdGenerator as _,
    IssuedCredentials, ListedChannel, Membership, Notifier, NotifyError, Ports, SignalingChannels,
    StoreError, VoiceRoomStore,
};
use voice_domain::{
    ChannelArn, ChannelName, ChannelRole, ChatRoomId, ClientId, ConnectionId, ServiceConfig,
    SignalingChannel, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId, VoiceService,
};

/// What the fake adds per AWS call.
pub const ROUND_TRIP: Duration = Duration::from_millis(50);

/// Which AWS service a port method calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// DynamoDB (voice rooms, the chat app's tables, the channel pool).
    Dynamo,
    /// Kinesis Video Streams and STS (channels, endpoints, TURN, credentials).
    KvsSts,
    /// API Gateway's management API (notifications).
    ApiGateway,
}

/// AWS round trips (sequential, cold caches) behind one port call, and the service, from the
/// AWS adapters' code (voice-adapters-aws/src).
pub fn aws_round_trips(call: &str) -> (u32, Service) {
    use Service::*;
    match call {
        // directory.rs: GetItem on the connections table / on the chat room.
        "directory.user_of" | "directory.membership" => (1, Dynamo),
        // directory.rs: the chat room's item, then its members' connections (a query).
        "directory.connections_of" => (2, Dynamo),
        // store.rs: GetItem; PutItem (a conditional put: the room stays active).
        "store.get" | "store.update" => (1, Dynamo),
        // pool.rs: Query on the free index, then a conditional UpdateItem (only when the query
        // found a candidate: counted by `Delayed::claim`); the Query alone (`find`, limit 1);
        // the conditional UpdateItem alone (`claim_found`); PutItem; UpdateItem.
        "pool.claim" | "pool.find" | "pool.claim_found" | "pool.add" | "pool.release" => {
            (1, Dynamo)
        }
        // channels.rs: CreateSignalingChannel, then DescribeSignalingChannel until ACTIVE (at
        // least once; the fake's channels are ACTIVE at once).
        "channels.create" => (2, KvsSts),
        // channels.rs: GetSignalingChannelEndpoint (cached per warm instance; counted cold),
        // then GetIceServerConfig on the HTTPS endpoint it returns.
        "channels.endpoints" => (2, KvsSts),
        // channels.rs: GetSignalingChannelEndpoint only (counted cold).
        "channels.signaling_endpoints" => (1, KvsSts),
        // credentials.rs: AssumeRole with the session policy.
        "credentials.issue" => (1, KvsSts),
        // notifier.rs: PostToConnection.
        "notifier.send" => (1, ApiGateway),
        _ => (1, Dynamo),
    }
}

/// One port call, as logged.
#[derive(Debug, Clone)]
pub struct Call {
    /// `port.method`.
    pub name: &'static str,
    /// Virtual time since the log's origin.
    pub start: Duration,
    /// When it answered.
    pub end: Duration,
}

/// The calls of one run, shared by every wrapper.
#[derive(Clone)]
pub struct CallLog {
    origin: Arc<Mutex<Instant>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Default for CallLog {
    fn default() -> Self {
        Self {
            origin: Arc::new(Mutex::new(Instant::now())),
            calls: Arc::default(),
        }
    }
}

impl CallLog {
    /// Forgets the calls so far and starts the clock again.
    pub fn reset(&self) {
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn since(&self) -> Duration {
        Instant::now() - *self.origin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls since the last reset.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many calls named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.calls().iter().filter(|c| c.name == name).count()
    }
}

/// A port that takes [`aws_round_trips`] × [`ROUND_TRIP`] per call (half before reaching the
/// in-memory state, the rest after, as a request and its answer would).
#[derive(Clone)]
pub struct Delayed<T> {
    inner: T,
    log: CallLog,
}

impl<T> Delayed<T> {
    /// `inner`, logging into `log`.
    pub fn new(inner: T, log: &CallLog) -> Self {
        Self {
            inner,
            log: log.clone(),
        }
    }

    async fn call<R>(&self, name: &'static str, f: impl std::future::Future<Output = R>) -> R {
        let (rts, _) = aws_round_trips(name);
        self.timed(name, rts, f).await
    }

    async fn timed<R>(
        &self,
        name: &'static str,
        rts: u32,
        f: impl std::future::Future<Output = R>,
    ) -> R {
        let start = self.log.since();
        let total = ROUND_TRIP * rts;
        tokio::time::sleep(total - ROUND_TRIP / 2).await;
        let out = f.await;
        tokio::time::sleep(ROUND_TRIP / 2).await;
        let end = self.log.since();
        self.log
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Call { name, start, end });
        out
    }
}

#[async_trait]
impl<T: VoiceRoomStore> VoiceRoomStore for Delayed<T> {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        self.call("store.create", self.inner.create_if_none_active(room))
            .await
    }
    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        self.call("store.get", self.inner.get(id)).await
    }
    async fn active_in_chat_room(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError> {
        self.call(
            "store.active_in_chat_room",
            self.inner.active_in_chat_room(chat_room),
        )
        .await
    }
    async fn active_ids_in_chat_rooms(
        &self,
        chat_rooms: &[ChatRoomId],
    ) -> Result<std::collections::HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        self.call(
            "store.active_ids_in_chat_rooms",
            self.inner.active_ids_in_chat_rooms(chat_rooms),
        )
        .await
    }
    async fn active_with_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<VoiceRoom>, StoreError> {
        self.call(
            "store.active_with_connection",
            self.inner.active_with_connection(connection),
        )
        .await
    }
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        // store.rs: a lost compare-and-set is told from "not found" by one more GetItem.
        let out = self.call("store.update", self.inner.update(room)).await;
        if out == Err(StoreError::VersionConflict) {
            self.timed("store.update_conflict_read", 1, async {}).await;
        }
        out
    }
    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        self.call("store.list_active", self.inner.list_active())
            .await
    }
}

#[async_trait]
impl<T: ChatDirectory> ChatDirectory for Delayed<T> {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        self.call("directory.user_of", self.inner.user_of(connection))
            .await
    }
    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        self.call(
            "directory.membership",
            self.inner.membership(chat_room, user),
        )
        .await
    }
    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        self.call(
            "directory.connections_of",
            self.inner.connections_of(chat_room),
        )
        .await
    }
}

#[async_trait]
impl<T: SignalingChannels> SignalingChannels for Delayed<T> {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        self.call("channels.create", self.inner.create(name, tags))
            .await
    }
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        self.call("channels.delete", self.inner.delete(channel))
            .await
    }
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        self.call(
            "channels.endpoints",
            self.inner.endpoints(channel, role, client_id),
        )
        .await
    }
    async fn signaling_endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        self.call(
            "channels.signaling_endpoints",
            self.inner.signaling_endpoints(channel, role, client_id),
        )
        .await
    }
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        self.call("channels.list", self.inner.list()).await
    }
}

#[async_trait]
impl<T: CredentialIssuer> CredentialIssuer for Delayed<T> {
    async fn issue(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, CredentialError> {
        self.call("credentials.issue", self.inner.issue(request))
            .await
    }
}

#[async_trait]
impl<T: Notifier> Notifier for Delayed<T> {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        self.call("notifier.send", self.inner.send(to, event)).await
    }
}

#[async_trait]
impl<T: ChannelPool> ChannelPool for Delayed<T> {
    fn is_pooling(&self) -> bool {
        self.inner.is_pooling()
    }
    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        // pool.rs: the Query, then (only with a candidate) the conditional UpdateItem.
        let out = self.call("pool.claim", self.inner.claim(holder, now)).await;
        if matches!(out, Ok(Some(_))) {
            self.timed("pool.claim_update", 1, async {}).await;
        }
        out
    }
    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        self.call("pool.find", self.inner.find(now)).await
    }
    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        self.call("pool.claim_found", self.inner.claim_found(arn, holder, now))
            .await
    }
    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError> {
        self.call("pool.add", self.inner.add(lease)).await
    }
    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError> {
        self.call(
            "pool.release",
            self.inner
                .release(channel, voice_room, released_at, free_from),
        )
        .await
    }
    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        self.call("pool.list", self.inner.list()).await
    }
    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        self.call("pool.evict", self.inner.evict(channel, released_at))
            .await
    }
}

/// How the joiner gets its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The pool has a free channel (steady state on AWS).
    PoolHit,
    /// The pool is empty: the join creates a channel and records it in the pool.
    PoolMiss,
    /// No pool at all.
    Unpooled,
}

/// One measured join.
#[derive(Debug, Clone)]
pub struct Depth {
    /// Which path.
    pub path: Path,
    /// The joiner's place (10 = the 10th).
    pub nth: usize,
    /// Sequential AWS round trips until `join_voice` returned (publishing included).
    pub total: u32,
    /// Sequential round trips until the room write answered (the join is recorded).
    pub to_write: u32,
    /// Layers (round trips) in which at least one KVS or STS call was in flight.
    pub kvs_sts: u32,
    /// Layers with a DynamoDB call in flight.
    pub dynamo: u32,
    /// Calls by name, in first-call order.
    pub calls: Vec<(&'static str, usize)>,
}

/// The calls logged, as (name, count) in first-call order.
fn counted(calls: &[Call]) -> Vec<(&'static str, usize)> {
    let mut out: Vec<(&'static str, usize)> = Vec::new();
    for c in calls {
        match out.iter_mut().find(|(n, _)| *n == c.name) {
            Some((_, k)) => *k += 1,
            None => out.push((c.name, 1)),
        }
    }
    out
}

/// How many [`ROUND_TRIP`] slots contain a call of `service`.
fn layers(calls: &[Call], service: Service) -> u32 {
    let mut slots = std::collections::BTreeSet::new();
    for c in calls {
        let (_, s) = aws_round_trips(c.name);
        let s = match c.name {
            "pool.claim_update" | "store.update_conflict_read" => Service::Dynamo,
            _ => s,
        };
        if s != service {
            continue;
        }
        let first = (c.start.as_millis() / ROUND_TRIP.as_millis()) as u64;
        let last = (c.end.as_millis().saturating_sub(1) / ROUND_TRIP.as_millis()) as u64;
        slots.extend(first..=last);
    }
    slots.len() as u32
}

fn rts(d: Duration) -> u32 {
    (d.as_millis() / ROUND_TRIP.as_millis()) as u32
}

/// A room that the `n`-th participant joins, and the handles to set it up.
struct Room<P: Ports> {
    service: VoiceService<P>,
    log: CallLog,
    chat: ChatRoomId,
}

fn user(i: usize) -> UserId {
    UserId::parse(format!("u{i}")).expect("valid user id")
}

fn conn(i: usize) -> ConnectionId {
    ConnectionId::parse(format!("c{i}=")).expect("valid connection id")
}

fn adapters<Pool>(log: &CallLog, pool: Pool) -> (Adapters<GenericPorts<Pool>>, MemoryDirectory)
where
    Pool: ChannelPool,
{
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let directory = MemoryDirectory::new();
    (
        Adapters {
            store: Delayed::new(MemoryStore::new(), log),
            directory: Delayed::new(directory.clone(), log),
            channels: Delayed::new(MemoryChannels::new(clock.clone()), log),
            credentials: Delayed::new(MemoryCredentials::new(clock.clone()), log),
            notifier: Delayed::new(MemoryNotifier::new(), log),
            clock,
            ids: SequentialIds::default(),
            pool: Delayed::new(pool, log),
        },
        directory,
    )
}

/// Delayed memory ports over any pool.
pub struct GenericPorts<Pool>(std::marker::PhantomData<Pool>);

impl<Pool: ChannelPool> Ports for GenericPorts<Pool> {
    type Store = Delayed<MemoryStore>;
    type Directory = Delayed<MemoryDirectory>;
    type Channels = Delayed<MemoryChannels<ManualClock>>;
    type Credentials = Delayed<MemoryCredentials<ManualClock>>;
    type Notifier = Delayed<MemoryNotifier>;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = Delayed<Pool>;
}

fn room<Pool: ChannelPool>(pool: Pool, members: usize) -> Room<GenericPorts<Pool>> {
    let log = CallLog::default();
    let (adapters, directory) = adapters(&log, pool);
    let chat = ChatRoomId::parse("chat-1").expect("valid chat room id");
    directory.connect(conn(0), user(0));
    directory
        .create_room(chat.clone(), user(0))
        .expect("new chat room");
    for i in 1..members {
        directory.connect(conn(i), user(i));
        directory
            .request_join(&chat, user(i))
            .expect("join request");
        directory.approve(&chat, &user(i)).expect("approval");
    }
    Room {
        service: VoiceService::new(adapters, ServiceConfig::default()),
        log,
        chat,
    }
}

/// Puts `n` free channels, out of quarantine, into the pool behind `service`.
async fn seed_pool<P: Ports>(service: &VoiceService<P>, n: usize) {
    let ports = service.ports();
    let now = ports.clock.now();
    for i in 0..n {
        let room = VoiceRoomId::parse(format!("seed-{i}")).expect("valid id");
        let tags = ChannelTags {
            chat_room: ChatRoomId::parse("seed").expect("valid id"),
            voice_room: room.clone(),
            owner: user(100 + i),
        };
        let channel = ports
            .channels
            .create(&ports.ids.channel_name(), &tags)
            .await
            .expect("memory channel");
        let holder = LeaseHolder {
            voice_room: room.clone(),
            user: tags.owner.clone(),
        };
        ports
            .pool
            .add(&ChannelLease {
                channel: channel.clone(),
                holder,
                claimed_at: now,
            })
            .await
            .expect("pool add");
        ports
            .pool
            .release(&channel, &room, now, now)
            .await
            .expect("pool release");
    }
}

/// The `nth` participant joins a room of `nth - 1` (joined one after another beforehand).
pub async fn nth_joiner(path: Path, nth: usize) -> Depth {
    match path {
        Path::Unpooled => measure(room(NoPool, nth), path, nth, 0).await,
        Path::PoolHit => measure(room(MemoryPool::new(), nth), path, nth, nth).await,
        Path::PoolMiss => measure(room(MemoryPool::new(), nth), path, nth, nth - 1).await,
    }
}

async fn measure<Pool: ChannelPool>(
    r: Room<GenericPorts<Pool>>,
    path: Path,
    nth: usize,
    seeded: usize,
) -> Depth {
    seed_pool(&r.service, seeded).await;
    let room = r
        .service
        .start_voice(&conn(0), &r.chat)
        .await
        .expect("voice room starts");
    for i in 1..nth - 1 {
        r.service
            .join_voice(&conn(i), room.id())
            .await
            .expect("earlier join");
    }
    r.log.reset();
    let grant = r
        .service
        .join_voice(&conn(nth - 1), room.id())
        .await
        .expect("measured join");
    let total = r.log.since();
    assert_eq!(grant.peers.len(), nth - 1);
    let calls = r.log.calls();
    let to_write = calls
        .iter()
        .filter(|c| c.name == "store.update")
        .map(|c| c.end)
        .max()
        .unwrap_or(total);
    Depth {
        path,
        nth,
        total: rts(total),
        to_write: rts(to_write),
        kvs_sts: layers(&calls, Service::KvsSts),
        dynamo: layers(&calls, Service::Dynamo),
        calls: counted(&calls),
    }
}

/// Ten joins at once (the first starts the room, nine join together), pooled (`pooled`, with
/// nine free channels) or not: the calls they make in all, and the slowest one's depth.
#[derive(Debug, Clone)]
pub struct Burst {
    /// With a pool.
    pub pooled: bool,
    /// Sequential round trips until the last join returned.
    pub slowest: u32,
    /// Calls by name.
    pub calls: Vec<(&'static str, usize)>,
}

/// See [`Burst`].
pub async fn burst(pooled: bool) -> Burst {
    if pooled {
        burst_in(room(MemoryPool::new(), 10), true).await
    } else {
        burst_in(room(NoPool, 10), false).await
    }
}

async fn burst_in<Pool: ChannelPool>(r: Room<GenericPorts<Pool>>, pooled: bool) -> Burst {
    seed_pool(&r.service, if pooled { 10 } else { 0 }).await;
    let room = r
        .service
        .start_voice(&conn(0), &r.chat)
        .await
        .expect("voice room starts");
    r.log.reset();
    let conns: Vec<ConnectionId> = (1..10).map(conn).collect();
    let joins = conns.iter().map(|c| r.service.join_voice(c, room.id()));
    let grants = futures_util::future::join_all(joins).await;
    let slowest = r.log.since();
    for g in grants {
        g.expect("every join succeeds");
    }
    Burst {
        pooled,
        slowest: rts(slowest),
        calls: counted(&r.log.calls()),
    }
}

/// Runs every measurement on a paused-clock runtime and returns the lines of the report.
pub fn report() -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        let mut lines = Vec::new();
        for path in [Path::PoolHit, Path::PoolMiss, Path::Unpooled] {
            let d = nth_joiner(path, 10).await;
            lines.push(format!(
                "10th joiner {:?}: {} sequential round trips to the reply ({} to the room write); KVS+STS in {}, DynamoDB in {}; calls {:?}",
                d.path, d.total, d.to_write, d.kvs_sts, d.dynamo, d.calls
            ));
        }
        for pooled in [true, false] {
            let b = burst(pooled).await;
            lines.push(format!(
                "9 simultaneous joins ({}): slowest {} round trips; calls {:?}",
                if b.pooled { "pooled" } else { "unpooled" },
                b.slowest,
                b.calls
            ));
        }
        lines
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(d: &[(&'static str, usize)], name: &str) -> usize {
        d.iter().find(|(n, _)| *n == name).map_or(0, |(_, k)| *k)
    }

    #[tokio::test(start_paused = true)]
    async fn the_tenth_joiner_waits_for_at_most_three_kvs_sts_round_trips_when_the_pool_has_a_channel(
    ) {
        let d = nth_joiner(Path::PoolHit, 10).await;
        assert!(d.kvs_sts <= 3, "{d:?}");
        // TURN is asked for on the own channel only; the nine peers' endpoints need no TURN.
        assert_eq!(count(&d.calls, "channels.endpoints"), 1, "{d:?}");
        assert_eq!(count(&d.calls, "channels.signaling_endpoints"), 9, "{d:?}");
        assert_eq!(count(&d.calls, "credentials.issue"), 1, "{d:?}");
        // Identify ‖ read the room ‖ find a pooled channel (the Query), gate ‖ claim it (the
        // conditional UpdateItem), endpoints ‖ credentials (2), write.
        assert_eq!(count(&d.calls, "pool.find"), 1, "{d:?}");
        assert_eq!(count(&d.calls, "pool.claim_found"), 1, "{d:?}");
        assert_eq!(count(&d.calls, "pool.claim"), 0, "{d:?}");
        assert_eq!(d.to_write, 5, "{d:?}");
        // The audience was read beside the grant: after the write, only the posts.
        assert_eq!(d.total, d.to_write + 1, "{d:?}");
        assert_eq!(d.total, 6, "{d:?}");
        assert_eq!(count(&d.calls, "directory.connections_of"), 1, "{d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_miss_creates_after_the_gate() {
        let d = nth_joiner(Path::PoolMiss, 10).await;
        // Identify ‖ room ‖ find (an empty Query), gate, Create + Describe ‖ the audience,
        // endpoints ‖ credentials ‖ the new channel's record in the pool (2), write, posts.
        assert_eq!(count(&d.calls, "pool.claim"), 0, "{d:?}");
        assert_eq!(count(&d.calls, "pool.add"), 1, "{d:?}");
        assert_eq!(d.kvs_sts, 4, "{d:?}");
        assert_eq!(d.to_write, 7, "{d:?}");
        assert_eq!(d.total, 8, "{d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_pool_the_tenth_joiner_waits_for_creation_then_endpoints() {
        let d = nth_joiner(Path::Unpooled, 10).await;
        // Create + Describe, then GetSignalingChannelEndpoint → GetIceServerConfig ‖ AssumeRole.
        assert_eq!(d.kvs_sts, 4, "{d:?}");
        assert_eq!(count(&d.calls, "channels.endpoints"), 1, "{d:?}");
        assert_eq!(d.to_write, 7, "{d:?}");
        assert_eq!(d.total, 8, "{d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_race_refetches_only_what_the_new_plan_adds() {
        // Pooled: the nine find the same candidate; one claims it, eight lose that race and
        // claim as before (Query, then the conditional UpdateItem), behind the gate.
        for (pooled, slowest) in [(true, 40), (false, 40)] {
            let b = burst(pooled).await;
            assert_eq!(b.slowest, slowest, "{b:?}");
            // The audience is read once per join, not once per compare-and-set retry.
            assert_eq!(count(&b.calls, "directory.connections_of"), 9, "{b:?}");
            if pooled {
                assert_eq!(count(&b.calls, "pool.claim_found"), 9, "{b:?}");
                assert_eq!(count(&b.calls, "pool.claim"), 8, "{b:?}");
                assert_eq!(count(&b.calls, "channels.create"), 0, "{b:?}");
            }
            // One TURN request per joiner, however many races it loses.
            assert_eq!(count(&b.calls, "channels.endpoints"), 9, "{b:?}");
            // Each peer channel's endpoints once per joiner that views it (36 pairs for nine
            // joiners after the master), never again after a lost race.
            assert_eq!(
                count(&b.calls, "channels.signaling_endpoints"),
                (1..10).sum::<usize>(),
                "{b:?}"
            );
        }
    }
}
