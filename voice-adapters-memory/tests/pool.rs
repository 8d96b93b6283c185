//! The service with pooling on, over the memory adapters: a channel released by a leave is in
//! quarantine (a join within it gets a new channel), is reused once the quarantine is over
//! (no channel created), and the sweep deletes channels idle for longer than the eviction.

use std::time::Duration;

use futures::executor::block_on;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryPool,
    MemoryStore, SequentialIds,
};
use voice_domain::pool::{ChannelLease, ChannelPool, LeaseHolder, PoolSlot};
use voice_domain::ports::{
    Adapters, ChannelTags, Clock as _, MemberState, Ports, SignalingChannels,
};
use voice_domain::{
    ChannelArn, ChannelName, ChatRoomId, ConnectionId, ServiceConfig, SignalingChannel, Timestamp,
    UserId, VoiceRoomId, VoiceService,
};

struct P;

impl Ports for P {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = MemoryChannels<ManualClock>;
    type Credentials = MemoryCredentials<ManualClock>;
    type Notifier = MemoryNotifier;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = MemoryPool;
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}

struct World {
    service: VoiceService<P>,
    clock: ManualClock,
    channels: MemoryChannels<ManualClock>,
    pool: MemoryPool,
}

fn world() -> World {
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let channels = MemoryChannels::new(clock.clone());
    let pool = MemoryPool::new();
    let service = VoiceService::new(
        Adapters::<P> {
            store: MemoryStore::new(),
            directory: MemoryDirectory::new(),
            channels: channels.clone(),
            credentials: MemoryCredentials::new(clock.clone()),
            notifier: MemoryNotifier::new(),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: pool.clone(),
        },
        ServiceConfig::default(),
    );
    World {
        service,
        clock,
        channels,
        pool,
    }
}

fn held_by_nobody(room: &str) -> LeaseHolder {
    LeaseHolder {
        voice_room: VoiceRoomId::parse(room).unwrap(),
        user: user("ghost"),
    }
}

/// A join that claimed a channel and died before recording its participant (or a release that
/// failed) leaves a lease nobody holds: once the orphan grace has passed, the sweep puts it back
/// into the pool in quarantine from now (credentials may have been issued for it), not free.
#[test]
fn the_sweep_reclaims_a_lease_nobody_holds_into_quarantine() {
    let w = world();
    let ch = block_on(w.channels.create(
        &ChannelName::from_unique("leaked").unwrap(),
        &ChannelTags {
            chat_room: ChatRoomId::parse("chat").unwrap(),
            voice_room: VoiceRoomId::parse("vr-gone").unwrap(),
            owner: user("ghost"),
        },
    ))
    .unwrap();
    let claimed_at = w.clock.now();
    block_on(w.pool.add(&ChannelLease {
        channel: ch.clone(),
        holder: held_by_nobody("vr-gone"),
        claimed_at,
    }))
    .unwrap();
    // Young: a join may be about to record it.
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.leases_reclaimed, 0);
    assert_eq!(
        report.channels_deleted, 0,
        "a pooled channel is not an orphan"
    );

    w.clock.advance(w.service.config().orphan_grace);
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.leases_reclaimed, 1);
    let now = w.clock.now();
    assert_eq!(
        w.pool.snapshot()[0].slot,
        PoolSlot::Free {
            released_at: now,
            free_from: w.service.lease_policy().free_from(now, true),
        }
    );
    assert!(w.channels.exists(&ch.arn), "reclaimed, not deleted");
}

/// The sweep deletes only idle pooled channels the signaling service lists as this
/// deployment's: one it does not list (another stack's, or gone) stays untouched.
#[test]
fn idle_eviction_skips_channels_not_listed_as_ours() {
    let w = world();
    let foreign = SignalingChannel {
        name: ChannelName::from_unique("foreign").unwrap(),
        arn: ChannelArn::parse("arn:aws:kinesisvideo:us-east-1:1:channel/voice-foreign/1").unwrap(),
    };
    let t = w.clock.now();
    let holder = held_by_nobody("vr-x");
    block_on(w.pool.add(&ChannelLease {
        channel: foreign.clone(),
        holder: holder.clone(),
        claimed_at: t,
    }))
    .unwrap();
    block_on(w.pool.release(&foreign, &holder.voice_room, t, t)).unwrap();
    w.clock.advance(w.service.lease_policy().idle_eviction * 2);
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.channels_evicted, 0);
    assert_eq!(
        w.pool.snapshot().len(),
        1,
        "evicted a channel not listed as ours"
    );
}

