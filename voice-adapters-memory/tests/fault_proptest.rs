//! Fault injection by proptest: random sequences of use cases over two chat rooms, each step
//! with a random fault (any port, any of its first calls, fail retryable / fail permanently /
//! fail after the effect landed / "gone"), on top of what `faults.rs` does step by step for
//! fixed scenarios. Interleavings the scripted test never builds (a fault while a connection
//! is in two rooms, after an earlier fault left a dead participant, during a sweep that
//! follows a half-done disconnect...) come up here.
//!
//! After every step:
//! - a use case either succeeds, is refused for a domain reason, or fails naming the faulted
//!   port, `retryable` exactly when the fault was a retryable failure; a notifier fault never
//!   fails a use case;
//! - start, join, leave, mute and end that fail change no room;
//! - no half-written room: every stored room passes `VoiceRoom::from_parts`, at most one active
//!   room per chat room (and the store's index agrees), every participant's channel exists, no
//!   channel is held twice;
//! - a new orphan channel appears only after a fault on the signaling channels port.
//!
//! After the sequence, with faults off, connections back and the grace period over, one sweep
//! leaves no orphan channel, no participant on a dead connection, every invariant intact.
//!
//! Cases: `PROPTEST_CASES` (scripts/test sets 1000), else 1000.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::executor::block_on;
use proptest::prelude::*;
use voice_adapters_memory::faults::{Fault, Faults, Faulty};
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
    SequentialIds,
};
use voice_domain::errors::{
    DependencyError, DisconnectError, EndVoiceError, JoinVoiceError, LeaveVoiceError, PortName,
    SetMuteError, StartVoiceError, SweepError, UseCaseError,
};
use voice_domain::ports::{Adapters, ChatDirectory as _, MemberState, Ports, VoiceRoomStore};
use voice_domain::{
    Capacity, ChannelArn, ChatRoomId, ConnectionId, ServiceConfig, Timestamp, UserId, VoiceRoom,
    VoiceRoomId, VoiceService,
};

const USERS: usize = 5;
const CHATS: usize = 2;
const GRACE: Duration = Duration::from_secs(300);
const PORTS: [PortName; 5] = [
    PortName::Store,
    PortName::Directory,
    PortName::Channels,
    PortName::Credentials,
    PortName::Notifier,
];

struct FaultPorts;

impl Ports for FaultPorts {
    type Store = Faulty<MemoryStore>;
    type Directory = Faulty<MemoryDirectory>;
    type Channels = Faulty<MemoryChannels<ManualClock>>;
    type Credentials = Faulty<MemoryCredentials<ManualClock>>;
    type Notifier = Faulty<MemoryNotifier>;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = voice_domain::pool::NoPool;
}

fn user(u: usize) -> UserId {
    UserId::parse(format!("u{u}")).unwrap()
}
fn conn(u: usize) -> ConnectionId {
    ConnectionId::parse(format!("c-u{u}")).unwrap()
}
fn chat(c: usize) -> ChatRoomId {
    ChatRoomId::parse(format!("chat-{c}")).unwrap()
}

struct World {
    service: VoiceService<FaultPorts>,
    faults: Faults,
    store: MemoryStore,
    directory: MemoryDirectory,
    channels: MemoryChannels<ManualClock>,
    clock: ManualClock,
}

