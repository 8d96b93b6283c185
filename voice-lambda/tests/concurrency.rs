//! Concurrency: many callers at the same instant, through [`VoiceService`].
//!
//! - 1 000 concurrent `createVoiceRoom` for one chat room make exactly one active voice room,
//!   every other starter is told `ALREADY_ACTIVE` naming it, and no loser leaves a channel: on
//!   the in-memory adapters, and with the voice rooms on DynamoDB (moto) and the channels on the
//!   fake KVS server.
//! - Concurrent joins at capacity never exceed it, and the losers' channels are deleted.
//! - Concurrent end, joins and leaves leave a consistent room: ended, no participant, no
//!   channel.
//!
//! On the in-memory adapters nothing ever waits, so tasks would run one use case each to the
//! end and never race. The store and the channels are therefore wrapped in [`Yielding`], which
//! yields to the scheduler before every call, so that use cases interleave. For the starts it
//! also holds every starter after its "is there an active room?" read until all of them have
//! read: the worst case, where all 1 000 see none, each creates a channel, and only the store's
//! atomic create-if-none-active stands between them and 1 000 rooms (the test checks that all
//! 1 000 channels were created and 999 deleted).
//!
//! This file lives in voice-lambda because this crate has tokio and both adapter sets.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use voice_adapters_aws::testing::{create_tables, FakeKvs, MotoServer, TestTables};
use voice_adapters_aws::{DynamoStore, KvsChannels};
use voice_adapters_memory::{
    MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
};
use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::errors::{JoinVoiceError, StartVoiceError};
use voice_domain::ports::{
    Adapters, ChannelEndpoints, ChannelError, ChannelTags, ListedChannel, MemberState, Ports,
    SignalingChannels, StoreError, VoiceRoomStore,
};
use voice_domain::{
    Capacity, ChannelName, ChannelRole, ChatRoomId, ClientId, ConnectionId, ServiceConfig,
    SignalingChannel, UserId, VoiceEvent, VoiceRoom, VoiceRoomId, VoiceService,
};

/// Wraps a port so that every call first yields to the scheduler; the store can also hold
/// `active_in_chat_room` callers at a barrier once (see the module doc), and bound how many
/// calls are in flight at once (for moto, see [`IN_FLIGHT`]).
#[derive(Clone)]
struct Yielding<T>(
    T,
    Option<Arc<tokio::sync::Barrier>>,
    Option<Arc<tokio::sync::Semaphore>>,
);

impl<T> Yielding<T> {
    fn new(inner: T) -> Self {
        Self(inner, None, None)
    }

    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::task::yield_now().await;
        match &self.2 {
            Some(s) => Some(s.acquire().await.expect("never closed")),
            None => None,
        }
    }
}

#[async_trait]
impl<T: VoiceRoomStore> VoiceRoomStore for Yielding<T> {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let _slot = self.slot().await;
        self.0.create_if_none_active(room).await
    }
    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        let _slot = self.slot().await;
        self.0.get(id).await
    }
    async fn active_in_chat_room(&self, c: &ChatRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        let slot = self.slot().await;
        let read = self.0.active_in_chat_room(c).await;
        drop(slot);
        if let Some(barrier) = &self.1 {
            barrier.wait().await;
        }
        read
    }
    async fn active_ids_in_chat_rooms(
        &self,
        c: &[ChatRoomId],
    ) -> Result<std::collections::HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        let _slot = self.slot().await;
        self.0.active_ids_in_chat_rooms(c).await
    }
    async fn active_with_connection(&self, c: &ConnectionId) -> Result<Vec<VoiceRoom>, StoreError> {
        let _slot = self.slot().await;
        self.0.active_with_connection(c).await
    }
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let _slot = self.slot().await;
        self.0.update(room).await
    }
    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        let _slot = self.slot().await;
        self.0.list_active().await
    }
}

#[async_trait]
impl<T: SignalingChannels> SignalingChannels for Yielding<T> {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        let _slot = self.slot().await;
        self.0.create(name, tags).await
    }
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        let _slot = self.slot().await;
        self.0.delete(channel).await
    }
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        let _slot = self.slot().await;
        self.0.endpoints(channel, role, client_id).await
    }
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        let _slot = self.slot().await;
        self.0.list().await
    }
}

struct RacePorts;