#[test]
fn released_channels_wait_out_their_quarantine_then_are_reused_then_evicted() {
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let channels = MemoryChannels::new(clock.clone());
    let pool = MemoryPool::new();
    let directory = MemoryDirectory::new();
    let service = VoiceService::new(
        Adapters::<P> {
            store: MemoryStore::new(),
            directory: directory.clone(),
            channels: channels.clone(),
            credentials: MemoryCredentials::new(clock.clone()),
            notifier: MemoryNotifier::new(),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: pool.clone(),
        },
        ServiceConfig::default(),
    );
    let chat = ChatRoomId::parse("chat").unwrap();
    directory.create_room(chat.clone(), user("ada")).unwrap();
    directory
        .set_state(&chat, user("bo"), MemberState::Approved)
        .unwrap();
    directory.connect(conn("c-ada"), user("ada"));
    directory.connect(conn("c-bo"), user("bo"));
    let quarantine = service.lease_policy().quarantine();

    let room = block_on(service.start_voice(&conn("c-ada"), &chat)).unwrap();
    block_on(service.join_voice(&conn("c-bo"), room.id())).unwrap();
    assert_eq!(channels.created_total(), 2);
    block_on(service.leave_voice(&conn("c-bo"), room.id())).unwrap();
    assert_eq!(
        channels.list_now().len(),
        2,
        "a released channel is kept, not deleted"
    );
    assert!(pool
        .snapshot()
        .iter()
        .any(|p| matches!(p.slot, PoolSlot::Free { .. })));

    // Within the quarantine: a new channel.
    clock.advance(quarantine - Duration::from_secs(1));
    block_on(service.join_voice(&conn("c-bo"), room.id())).unwrap();
    assert_eq!(
        channels.created_total(),
        3,
        "reused a channel in quarantine"
    );
    block_on(service.end_voice(&conn("c-ada"), room.id())).unwrap();

    // After it: a whole new room runs on the pooled channels.
    clock.advance(quarantine);
    let room = block_on(service.start_voice(&conn("c-ada"), &chat)).unwrap();
    let grant = block_on(service.join_voice(&conn("c-bo"), room.id())).unwrap();
    assert_eq!(
        channels.created_total(),
        3,
        "created a channel with free ones pooled"
    );
    assert_eq!(grant.peers.len(), 1);
    block_on(service.end_voice(&conn("c-ada"), room.id())).unwrap();

    // A week unused: the sweep deletes them all.
    clock.advance(service.lease_policy().idle_eviction + quarantine);
    let report = block_on(service.sweep()).unwrap();
    assert_eq!(report.channels_evicted, 3);
    assert!(channels.list_now().is_empty());
    assert!(pool.snapshot().is_empty());
}

/// The gate and the pool's claim run together (one round trip instead of two in a row): a
/// caller the gate refuses must not keep, or quarantine, the channel claimed meanwhile. It goes
/// back free at once (no credential was issued for it), and the next member gets it.
#[test]
fn a_claim_made_alongside_a_refused_gate_goes_back_free_at_once() {
    use voice_domain::UseCaseError as _;
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let channels = MemoryChannels::new(clock.clone());
    let pool = MemoryPool::new();
    let directory = MemoryDirectory::new();
    let credentials = MemoryCredentials::new(clock.clone());
    let service = VoiceService::new(
        Adapters::<P> {
            store: MemoryStore::new(),
            directory: directory.clone(),
            channels: channels.clone(),
            credentials: credentials.clone(),
            notifier: MemoryNotifier::new(),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: pool.clone(),
        },
        ServiceConfig::default(),
    );
    let chat = ChatRoomId::parse("chat").unwrap();
    directory.create_room(chat.clone(), user("ada")).unwrap();
    directory
        .set_state(&chat, user("bo"), MemberState::Approved)
        .unwrap();
    directory
        .set_state(&chat, user("eve"), MemberState::Pending)
        .unwrap();
    for u in ["ada", "bo", "eve"] {
        directory.connect(conn(&format!("c-{u}")), user(u));
    }
    let room = block_on(service.start_voice(&conn("c-ada"), &chat)).unwrap();
    // One free channel, out of quarantine.
    let ch = block_on(channels.create(
        &ChannelName::from_unique("spare").unwrap(),
        &ChannelTags {
            chat_room: chat.clone(),
            voice_room: VoiceRoomId::parse("old").unwrap(),
            owner: user("ghost"),
        },
    ))
    .unwrap();
    let old = held_by_nobody("old");
    let now = clock.now();
    block_on(pool.add(&ChannelLease {
        channel: ch.clone(),
        holder: old.clone(),
        claimed_at: now,
    }))
    .unwrap();
    block_on(pool.release(&ch, &old.voice_room, now, now)).unwrap();
    let issued_before = credentials.issued().len();

    let err = block_on(service.join_voice(&conn("c-eve"), room.id())).unwrap_err();
    assert_eq!(err.code(), "NOT_APPROVED");
    assert_eq!(credentials.issued().len(), issued_before, "nothing issued");
    let slot = pool
        .snapshot()
        .into_iter()
        .find(|p| p.channel == ch)
        .expect("still pooled")
        .slot;
    assert!(
        matches!(slot, PoolSlot::Free { free_from, .. } if free_from <= clock.now()),
        "free at once, not quarantined: {slot:?}"
    );

    let created = channels.created_total();
    let grant = block_on(service.join_voice(&conn("c-bo"), room.id())).unwrap();
    assert_eq!(grant.own.channel, ch, "the next member claims it");
    assert_eq!(channels.created_total(), created);
}