/// u0 admin of both chat rooms; u1–u3 approved in chat-0; u1 and u4 approved in chat-1 (so u1
/// can be in two voice rooms at once); everyone online.
fn world() -> World {
    let faults = Faults::new();
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let store = MemoryStore::new();
    let directory = MemoryDirectory::new();
    let channels = MemoryChannels::new(clock.clone());
    for c in 0..CHATS {
        directory.create_room(chat(c), user(0)).unwrap();
    }
    for (c, members) in [(0, &[1, 2, 3][..]), (1, &[1, 4][..])] {
        for &u in members {
            directory
                .set_state(&chat(c), user(u), MemberState::Approved)
                .unwrap();
        }
    }
    for u in 0..USERS {
        directory.connect(conn(u), user(u));
    }
    let service = VoiceService::new(
        Adapters::<FaultPorts> {
            store: Faulty::new(store.clone(), PortName::Store, faults.clone()),
            directory: Faulty::new(directory.clone(), PortName::Directory, faults.clone()),
            channels: Faulty::new(channels.clone(), PortName::Channels, faults.clone()),
            credentials: Faulty::new(
                MemoryCredentials::new(clock.clone()),
                PortName::Credentials,
                faults.clone(),
            ),
            notifier: Faulty::new(MemoryNotifier::new(), PortName::Notifier, faults.clone()),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig {
            capacity: Capacity::new(3).unwrap(),
            orphan_grace: GRACE,
            ..ServiceConfig::default()
        },
    );
    World {
        service,
        faults,
        store,
        directory,
        channels,
        clock,
    }
}

#[derive(Debug, Clone, Copy)]
enum Cmd {
    Start(usize, usize),
    Join(usize, usize),
    Leave(usize, usize),
    Mute(usize, usize, bool),
    End(usize, usize),
    /// The socket closes: the chat app forgets the connection, then voice hears of it.
    Disconnect(usize),
    /// The user comes back on the same connection id.
    Reconnect(usize),
    Sweep,
    Wait(u64),
}

#[derive(Debug, Clone, Copy)]
struct Step {
    cmd: Cmd,
    /// (port, call number, fault) to inject during this step.
    fault: Option<(PortName, u64, Fault)>,
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let u = 0..USERS;
    let c = 0..CHATS;
    prop_oneof![
        3 => (u.clone(), c.clone()).prop_map(|(u, c)| Cmd::Start(u, c)),
        5 => (u.clone(), c.clone()).prop_map(|(u, c)| Cmd::Join(u, c)),
        2 => (u.clone(), c.clone()).prop_map(|(u, c)| Cmd::Leave(u, c)),
        1 => (u.clone(), c.clone(), any::<bool>()).prop_map(|(u, c, m)| Cmd::Mute(u, c, m)),
        2 => (u.clone(), c.clone()).prop_map(|(u, c)| Cmd::End(u, c)),
        2 => u.clone().prop_map(Cmd::Disconnect),
        2 => u.prop_map(Cmd::Reconnect),
        1 => Just(Cmd::Sweep),
        1 => (1u64..400).prop_map(Cmd::Wait),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Fail { retryable: true }),
        Just(Fault::Fail { retryable: false }),
        Just(Fault::FailAfterEffect),
        Just(Fault::Gone),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        cmd(),
        prop::option::weighted(
            0.7,
            (prop::sample::select(PORTS.to_vec()), 1u64..5, fault()),
        ),
    )
        .prop_map(|(cmd, fault)| Step { cmd, fault })
}

/// What one step answered.
#[derive(Debug)]
enum Answer {
    Ok,
    Refused(&'static str),
    Failed {
        port: PortName,
        retryable: bool,
        code: &'static str,
    },
}

fn answer<T, E: UseCaseError>(
    r: Result<T, E>,
    dep: impl Fn(&E) -> Option<&DependencyError>,
) -> Answer {
    match r {
        Ok(_) => Answer::Ok,
        Err(e) => match dep(&e) {
            Some(d) => Answer::Failed {
                port: d.port,
                retryable: e.retryable(),
                code: e.code(),
            },
            None => Answer::Refused(e.code()),
        },
    }
}

impl World {
    /// The voice room a command addresses in chat room `c`: the active one, else the latest.
    fn room_in(&self, c: usize) -> VoiceRoomId {
        let mut rooms: Vec<VoiceRoom> = self
            .store
            .all()
            .into_iter()
            .filter(|r| r.chat_room() == &chat(c))
            .collect();
        rooms.sort_by_key(|r| (r.is_active(), r.created_at(), r.id().clone()));
        rooms
            .pop()
            .map(|r| r.id().clone())
            .unwrap_or_else(|| VoiceRoomId::parse(format!("none-{c}")).unwrap())
    }

