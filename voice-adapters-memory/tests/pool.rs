//! The service with pooling on, over the memory adapters: a channel released by a leave is in
//! quarantine (a join within it gets a new channel), is reused once the quarantine is over
//! (no channel created), and the sweep deletes channels idle for longer than the eviction.

use std::time::Duration;

use futures::executor::block_on;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryPool,
    MemoryStore, SequentialIds,
};
use voice_domain::pool::PoolSlot;
use voice_domain::ports::{Adapters, MemberState, Ports};
use voice_domain::{ChatRoomId, ConnectionId, ServiceConfig, Timestamp, UserId, VoiceService};

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