/// A pool whose `claim_found` first lets a concurrent join (another Lambda) take the found
/// candidate: the join must lose that race cleanly and claim as before.
#[derive(Clone)]
struct Racing(MemoryPool);

#[async_trait::async_trait]
impl ChannelPool for Racing {
    fn is_pooling(&self) -> bool {
        true
    }
    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, voice_domain::pool::PoolError> {
        self.0.claim(holder, now).await
    }
    async fn find(
        &self,
        now: Timestamp,
    ) -> Result<Option<ChannelArn>, voice_domain::pool::PoolError> {
        self.0.find(now).await
    }
    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, voice_domain::pool::PoolError> {
        let thief = held_by_nobody("elsewhere");
        assert!(
            self.0.claim_found(arn, &thief, now).await?.is_some(),
            "the thief takes the candidate"
        );
        self.0.claim_found(arn, holder, now).await
    }
    async fn add(&self, lease: &ChannelLease) -> Result<(), voice_domain::pool::PoolError> {
        self.0.add(lease).await
    }
    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), voice_domain::pool::PoolError> {
        self.0
            .release(channel, voice_room, released_at, free_from)
            .await
    }
    async fn list(
        &self,
    ) -> Result<Vec<voice_domain::pool::PooledChannel>, voice_domain::pool::PoolError> {
        self.0.list().await
    }
    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, voice_domain::pool::PoolError> {
        self.0.evict(channel, released_at).await
    }
}

struct RacingPorts;

impl Ports for RacingPorts {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = MemoryChannels<ManualClock>;
    type Credentials = MemoryCredentials<ManualClock>;
    type Notifier = MemoryNotifier;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = Racing;
}

#[test]
fn a_join_that_loses_its_found_channel_to_another_claim_claims_another_or_creates() {
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let channels = MemoryChannels::new(clock.clone());
    let pool = MemoryPool::new();
    let directory = MemoryDirectory::new();
    let service = VoiceService::new(
        Adapters::<RacingPorts> {
            store: MemoryStore::new(),
            directory: directory.clone(),
            channels: channels.clone(),
            credentials: MemoryCredentials::new(clock.clone()),
            notifier: MemoryNotifier::new(),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: Racing(pool.clone()),
        },
        ServiceConfig::default(),
    );
    let chat = ChatRoomId::parse("chat").unwrap();
    directory.create_room(chat.clone(), user("ada")).unwrap();
    for u in ["bo", "cy"] {
        directory
            .set_state(&chat, user(u), MemberState::Approved)
            .unwrap();
    }
    for u in ["ada", "bo", "cy"] {
        directory.connect(conn(&format!("c-{u}")), user(u));
    }
    let room = block_on(service.start_voice(&conn("c-ada"), &chat)).unwrap();
    // Two free channels out of quarantine: the found one (the most recently freed) is stolen,
    // the fallback claim gets the other.
    let now = clock.now();
    let mut spares = Vec::new();
    for (i, name) in ["spare-a", "spare-b"].iter().enumerate() {
        let ch = block_on(channels.create(
            &ChannelName::from_unique(name).unwrap(),
            &ChannelTags {
                chat_room: chat.clone(),
                voice_room: VoiceRoomId::parse("old").unwrap(),
                owner: user("ghost"),
            },
        ))
        .unwrap();
        let old = held_by_nobody("old");
        block_on(pool.add(&ChannelLease {
            channel: ch.clone(),
            holder: old.clone(),
            claimed_at: now,
        }))
        .unwrap();
        let freed = Timestamp::from_millis(now.as_millis() - 10 + i as u64);
        block_on(pool.release(&ch, &old.voice_room, freed, freed)).unwrap();
        spares.push(ch);
    }
    let created = channels.created_total();
    let grant = block_on(service.join_voice(&conn("c-bo"), room.id())).unwrap();
    assert_eq!(
        grant.own.channel, spares[0],
        "the fallback claims the other spare"
    );
    assert_eq!(channels.created_total(), created, "nothing created");
    let held_by = |ch: &SignalingChannel| match pool
        .snapshot()
        .into_iter()
        .find(|p| p.channel == *ch)
        .expect("pooled")
        .slot
    {
        PoolSlot::Held { holder, .. } => holder,
        other => panic!("not held: {other:?}"),
    };
    assert_eq!(
        held_by(&spares[1]),
        held_by_nobody("elsewhere"),
        "the thief keeps its win"
    );
    assert_eq!(held_by(&spares[0]).user, user("bo"));

    // Nothing free left: the next join's find comes back empty, and it creates a channel.
    let grant = block_on(service.join_voice(&conn("c-cy"), room.id())).unwrap();
    assert_eq!(channels.created_total(), created + 1, "a new channel");
    assert_eq!(held_by(&grant.own.channel).user, user("cy"));
}
