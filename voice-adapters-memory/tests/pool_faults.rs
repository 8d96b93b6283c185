//! The pooled paths under faults: a meeting (start, two joins, a leave, a refresh, the end) is
//! run with the pool failing at each of its calls in turn, each way (retryable, permanent, after
//! the effect landed). Whatever the use cases answered, once faults stop and the orphan grace has
//! passed, one sweep leaves the pool and the channels consistent:
//! - every pooled channel exists, and no lease is held by nobody;
//! - every existing channel is held by a participant or pooled (no orphan);
//! - every free pooled channel's quarantine ends after every credential delivered for it.

use std::time::Duration;

use futures::executor::block_on;
use voice_adapters_memory::faults::{Fault, Faults, Faulty};
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryPool,
    MemoryStore, SequentialIds,
};
use voice_domain::errors::PortName;
use voice_domain::pool::PoolSlot;
use voice_domain::ports::{Adapters, MemberState, Ports, VoiceRoomStore as _};
use voice_domain::{
    ChatRoomId, ConnectionId, ServiceConfig, SignalingChannel, Timestamp, UserId, VoiceService,
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
    type Pool = Faulty<MemoryPool>;
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}

/// Runs the meeting with `fault` at the pool's `call`-th call; returns how many pool calls a
/// clean run makes when `fault` is `None`.
fn meeting(fault: Option<(u64, Fault)>) -> u64 {
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let channels = MemoryChannels::new(clock.clone());
    let pool = MemoryPool::new();
    let faults = Faults::new();
    let store = MemoryStore::new();
    let directory = MemoryDirectory::new();
    let service = VoiceService::new(
        Adapters::<P> {
            store: store.clone(),
            directory: directory.clone(),
            channels: channels.clone(),
            credentials: MemoryCredentials::new(clock.clone()),
            notifier: MemoryNotifier::new(),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: Faulty::new(pool.clone(), PortName::Pool, faults.clone()),
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
    if let Some((call, f)) = fault {
        faults.fail_at(PortName::Pool, call, f);
    }
    let policy = service.lease_policy();
    // (channel, end of the delivered credential's use window)
    let mut delivered: Vec<(SignalingChannel, Timestamp)> = Vec::new();
    let mut join = |who: &str, room| {
        if let Ok(g) = block_on(service.join_voice(&conn(&format!("c-{who}")), room)) {
            let end = g.credentials.expires_at.plus(policy.session_cap);
            delivered.push((g.own.channel.clone(), end));
            for p in &g.peers {
                delivered.push((p.access.channel.clone(), end));
            }
        }
        clock.advance(Duration::from_secs(10));
    };
    if let Ok(room) = block_on(service.start_voice(&conn("c-ada"), &chat)) {
        let id = room.id().clone();
        join("ada", &id);
        join("bo", &id);
        join("cy", &id);
        let _ = block_on(service.leave_voice(&conn("c-bo"), &id));
        join("bo", &id);
        join("cy", &id);
        let _ = block_on(service.end_voice(&conn("c-ada"), &id));
    }
    let calls = faults.calls(PortName::Pool);
    faults.reset();

    clock.advance(service.config().orphan_grace);
    block_on(service.sweep()).unwrap();
    let label = format!("{fault:?}");
    let pooled = pool.snapshot();
    let held: Vec<SignalingChannel> = block_on(store.list_active())
        .unwrap()
        .iter()
        .flat_map(|r| r.participants().iter().map(|p| p.channel.clone()))
        .collect();
    for p in &pooled {
        assert!(
            channels.exists(&p.channel.arn),
            "{label}: pooled {p:?} does not exist"
        );
        if let PoolSlot::Held { .. } = p.slot {
            assert!(
                held.contains(&p.channel),
                "{label}: {p:?} held by nobody after the sweep"
            );
        }
        if let PoolSlot::Free { free_from, .. } = p.slot {
            for (ch, end) in &delivered {
                if *ch == p.channel {
                    assert!(
                        free_from >= *end,
                        "{label}: {} is claimable at {free_from:?}, a credential for it works until {end:?}",
                        ch.name
                    );
                }
            }
        }
    }
    for l in channels.list_now() {
        assert!(
            held.contains(&l.channel) || pooled.iter().any(|p| p.channel == l.channel),
            "{label}: orphan {} left after the sweep",
            l.channel.name
        );
    }
    calls
}

#[test]
fn every_pool_fault_leaves_a_consistent_pool_after_a_sweep() {
    let calls = meeting(None);
    assert!(calls >= 6, "the meeting makes only {calls} pool calls");
    for call in 1..=calls {
        for f in [
            Fault::Fail { retryable: true },
            Fault::Fail { retryable: false },
            Fault::FailAfterEffect,
        ] {
            meeting(Some((call, f)));
        }
    }
}