    fn run(&self, cmd: Cmd) -> Option<Answer> {
        let s = &self.service;
        Some(match cmd {
            Cmd::Start(u, c) => answer(block_on(s.start_voice(&conn(u), &chat(c))), |e| match e {
                StartVoiceError::Dependency(d) => Some(d),
                _ => None,
            }),
            Cmd::Join(u, c) => {
                answer(
                    block_on(s.join_voice(&conn(u), &self.room_in(c))),
                    |e| match e {
                        JoinVoiceError::Dependency(d) => Some(d),
                        _ => None,
                    },
                )
            }
            Cmd::Leave(u, c) => {
                answer(
                    block_on(s.leave_voice(&conn(u), &self.room_in(c))),
                    |e| match e {
                        LeaveVoiceError::Dependency(d) => Some(d),
                        _ => None,
                    },
                )
            }
            Cmd::Mute(u, c, m) => answer(
                block_on(s.set_mute(&conn(u), &self.room_in(c), m)),
                |e| match e {
                    SetMuteError::Dependency(d) => Some(d),
                    _ => None,
                },
            ),
            Cmd::End(u, c) => answer(
                block_on(s.end_voice(&conn(u), &self.room_in(c))),
                |e| match e {
                    EndVoiceError::Dependency(d) => Some(d),
                    _ => None,
                },
            ),
            Cmd::Disconnect(u) => {
                self.directory.disconnect(&conn(u));
                answer(block_on(s.on_disconnect(&conn(u))), |e| match e {
                    DisconnectError::Dependency(d) => Some(d),
                })
            }
            Cmd::Reconnect(u) => {
                self.directory.connect(conn(u), user(u));
                return None;
            }
            Cmd::Sweep => answer(block_on(s.sweep()), |e| match e {
                SweepError::Dependency(d) => Some(d),
            }),
            Cmd::Wait(secs) => {
                self.clock.advance(Duration::from_secs(secs));
                return None;
            }
        })
    }

    fn rooms(&self) -> BTreeMap<VoiceRoomId, VoiceRoom> {
        self.store
            .all()
            .into_iter()
            .map(|r| (r.id().clone(), r))
            .collect()
    }

    fn orphans(&self) -> BTreeSet<ChannelArn> {
        let held: BTreeSet<ChannelArn> = self
            .store
            .all()
            .iter()
            .filter(|r| r.is_active())
            .flat_map(|r| r.participants().iter().map(|p| p.channel.arn.clone()))
            .collect();
        self.channels
            .list_now()
            .into_iter()
            .map(|l| l.channel.arn)
            .filter(|a| !held.contains(a))
            .collect()
    }

