//! How fast the domain is on its own: pure transitions, and whole use cases over the in-memory
//! adapters (the self-hosted server's default). Results go in BENCHMARKS.md; the target is
//! ≥ 100 000 domain operations per second on the 2-core reference box.
//!
//! Run: `cargo bench -p voice-adapters-memory --bench domain`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::executor::block_on;
use voice_adapters_memory::{memory_service, MemoryHandles, MemoryPorts};
use voice_domain::ports::MemberState;
use voice_domain::room::LeaveReason;
use voice_domain::{
    Capacity, ChannelArn, ChannelName, ChatRoomId, ConnectionId, ServiceConfig, SignalingChannel,
    Timestamp, UserId, VoiceRoom, VoiceRoomId, VoiceService,
};

fn channel(i: usize) -> SignalingChannel {
    SignalingChannel {
        name: ChannelName::from_unique(&format!("b{i}")).unwrap(),
        arn: ChannelArn::parse(format!("arn:bench:channel/voice-b{i}")).unwrap(),
    }
}

fn user(i: usize) -> UserId {
    UserId::parse(format!("u{i}")).unwrap()
}

fn conn(i: usize) -> ConnectionId {
    ConnectionId::parse(format!("c{i}")).unwrap()
}

fn full_room() -> VoiceRoom {
    let (mut room, _) = VoiceRoom::start(
        VoiceRoomId::parse("v").unwrap(),
        ChatRoomId::parse("chat").unwrap(),
        user(0),
        conn(0),
        channel(0),
        Capacity::default(),
        Timestamp::from_millis(0),
    );
    for i in 1..10 {
        room.join(
            user(i),
            conn(i),
            channel(i),
            Timestamp::from_millis(i as u64),
        )
        .unwrap();
    }
    room
}

fn transitions(c: &mut Criterion) {
    let mut g = c.benchmark_group("transitions");
    g.throughput(Throughput::Elements(1));
    g.bench_function("start", |b| {
        b.iter(|| {
            VoiceRoom::start(
                VoiceRoomId::parse("v").unwrap(),
                ChatRoomId::parse("chat").unwrap(),
                user(0),
                conn(0),
                channel(0),
                Capacity::default(),
                Timestamp::from_millis(0),
            )
        })
    });
    g.bench_function("join_tenth", |b| {
        let mut nine = full_room();
        nine.leave(&user(9), LeaveReason::Left, Timestamp::from_millis(99))
            .unwrap();
        b.iter_batched(
            || nine.clone(),
            |mut r| r.join(user(9), conn(9), channel(9), Timestamp::from_millis(100)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("master_leaves_full_room", |b| {
        let room = full_room();
        b.iter_batched(
            || room.clone(),
            |mut r| r.leave(&user(0), LeaveReason::Left, Timestamp::from_millis(100)),
            BatchSize::SmallInput,
        )
    });
    let room = full_room();
    g.bench_function("plan_for_last_of_ten", |b| {
        b.iter(|| black_box(&room).plan_for(&user(9)))
    });
    g.bench_function("mesh_of_ten", |b| b.iter(|| black_box(&room).mesh()));
    g.finish();
}

/// `n` chat rooms, each with members u0..u9 approved and connected.
fn setup(n: usize) -> (VoiceService<MemoryPorts>, MemoryHandles) {
    let (svc, h) = memory_service(ServiceConfig::default());
    for r in 0..n {
        let chat = ChatRoomId::parse(format!("chat{r}")).unwrap();
        h.directory
            .create_room(chat.clone(), UserId::parse(format!("r{r}u0")).unwrap())
            .unwrap();
        for i in 0..10 {
            let u = UserId::parse(format!("r{r}u{i}")).unwrap();
            h.directory
                .connect(ConnectionId::parse(format!("r{r}c{i}")).unwrap(), u.clone());
            h.directory
                .set_state(&chat, u, MemberState::Approved)
                .unwrap();
        }
    }
    (svc, h)
}

fn use_cases(c: &mut Criterion) {
    let mut g = c.benchmark_group("use_cases");
    // One cycle = start + 3 joins + mute + 3 leaves... counted as its 8 operations.
    g.throughput(Throughput::Elements(8));
    let (svc, _h) = setup(1);
    let chat = ChatRoomId::parse("chat0").unwrap();
    let conns: Vec<_> = (0..4)
        .map(|i| ConnectionId::parse(format!("r0c{i}")).unwrap())
        .collect();
    g.bench_function("cycle_start_join3_mute_leave_end", |b| {
        b.iter(|| {
            block_on(async {
                let room = svc.start_voice(&conns[0], &chat).await.unwrap();
                for c in &conns[1..] {
                    svc.join_voice(c, room.id()).await.unwrap();
                }
                svc.set_mute(&conns[1], room.id(), true).await.unwrap();
                for c in &conns[1..] {
                    svc.leave_voice(c, room.id()).await.unwrap();
                }
                svc.end_voice(&conns[0], room.id()).await.unwrap();
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("use_case_single");
    g.throughput(Throughput::Elements(1));
    let (svc, _h) = setup(1);
    let room = block_on(svc.start_voice(&conns[0], &chat)).unwrap();
    block_on(svc.join_voice(&conns[1], room.id())).unwrap();
    let mut muted = false;
    g.bench_function("set_mute_toggle", |b| {
        b.iter(|| {
            muted = !muted;
            block_on(svc.set_mute(&conns[1], room.id(), muted)).unwrap()
        })
    });
    g.bench_function("get_credentials_refresh", |b| {
        b.iter(|| block_on(svc.join_voice(&conns[1], room.id())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, transitions, use_cases);
criterion_main!(benches);