impl Ports for RacePorts {
    type Store = Yielding<MemoryStore>;
    type Directory = MemoryDirectory;
    type Channels = Yielding<MemoryChannels>;
    type Credentials = MemoryCredentials;
    type Notifier = MemoryNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

fn user(i: usize) -> UserId {
    UserId::parse(format!("u{i}")).unwrap()
}
fn conn(i: usize) -> ConnectionId {
    ConnectionId::parse(format!("c{i}=")).unwrap()
}
fn chat() -> ChatRoomId {
    ChatRoomId::parse("busy-chat").unwrap()
}

/// `n` users, each on its own connection, all approved members of one chat room (u0 its admin).
fn directory(n: usize) -> MemoryDirectory {
    let d = MemoryDirectory::new();
    d.create_room(chat(), user(0)).unwrap();
    for i in 0..n {
        d.connect(conn(i), user(i));
        if i > 0 {
            d.set_state(&chat(), user(i), MemberState::Approved)
                .unwrap();
        }
    }
    d
}

struct World {
    service: Arc<VoiceService<RacePorts>>,
    store: MemoryStore,
    channels: MemoryChannels,
    notifier: MemoryNotifier,
}

fn world(members: usize, capacity: u8) -> World {
    world_with(members, capacity, None)
}

fn world_with(
    members: usize,
    capacity: u8,
    read_barrier: Option<Arc<tokio::sync::Barrier>>,
) -> World {
    let store = MemoryStore::new();
    let channels = MemoryChannels::new(SystemClock);
    let notifier = MemoryNotifier::new();
    let service = VoiceService::new(
        Adapters::<RacePorts> {
            store: Yielding(store.clone(), read_barrier, None),
            directory: directory(members),
            channels: Yielding::new(channels.clone()),
            credentials: MemoryCredentials::new(SystemClock),
            notifier: notifier.clone(),
            clock: SystemClock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig {
            capacity: Capacity::new(capacity).unwrap(),
            // Enough for every loser of a 60-way join race to re-read and see the room full.
            cas_retries: 200,
            ..ServiceConfig::default()
        },
    );
    World {
        service: Arc::new(service),
        store,
        channels,
        notifier,
    }
}

/// Every stored room is valid, and the existing channels are exactly those of active
/// participants, each held once.
fn assert_consistent(store: &MemoryStore, channels: &MemoryChannels, case: &str) {
    let mut held = Vec::new();
    let mut active = 0;
    for room in store.all() {
        assert!(
            VoiceRoom::from_parts(room.parts().clone()).is_ok(),
            "{case}: corrupt room {room:?}"
        );
        if room.is_active() {
            active += 1;
            assert!(room.participants().len() <= usize::from(room.capacity().get()));
            held.extend(room.participants().iter().map(|p| p.channel.arn.clone()));
        } else {
            assert!(
                room.participants().is_empty(),
                "{case}: participants in an ended room"
            );
        }
    }
    assert!(
        active <= 1,
        "{case}: {active} active rooms in one chat room"
    );
    held.sort();
    let before = held.len();
    held.dedup();
    assert_eq!(held.len(), before, "{case}: a channel held twice");
    let mut existing: Vec<_> = channels
        .list_now()
        .into_iter()
        .map(|l| l.channel.arn)
        .collect();
    existing.sort();
    assert_eq!(
        existing, held,
        "{case}: orphan channels or participants without one"
    );
}

/// `starters` connections (`conn(0..starters)`) call `createVoiceRoom` for [`chat`] at once.
/// Asserts exactly one wins and every loser is told the winner's room; returns the winner and
/// how long the race took.
async fn race_starts<P>(
    service: &Arc<VoiceService<P>>,
    starters: usize,
) -> (VoiceRoom, std::time::Duration)
where
    P: Ports + 'static,
    VoiceService<P>: Send + Sync,
{
    let t = Instant::now();
    let tasks: Vec<_> = (0..starters)
        .map(|i| {
            let service = Arc::clone(service);
            tokio::spawn(async move { service.start_voice(&conn(i), &chat()).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut named = BTreeMap::<VoiceRoomId, usize>::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(room) => winners.push(room),
            Err(StartVoiceError::AlreadyActive { voice_room_id }) => {
                *named.entry(voice_room_id).or_default() += 1;
            }
            Err(e) => panic!("unexpected refusal {e:?}"),
        }
    }
    let elapsed = t.elapsed();
    assert_eq!(winners.len(), 1, "exactly one start wins");
    let winner = winners.pop().unwrap();
    assert_eq!(
        named,
        BTreeMap::from([(winner.id().clone(), starters - 1)]),
        "every loser is told the winner's room"
    );
    (winner, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_starts_make_exactly_one_room_on_memory() {
    const STARTERS: usize = 1000;
    // Every starter reads "no active room" before any goes on (each calls the read once).
    let w = world_with(
        STARTERS,
        10,
        Some(Arc::new(tokio::sync::Barrier::new(STARTERS))),
    );
    let (winner, elapsed) = race_starts(&w.service, STARTERS).await;
    let winner = &winner;
    let rooms = w.store.all();
    assert_eq!(rooms.len(), 1, "no loser stored a room");
    assert_eq!(&rooms[0], winner);
    assert_consistent(&w.store, &w.channels, "1000 starts");
    assert_eq!(w.channels.list_now().len(), 1);
    let created = w.channels.created_total();
    assert_eq!(
        created, STARTERS as u64,
        "every starter saw no active room and created a channel: the race was real"
    );
    // Everyone was told once, of the winner only.
    for i in 0..STARTERS {
        let started: Vec<_> = w
            .notifier
            .take(&conn(i))
            .into_iter()
            .filter_map(|e| match e {
                VoiceEvent::VoiceStarted { voice_room_id, .. } => Some(voice_room_id),
                _ => None,
            })
            .collect();
        assert_eq!(started, vec![winner.id().clone()], "connection {i}");
    }
    eprintln!(
        "memory: {STARTERS} concurrent starts, 1 room, {created} channels created and {} deleted, {elapsed:?}",
        created - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_at_capacity_never_exceed_it() {
    const JOINERS: usize = 60;
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let capacity = 2 + (round % 9) as u8; // 2..=10
        let w = world(JOINERS + 1, capacity);
        let room = w.service.start_voice(&conn(0), &chat()).await.unwrap();
        let tasks: Vec<_> = (1..=JOINERS)
            .map(|i| {
                let service = Arc::clone(&w.service);
                let id = room.id().clone();
                tokio::spawn(async move { (i, service.join_voice(&conn(i), &id).await) })
            })
            .collect();
        let mut joined = Vec::new();
        let mut full = 0;
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok(grant)) => {
                    assert!(grant.newly_joined);
                    assert!(grant.room.participants().len() <= usize::from(capacity));
                    joined.push(user(i));
                }
                (_, Err(JoinVoiceError::RoomFull { capacity: c })) => {
                    assert_eq!(c, capacity);
                    full += 1;
                }
                (_, Err(e)) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        let case = format!("round {round}, capacity {capacity}");
        assert_eq!(
            joined.len(),
            usize::from(capacity) - 1,
            "{case}: fills exactly"
        );
        assert_eq!(full, JOINERS - joined.len(), "{case}");
        let stored = w.store.all().pop().unwrap();
        assert_eq!(stored.participants().len(), usize::from(capacity), "{case}");
        for u in &joined {
            assert!(
                stored.participant(u).is_some(),
                "{case}: a reported join is stored"
            );
        }
        assert_consistent(&w.store, &w.channels, &case);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_end_joins_and_leaves_leave_a_consistent_room() {
    const ROUNDS: usize = 50;
    let (mut joined_before_end, mut refused_ended) = (0, 0);
    for round in 0..ROUNDS {
        let w = world(30, 10);
        let case = format!("round {round}");
        let room = w.service.start_voice(&conn(0), &chat()).await.unwrap();
        let id = room.id().clone();
        // Four participants already in.
        for i in 1..=4 {
            w.service.join_voice(&conn(i), &id).await.unwrap();
        }
        let mut tasks = Vec::new();
        // The master ends it, at a different point of the race each round.
        let ender = {
            let (service, id) = (Arc::clone(&w.service), id.clone());
            let delay = round % 7;
            tokio::spawn(async move {
                for _ in 0..delay {
                    tokio::task::yield_now().await;
                }
                service.end_voice(&conn(0), &id).await
            })
        };
        for i in 5..30 {
            let (service, id) = (Arc::clone(&w.service), id.clone());
            tasks.push(tokio::spawn(async move {
                match service.join_voice(&conn(i), &id).await {
                    Ok(_) => "joined",
                    Err(JoinVoiceError::Ended) => "ended",
                    Err(JoinVoiceError::RoomFull { .. }) => "full",
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }));
        }
        for i in 1..=2 {
            let (service, id) = (Arc::clone(&w.service), id.clone());
            tasks.push(tokio::spawn(async move {
                match service.leave_voice(&conn(i), &id).await {
                    Ok(_) => "left",
                    Err(voice_domain::errors::LeaveVoiceError::Ended) => "ended",
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }));
        }
        let ended = ender.await.unwrap().expect("the master's end succeeds");
        assert!(!ended.is_active());
        for t in tasks {
            match t.await.unwrap() {
                "joined" => joined_before_end += 1,
                "ended" => refused_ended += 1,
                _ => {}
            }
        }
        let stored = w.store.all();
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].is_active(), "{case}");
        assert!(
            stored[0].participants().is_empty(),
            "{case}: participant in an ended room"
        );
        assert!(w.channels.list_now().is_empty(), "{case}: orphan channels");
        assert_consistent(&w.store, &w.channels, &case);
        // The end came after every reported join: each joiner was told the end.
        let ended_for: usize = (0..30)
            .filter(|i| {
                w.notifier
                    .take(&conn(*i))
                    .iter()
                    .any(|e| matches!(e, VoiceEvent::VoiceEnded { .. }))
            })
            .count();
        assert_eq!(ended_for, 30, "{case}: every member hears the end");
    }
    eprintln!(
        "end vs join: {ROUNDS} rounds, {joined_before_end} joins landed before the end, {refused_ended} refused as ended"
    );
    assert!(
        joined_before_end > 0 && refused_ended > 0,
        "the race never went both ways"
    );
}

/// Channels whose `endpoints` runs a hook once, the first time it is asked about `trigger`:
/// a way to make "a peer leaves between the joiner's read and its grant" happen every time.
#[derive(Clone)]
struct Interleaving {
    inner: MemoryChannels,
    trigger: Arc<std::sync::Mutex<Option<(SignalingChannel, Hook)>>>,
}

type Hook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

#[async_trait]
impl SignalingChannels for Interleaving {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        self.inner.create(name, tags).await
    }
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        self.inner.delete(channel).await
    }
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        let hook = {
            let mut t = self.trigger.lock().unwrap();
            match t.take() {
                Some((c, hook)) if &c == channel => Some(hook),
                other => {
                    *t = other;
                    None
                }
            }
        };
        if let Some(hook) = hook {
            hook().await;
        }
        self.inner.endpoints(channel, role, client_id).await
    }
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        self.inner.list().await
    }
}

struct InterleavingPorts;

impl Ports for InterleavingPorts {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = Interleaving;
    type Credentials = MemoryCredentials;
    type Notifier = MemoryNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

/// u1 joins a room [u0, u2]; while the service fetches the endpoints of u2's channel for u1's
/// plan, u2 leaves and its channel is deleted. The join must start over with the fresh room
/// (u1 then views only u0), not fail with a retryable "signaling channel vanished": before the
/// fix, concurrent joins and ends/leaves told joiners UNAVAILABLE for a room that had simply
/// changed or ended.
#[tokio::test]
async fn a_join_whose_plan_goes_stale_starts_over_instead_of_failing() {
    let store = MemoryStore::new();
    let channels = MemoryChannels::new(SystemClock);
    let trigger = Arc::new(std::sync::Mutex::new(None));
    let service = VoiceService::new(
        Adapters::<InterleavingPorts> {
            store: store.clone(),
            directory: directory(3),
            channels: Interleaving {
                inner: channels.clone(),
                trigger: trigger.clone(),
            },
            credentials: MemoryCredentials::new(SystemClock),
            notifier: MemoryNotifier::new(),
            clock: SystemClock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig::default(),
    );
    let room = service.start_voice(&conn(0), &chat()).await.unwrap();
    let room = service.join_voice(&conn(2), room.id()).await.unwrap().room;
    let u2_channel = room.participant(&user(2)).unwrap().channel.clone();
    let (hook_store, hook_channels, id) = (store.clone(), channels.clone(), room.id().clone());
    *trigger.lock().unwrap() = Some((
        u2_channel.clone(),
        Box::new(move || -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                // u2 leaves, as leave_voice would: the transition, the write, the clean-up.
                let mut r = hook_store.get(&id).await.unwrap().unwrap();
                let (_, released) = r
                    .leave(
                        &user(2),
                        voice_domain::room::LeaveReason::Left,
                        voice_domain::Timestamp::from_millis(0),
                    )
                    .unwrap();
                r.bump_version();
                hook_store.update(&r).await.unwrap();
                for ch in released {
                    hook_channels.delete(&ch).await.unwrap();
                }
            })
        }) as Hook,
    ));
    let grant = service
        .join_voice(&conn(1), room.id())
        .await
        .expect("the join starts over with the fresh room");
    assert!(
        trigger.lock().unwrap().is_none(),
        "the interleaving happened"
    );
    let peers: Vec<&UserId> = grant.peers.iter().map(|p| &p.user).collect();
    assert_eq!(peers, vec![&user(0)], "the fresh plan: u2 is gone");
    let stored = store.get(room.id()).await.unwrap().unwrap();
    let users: Vec<&UserId> = stored.participants().iter().map(|p| &p.user).collect();
    assert_eq!(users, vec![&user(0), &user(1)]);
    assert_consistent(&store, &channels, "stale plan");
}

// ---------------------------------------------------------------------------------------------
// DynamoDB (moto) and the fake KVS
// ---------------------------------------------------------------------------------------------

struct DynamoPorts;

impl Ports for DynamoPorts {
    type Store = Yielding<DynamoStore>;
    type Directory = MemoryDirectory;
    type Channels = Yielding<KvsChannels>;
    type Credentials = MemoryCredentials;
    type Notifier = MemoryNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

/// How many store and channel calls may be in flight at once. moto is served one request at a
/// time (see `voice_adapters_aws::testing::MotoServer`) behind a listen backlog of 128, and the
/// fake KVS shares the test's two cores: with a thousand SDK connections opened at once, those
/// beyond the backlog wait for SYN retries (1 s, 3 s, ...), run into the SDK's 3.1 s connect
/// timeout and fail the test for reasons that are the test rig's, not the store's (seen with
/// the fake KVS ungated). Bounding calls (not starters) keeps every request within the backlog
/// while all 1 000 starters are still in the race: each has read "no active room" before any
/// goes on.
const IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_starts_make_exactly_one_room_on_dynamodb() {
    const STARTERS: usize = 1000;
    let Some(moto) = MotoServer::start_or_skip() else {
        return;
    };
    let tables = TestTables::unique();
    let ddb = moto.dynamodb();
    create_tables(&ddb, &tables).await.unwrap();
    let kvs = FakeKvs::start().await;
    // This is a DynamoDB race: a thousand simultaneous creates would only measure KVS's 50 TPS
    // CreateSignalingChannel limit (tested in voice-adapters-aws), so the fake's limits are off.
    kvs.set_rate_limits(false);
    let store = DynamoStore::new(ddb.clone(), &tables.voice_rooms);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let service = Arc::new(VoiceService::new(
        Adapters::<DynamoPorts> {
            store: Yielding(
                store.clone(),
                Some(Arc::new(tokio::sync::Barrier::new(STARTERS))),
                Some(in_flight.clone()),
            ),
            directory: directory(STARTERS),
            channels: Yielding(
                KvsChannels::new(kvs.kvs_client(), kvs.signaling_client()),
                None,
                Some(in_flight),
            ),
            credentials: MemoryCredentials::new(SystemClock),
            notifier: MemoryNotifier::new(),
            clock: SystemClock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig::default(),
    ));
    let (winner, elapsed) = race_starts(&service, STARTERS).await;
    let active = store.list_active().await.unwrap();
    assert_eq!(active.len(), 1, "one active room in the table");
    assert_eq!(active[0].id(), winner.id());
    assert_eq!(
        store
            .active_in_chat_room(&chat())
            .await
            .unwrap()
            .map(|r| r.id().clone()),
        Some(winner.id().clone())
    );
    let channels = kvs.channels();
    assert_eq!(channels.len(), 1, "every loser's channel was deleted");
    assert_eq!(
        channels[0].arn,
        winner.participants()[0].channel.arn.as_str()
    );
    let created = kvs.requests_to("/createSignalingChannel").len();
    assert_eq!(
        created, STARTERS,
        "every starter saw no active room and created a channel: the race was real"
    );
    eprintln!(
        "dynamodb (moto): {STARTERS} concurrent starts ({IN_FLIGHT} store/channel calls in flight), 1 room, {created} channels created and {} deleted, {elapsed:?}",
        created - 1
    );
}