    fn check_consistent(&self) -> Result<(), TestCaseError> {
        let existing: BTreeSet<ChannelArn> = self
            .channels
            .list_now()
            .into_iter()
            .map(|l| l.channel.arn)
            .collect();
        let mut held = BTreeSet::new();
        let mut active_per_chat = BTreeMap::<ChatRoomId, usize>::new();
        for room in self.store.all() {
            prop_assert!(
                VoiceRoom::from_parts(room.parts().clone()).is_ok(),
                "corrupt room {room:?}"
            );
            if room.is_active() {
                *active_per_chat.entry(room.chat_room().clone()).or_default() += 1;
                let indexed = block_on(self.store.active_in_chat_room(room.chat_room())).unwrap();
                prop_assert_eq!(indexed.as_ref().map(VoiceRoom::id), Some(room.id()));
                for p in room.participants() {
                    prop_assert!(
                        existing.contains(&p.channel.arn),
                        "{} in {} has no channel",
                        p.user,
                        room.id()
                    );
                    prop_assert!(held.insert(p.channel.arn.clone()), "channel held twice");
                }
            }
        }
        prop_assert!(active_per_chat.values().all(|n| *n == 1));
        Ok(())
    }
}

#[derive(Default)]
struct Stats {
    steps: u64,
    faults_fired: u64,
    failures: BTreeMap<String, u64>,
    outcomes: BTreeMap<&'static str, u64>,
    orphans_after_channel_faults: u64,
}

fn run_case(steps: &[Step], stats: &RefCell<Stats>) -> Result<(), TestCaseError> {
    let w = world();
    for (i, step) in steps.iter().enumerate() {
        w.faults.reset();
        if let Some((port, n, f)) = step.fault {
            w.faults.fail_at(port, n, f);
        }
        let before = w.rooms();
        let orphans_before = w.orphans();
        let Some(answer) = w.run(step.cmd) else {
            continue;
        };
        let fired = w.faults.injected() > 0;
        let at = format!("step {i} {:?}", step);
        let mut st = stats.borrow_mut();
        st.steps += 1;
        st.faults_fired += u64::from(fired);
        match &answer {
            Answer::Ok => *st.outcomes.entry("ok").or_default() += 1,
            Answer::Refused(code) => *st.outcomes.entry(code).or_default() += 1,
            Answer::Failed {
                port,
                retryable,
                code,
            } => {
                let (fport, _, f) = step.fault.expect("a failure without a fault");
                prop_assert!(fired, "{at}: failed without the fault firing: {answer:?}");
                prop_assert_eq!(*port, fport, "{}: blamed the wrong port", at);
                prop_assert_ne!(
                    *port,
                    PortName::Notifier,
                    "{}: a notification failed a use case",
                    at
                );
                let want = f == Fault::Fail { retryable: true };
                prop_assert_eq!(*retryable, want, "{}: retryable flag", at);
                prop_assert_eq!(
                    *code,
                    if want { "UNAVAILABLE" } else { "INTERNAL" },
                    "{}",
                    at
                );
                *st.failures.entry(format!("{port:?} {f:?}")).or_default() += 1;
                *st.outcomes.entry("failed").or_default() += 1;
                let atomic = matches!(
                    step.cmd,
                    Cmd::Start(..) | Cmd::Join(..) | Cmd::Leave(..) | Cmd::Mute(..) | Cmd::End(..)
                );
                if atomic {
                    prop_assert!(w.rooms() == before, "{at}: failed but changed a room");
                }
            }
        }
        drop(st);
        w.check_consistent()
            .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
        let new_orphans: Vec<_> = w.orphans().difference(&orphans_before).cloned().collect();
        if !new_orphans.is_empty() {
            let channel_fault = fired && matches!(step.fault, Some((PortName::Channels, _, _)));
            prop_assert!(
                channel_fault,
                "{at}: orphan channels {new_orphans:?} without a channels fault ({answer:?})"
            );
            stats.borrow_mut().orphans_after_channel_faults += new_orphans.len() as u64;
        }
    }
    // Recovery: no faults, everyone back, the grace period over, one sweep (which marks
    // participants on dead connections reconnecting), the reconnect grace over, another sweep
    // (which removes them).
    w.faults.reset();
    w.clock.advance(GRACE + Duration::from_secs(1));
    block_on(w.service.sweep()).map_err(|e| TestCaseError::fail(format!("recovery sweep: {e}")))?;
    w.clock
        .advance(voice_domain::DEFAULT_RECONNECT_GRACE + Duration::from_secs(1));
    block_on(w.service.sweep()).map_err(|e| TestCaseError::fail(format!("recovery sweep: {e}")))?;
    w.check_consistent()
        .map_err(|e| TestCaseError::fail(format!("after recovery: {e}")))?;
    prop_assert_eq!(
        w.orphans(),
        BTreeSet::new(),
        "orphans survive the recovery sweep"
    );
    for room in w.store.all().iter().filter(|r| r.is_active()) {
        for p in room.participants() {
            prop_assert_eq!(
                block_on(w.directory.user_of(&p.connection)).unwrap(),
                Some(p.user.clone()),
                "{} is in {} on a dead connection after the sweep",
                p.user,
                room.id()
            );
        }
    }
    Ok(())
}

#[test]
fn random_use_cases_with_random_faults_keep_every_promise() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let stats = RefCell::new(Stats::default());
    let result = runner.run(&prop::collection::vec(step(), 1..40), |steps| {
        run_case(&steps, &stats)
    });
    let st = stats.into_inner();
    let summary = format!(
        "fault proptest: {cases} cases, {} steps, {} faults fired, {} use-case failures checked, {} orphans left by channel faults and swept; outcomes {:?}; failures {:?}",
        st.steps,
        st.faults_fired,
        st.outcomes.get("failed").copied().unwrap_or(0),
        st.orphans_after_channel_faults,
        st.outcomes,
        st.failures
    );
    eprintln!("{summary}");
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must keep reaching every kind of failure, or the test has gone soft.
    for port in [
        PortName::Store,
        PortName::Directory,
        PortName::Channels,
        PortName::Credentials,
    ] {
        for f in [
            "Fail { retryable: true }",
            "Fail { retryable: false }",
            "FailAfterEffect",
        ] {
            let key = format!("{port:?} {f}");
            assert!(
                st.failures.contains_key(&key),
                "never saw a use case fail with {key}: {summary}"
            );
        }
    }
    assert!(st.faults_fired >= u64::from(cases), "{summary}");
}
