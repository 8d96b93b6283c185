//! Scripted fault injection: every use case, failing at every call it makes to every port.
//!
//! For each scenario (a use case with a prepared state) the test first runs the use case with no
//! fault and counts the calls it makes to each port. Then, for every port, every call number
//! N in 1..=that count and every fault kind (fail retryable, fail permanently, fail after the
//! effect landed, and "gone" for the notifier), it rebuilds the state, makes exactly the N-th
//! call fail, runs the use case and checks:
//! - the fault fired (so no case silently tests nothing);
//! - the use case either succeeded or failed with a dependency error from that port, reporting
//!   "retryable" exactly when the fault was retryable; notifier faults never fail a use case;
//! - no half-written room: every stored room passes `VoiceRoom::from_parts`, at most one active
//!   room per chat room, every participant's channel exists, no channel is held twice;
//! - a use case that failed changed no room (except the sweep, which is best-effort by design);
//! - no orphan channel, except where it cannot be avoided: the signaling service created a
//!   channel but reported failure (the service never learnt its ARN), or a delete failed. Those
//!   are tagged and a later sweep, once the grace period is over, must delete them;
//! - after such a sweep (no faults), no orphan at all and every invariant still holds.
//!
//! The totals are printed (for SECURITY.md) and checked against a floor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::executor::block_on;
use voice_adapters_memory::faults::{Fault, Faults, Faulty};
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
    SequentialIds,
};
use voice_domain::errors::{DependencyError, PortName, UseCaseError};
use voice_domain::ports::{
    Adapters, ChannelEndpoints, ChannelError, ChannelTags, ListedChannel, MemberState, Ports,
    SignalingChannels, VoiceRoomStore,
};
use voice_domain::{
    ChannelArn, ChannelName, ChannelRole, ChatRoomId, ClientId, ConnectionId, ServiceConfig,
    SignalingChannel, Timestamp, UserId, VoiceRoom, VoiceRoomId, VoiceService,
};

const PORTS: [PortName; 5] = [
    PortName::Store,
    PortName::Directory,
    PortName::Channels,
    PortName::Credentials,
    PortName::Notifier,
];

const GRACE: Duration = Duration::from_secs(300);

/// Records which `SignalingChannels` method each call was, so that the test knows whether the
/// faulted call was a `create` or a `delete` (the two that may leave an orphan).
#[derive(Clone)]
struct Recording<T> {
    inner: T,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl<T> Recording<T> {
    fn log(&self, method: &'static str) {
        self.calls.lock().unwrap().push(method);
    }
}

#[async_trait]
impl<T: SignalingChannels> SignalingChannels for Recording<T> {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        self.log("create");
        self.inner.create(name, tags).await
    }
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        self.log("delete");
        self.inner.delete(channel).await
    }
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        self.log("endpoints");
        self.inner.endpoints(channel, role, client_id).await
    }
    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        self.log("list");
        self.inner.list().await
    }
}

struct FaultPorts;

impl Ports for FaultPorts {
    type Store = Faulty<MemoryStore>;
    type Directory = Faulty<MemoryDirectory>;
    type Channels = Recording<Faulty<MemoryChannels<ManualClock>>>;
    type Credentials = Faulty<MemoryCredentials<ManualClock>>;
    type Notifier = Faulty<MemoryNotifier>;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = voice_domain::pool::NoPool;
}

/// The service over faulty memory adapters, with handles onto the state behind them.
struct World {
    service: VoiceService<FaultPorts>,
    faults: Faults,
    store: MemoryStore,
    directory: MemoryDirectory,
    channels: MemoryChannels<ManualClock>,
    notifier: MemoryNotifier,
    clock: ManualClock,
    channel_calls: Arc<Mutex<Vec<&'static str>>>,
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}
fn chat(s: &str) -> ChatRoomId {
    ChatRoomId::parse(s).unwrap()
}

impl World {
    fn new(capacity: u8) -> Self {
        let faults = Faults::new();
        let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
        let store = MemoryStore::new();
        let directory = MemoryDirectory::new();
        let channels = MemoryChannels::new(clock.clone());
        let credentials = MemoryCredentials::new(clock.clone());
        let notifier = MemoryNotifier::new();
        let channel_calls = Arc::new(Mutex::new(Vec::new()));
        let service = VoiceService::new(
            Adapters::<FaultPorts> {
                store: Faulty::new(store.clone(), PortName::Store, faults.clone()),
                directory: Faulty::new(directory.clone(), PortName::Directory, faults.clone()),
                channels: Recording {
                    inner: Faulty::new(channels.clone(), PortName::Channels, faults.clone()),
                    calls: channel_calls.clone(),
                },
                credentials: Faulty::new(credentials, PortName::Credentials, faults.clone()),
                notifier: Faulty::new(notifier.clone(), PortName::Notifier, faults.clone()),
                clock: clock.clone(),
                ids: SequentialIds::default(),
                pool: voice_domain::pool::NoPool,
            },
            ServiceConfig {
                orphan_grace: GRACE,
                capacity: voice_domain::Capacity::new(capacity).unwrap(),
                ..ServiceConfig::default()
            },
        );
        Self {
            service,
            faults,
            store,
            directory,
            channels,
            notifier,
            clock,
            channel_calls,
        }
    }

    /// Chat room `room` with admin `admin` and approved members `members`, each user `u` online
    /// on connection `c-u`.
    fn chat_room(&self, room: &str, admin: &str, members: &[&str]) {
        self.directory.create_room(chat(room), user(admin)).unwrap();
        self.directory
            .connect(conn(&format!("c-{admin}")), user(admin));
        for m in members {
            self.directory
                .set_state(&chat(room), user(m), MemberState::Approved)
                .unwrap();
            self.directory.connect(conn(&format!("c-{m}")), user(m));
        }
    }

    fn start(&self, who: &str, room: &str) -> VoiceRoomId {
        block_on(
            self.service
                .start_voice(&conn(&format!("c-{who}")), &chat(room)),
        )
        .expect("setup: start")
        .id()
        .clone()
    }

    fn join(&self, who: &str, vr: &VoiceRoomId) {
        block_on(self.service.join_voice(&conn(&format!("c-{who}")), vr)).expect("setup: join");
    }

    fn rooms(&self) -> BTreeMap<VoiceRoomId, VoiceRoom> {
        self.store
            .all()
            .into_iter()
            .map(|r| (r.id().clone(), r))
            .collect()
    }

    fn channel_set(&self) -> BTreeSet<ChannelArn> {
        self.channels
            .list_now()
            .into_iter()
            .map(|l| l.channel.arn)
            .collect()
    }

    /// Channels that no participant of an active room holds.
    fn orphans(&self) -> BTreeSet<ChannelArn> {
        let held: BTreeSet<ChannelArn> = self
            .store
            .all()
            .iter()
            .filter(|r| r.is_active())
            .flat_map(|r| r.participants().iter().map(|p| p.channel.arn.clone()))
            .collect();
        self.channel_set().difference(&held).cloned().collect()
    }

    /// No half-written room: stored rooms are valid, one active room per chat room, every
    /// participant's channel exists and is nobody else's.
    fn check_consistent(&self, case: &str) {
        let channels = self.channel_set();
        let mut active_per_chat: BTreeMap<ChatRoomId, usize> = BTreeMap::new();
        let mut held = BTreeSet::new();
        for room in self.store.all() {
            let rebuilt = VoiceRoom::from_parts(room.parts().clone());
            assert!(rebuilt.is_ok(), "{case}: corrupt room {rebuilt:?}");
            if room.is_active() {
                *active_per_chat.entry(room.chat_room().clone()).or_default() += 1;
                let indexed = block_on(self.store.active_in_chat_room(room.chat_room())).unwrap();
                assert_eq!(
                    indexed.as_ref().map(VoiceRoom::id),
                    Some(room.id()),
                    "{case}: active index disagrees"
                );
            }
            for p in room.participants() {
                assert!(
                    channels.contains(&p.channel.arn),
                    "{case}: participant {} of {} holds channel {} that does not exist",
                    p.user,
                    room.id(),
                    p.channel.arn
                );
                assert!(
                    held.insert(p.channel.arn.clone()),
                    "{case}: channel {} held twice",
                    p.channel.arn
                );
            }
        }
        for (c, n) in active_per_chat {
            assert_eq!(n, 1, "{case}: {n} active rooms in {c}");
        }
    }
}

/// What a use case said, reduced to what the checks need.
#[derive(Debug)]
enum Outcome {
    Ok,
    Err {
        code: &'static str,
        retryable: bool,
        port: Option<PortName>,
    },
}

fn outcome<T, E: UseCaseError>(
    r: Result<T, E>,
    dep: impl Fn(&E) -> Option<&DependencyError>,
) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err {
            code: e.code(),
            retryable: e.retryable(),
            port: dep(&e).map(|d| d.port),
        },
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start {
        who: &'static str,
        chat: &'static str,
    },
    Join {
        conn: &'static str,
    },
    Leave {
        who: &'static str,
    },
    Mute {
        who: &'static str,
        muted: bool,
    },
    End {
        who: &'static str,
    },
    Disconnect {
        conn: &'static str,
    },
    Sweep,
    ActiveVoice {
        who: &'static str,
        chat: &'static str,
    },
}

/// The voice room the actions of a scenario address: the active one of `chat-1`.
const MAIN: &str = "chat-1";

fn run(w: &World, vr: &VoiceRoomId, action: Action) -> Outcome {
    use voice_domain::errors::{
        DisconnectError, EndVoiceError, GetVoiceRoomError, JoinVoiceError, LeaveVoiceError,
        SetMuteError, StartVoiceError, SweepError,
    };
    let s = &w.service;
    let c = |who: &str| conn(&format!("c-{who}"));
    match action {
        Action::Start { who, chat: ch } => {
            outcome(block_on(s.start_voice(&c(who), &chat(ch))), |e| match e {
                StartVoiceError::Dependency(d) => Some(d),
                _ => None,
            })
        }
        Action::Join { conn: cn } => outcome(block_on(s.join_voice(&conn(cn), vr)), |e| match e {
            JoinVoiceError::Dependency(d) => Some(d),
            _ => None,
        }),
        Action::Leave { who } => outcome(block_on(s.leave_voice(&c(who), vr)), |e| match e {
            LeaveVoiceError::Dependency(d) => Some(d),
            _ => None,
        }),
        Action::Mute { who, muted } => {
            outcome(block_on(s.set_mute(&c(who), vr, muted)), |e| match e {
                SetMuteError::Dependency(d) => Some(d),
                _ => None,
            })
        }
        Action::End { who } => outcome(block_on(s.end_voice(&c(who), vr)), |e| match e {
            EndVoiceError::Dependency(d) => Some(d),
            _ => None,
        }),
        Action::Disconnect { conn: cn } => {
            outcome(block_on(s.on_disconnect(&conn(cn))), |e| match e {
                DisconnectError::Dependency(d) => Some(d),
            })
        }
        Action::Sweep => outcome(block_on(s.sweep()), |e| match e {
            SweepError::Dependency(d) => Some(d),
        }),
        Action::ActiveVoice { who, chat: ch } => {
            outcome(block_on(s.active_voice(&c(who), &chat(ch))), |e| match e {
                GetVoiceRoomError::Dependency(d) => Some(d),
                _ => None,
            })
        }
    }
}

struct Scenario {
    name: &'static str,
    setup: fn(&World),
    action: Action,
    /// Whether a failed run must leave every room as it was (all but the sweep).
    atomic: bool,
    /// The refusal the use case gives in this state, if it is not meant to succeed.
    refusal: Option<&'static str>,
    /// The service's room capacity.
    capacity: u8,
    /// What a successful run must have achieved (checked after faults that did not fail it).
    done: fn(&World) -> bool,
}

/// Two chat rooms: `chat-1` (admin `admin`; alice, bob, carol approved) and `chat-2` (admin
/// `dave`; erin approved). Everyone is online.
fn base(w: &World) {
    w.chat_room("chat-1", "admin", &["alice", "bob", "carol"]);
    w.chat_room("chat-2", "dave", &["erin"]);
}

/// `base`, plus a voice room in chat-1 with alice (master), bob and carol, and one in chat-2
/// with dave.
fn with_rooms(w: &World) {
    base(w);
    let vr = w.start("alice", "chat-1");
    w.join("bob", &vr);
    w.join("carol", &vr);
    w.start("dave", "chat-2");
}

fn participant(w: &World, who: &str) -> Option<ConnectionId> {
    block_on(w.store.active_in_chat_room(&chat(MAIN)))
        .unwrap()
        .and_then(|r| r.participant(&user(who)).map(|p| p.connection.clone()))
}

/// Whether `who` is a participant of the active voice room of `chat_room`, reconnecting.
fn reconnecting(w: &World, chat_room: &str, who: &str) -> bool {
    block_on(w.store.active_in_chat_room(&chat(chat_room)))
        .unwrap()
        .and_then(|r| r.participant(&user(who)).map(|p| p.is_reconnecting()))
        .unwrap_or(false)
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "start_voice",
            setup: base,
            action: Action::Start {
                who: "alice",
                chat: "chat-1",
            },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| {
                block_on(w.store.active_in_chat_room(&chat(MAIN)))
                    .unwrap()
                    .is_some_and(|r| r.master() == &user("alice"))
            },
        },
        Scenario {
            name: "start_voice while one is active (refused)",
            setup: with_rooms,
            action: Action::Start {
                who: "bob",
                chat: "chat-1",
            },
            atomic: true,
            refusal: Some("ALREADY_ACTIVE"),
            capacity: 10,
            done: |_| true,
        },
        Scenario {
            name: "join_voice (new participant, two peers)",
            setup: |w| {
                base(w);
                let vr = w.start("alice", "chat-1");
                w.join("bob", &vr);
            },
            action: Action::Join { conn: "c-carol" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| participant(w, "carol").is_some(),
        },
        Scenario {
            name: "join_voice (credential refresh)",
            setup: with_rooms,
            action: Action::Join { conn: "c-bob" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| participant(w, "bob") == Some(conn("c-bob")),
        },
        Scenario {
            name: "join_voice (reconnect from another tab)",
            setup: |w| {
                with_rooms(w);
                w.directory.connect(conn("c-bob-2"), user("bob"));
            },
            action: Action::Join { conn: "c-bob-2" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| participant(w, "bob") == Some(conn("c-bob-2")),
        },
        Scenario {
            name: "leave_voice (master hands over)",
            setup: with_rooms,
            action: Action::Leave { who: "alice" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| participant(w, "alice").is_none(),
        },
        Scenario {
            name: "leave_voice (last one out)",
            setup: |w| {
                base(w);
                w.start("alice", "chat-1");
            },
            action: Action::Leave { who: "alice" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| {
                block_on(w.store.active_in_chat_room(&chat(MAIN)))
                    .unwrap()
                    .is_none()
            },
        },
        Scenario {
            name: "set_mute",
            setup: with_rooms,
            action: Action::Mute {
                who: "bob",
                muted: true,
            },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| {
                block_on(w.store.active_in_chat_room(&chat(MAIN)))
                    .unwrap()
                    .is_some_and(|r| r.participant(&user("bob")).is_some_and(|p| p.muted))
            },
        },
        Scenario {
            name: "end_voice (master)",
            setup: with_rooms,
            action: Action::End { who: "alice" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| {
                block_on(w.store.active_in_chat_room(&chat(MAIN)))
                    .unwrap()
                    .is_none()
            },
        },
        Scenario {
            name: "end_voice (chat admin)",
            setup: with_rooms,
            action: Action::End { who: "admin" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| {
                block_on(w.store.active_in_chat_room(&chat(MAIN)))
                    .unwrap()
                    .is_none()
            },
        },
        Scenario {
            name: "on_disconnect",
            setup: |w| {
                with_rooms(w);
                w.directory.disconnect(&conn("c-bob"));
            },
            action: Action::Disconnect { conn: "c-bob" },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| reconnecting(w, "chat-1", "bob"),
        },
        Scenario {
            name: "sweep (dead participant, abandoned room, orphan channel)",
            setup: |w| {
                with_rooms(w);
                // A channel left by a crash between create and record.
                let tags = ChannelTags {
                    chat_room: chat("chat-1"),
                    voice_room: VoiceRoomId::parse("vr-crashed").unwrap(),
                    owner: user("alice"),
                };
                block_on(
                    w.channels
                        .create(&ChannelName::from_unique("orphan").unwrap(), &tags),
                )
                .unwrap();
                // bob's tab closed without a $disconnect; dave (alone in chat-2) too. A sweep
                // marks them reconnecting; they do not come back within the reconnect grace.
                w.directory.disconnect(&conn("c-bob"));
                w.directory.disconnect(&conn("c-dave"));
                block_on(w.service.sweep()).unwrap();
                assert!(reconnecting(w, "chat-1", "bob") && reconnecting(w, "chat-2", "dave"));
                w.clock.advance(GRACE + Duration::from_secs(1));
            },
            action: Action::Sweep,
            atomic: false,
            refusal: None,
            capacity: 10,
            done: |w| {
                participant(w, "bob").is_none()
                    && block_on(w.store.active_in_chat_room(&chat("chat-2")))
                        .unwrap()
                        .is_none()
                    && w.orphans().is_empty()
            },
        },
        Scenario {
            name: "active_voice",
            setup: with_rooms,
            action: Action::ActiveVoice {
                who: "bob",
                chat: "chat-1",
            },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |_| true,
        },
        Scenario {
            name: "start_voice, a member's socket dropped unnoticed (gone cascade)",
            setup: |w| {
                base(w);
                // erin is in chat-1 and in dave's voice room in chat-2; her socket is dead but
                // the chat app has not noticed. Telling chat-1 about the start finds her gone.
                w.directory
                    .set_state(&chat("chat-1"), user("erin"), MemberState::Approved)
                    .unwrap();
                let vr2 = w.start("dave", "chat-2");
                w.join("erin", &vr2);
                w.notifier.mark_gone(conn("c-erin"));
            },
            action: Action::Start {
                who: "alice",
                chat: "chat-1",
            },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| {
                block_on(w.store.active_in_chat_room(&chat(MAIN)))
                    .unwrap()
                    .is_some()
            },
        },
        Scenario {
            name: "join_voice into a full room (refused)",
            setup: |w| {
                base(w);
                let vr = w.start("alice", "chat-1");
                w.join("bob", &vr);
            },
            action: Action::Join { conn: "c-carol" },
            atomic: true,
            refusal: Some("ROOM_FULL"),
            capacity: 2,
            done: |w| participant(w, "carol").is_none(),
        },
        Scenario {
            name: "join_voice by a pending member (refused)",
            setup: |w| {
                with_rooms(w);
                w.directory
                    .request_join(&chat("chat-1"), user("erin"))
                    .unwrap();
            },
            action: Action::Join { conn: "c-erin" },
            atomic: true,
            refusal: Some("NOT_APPROVED"),
            capacity: 10,
            done: |w| participant(w, "erin").is_none(),
        },
        Scenario {
            name: "leave_voice by a non-participant (refused)",
            setup: |w| {
                base(w);
                w.start("alice", "chat-1");
            },
            action: Action::Leave { who: "bob" },
            atomic: true,
            refusal: Some("NOT_PARTICIPANT"),
            capacity: 10,
            done: |w| participant(w, "alice").is_some(),
        },
        Scenario {
            name: "set_mute to the current state (no-op)",
            setup: with_rooms,
            action: Action::Mute {
                who: "bob",
                muted: false,
            },
            atomic: true,
            refusal: None,
            capacity: 10,
            done: |w| participant(w, "bob").is_some(),
        },
        Scenario {
            name: "end_voice by a plain participant (refused)",
            setup: with_rooms,
            action: Action::End { who: "bob" },
            atomic: true,
            refusal: Some("NOT_ALLOWED"),
            capacity: 10,
            done: |w| participant(w, "alice").is_some(),
        },
        Scenario {
            name: "on_disconnect of a connection in two voice rooms",
            setup: |w| {
                base(w);
                w.directory
                    .set_state(&chat("chat-2"), user("alice"), MemberState::Approved)
                    .unwrap();
                let vr = w.start("alice", "chat-1");
                w.join("bob", &vr);
                let vr2 = w.start("dave", "chat-2");
                w.join("alice", &vr2);
                w.directory.disconnect(&conn("c-alice"));
            },
            action: Action::Disconnect { conn: "c-alice" },
            // Two rooms are left one after the other; a failure on the second keeps the first.
            atomic: false,
            refusal: None,
            capacity: 10,
            done: |w| reconnecting(w, "chat-1", "alice") && reconnecting(w, "chat-2", "alice"),
        },
    ]
}

fn faults_for(port: PortName) -> Vec<Fault> {
    let mut f = vec![
        Fault::Fail { retryable: true },
        Fault::Fail { retryable: false },
        Fault::FailAfterEffect,
    ];
    if port == PortName::Notifier {
        f.push(Fault::Gone);
    }
    f
}

/// Prepares `scenario` in a fresh world; returns the world and the voice room the action
/// addresses (the active one in chat-1, if any).
fn prepare(scenario: &Scenario) -> (World, VoiceRoomId) {
    let w = World::new(scenario.capacity);
    (scenario.setup)(&w);
    let vr = block_on(w.store.active_in_chat_room(&chat(MAIN)))
        .unwrap()
        .map(|r| r.id().clone())
        .unwrap_or_else(|| VoiceRoomId::parse("vr-none").unwrap());
    w.clock.advance(Duration::from_secs(1));
    w.faults.reset();
    w.channel_calls.lock().unwrap().clear();
    (w, vr)
}

/// After the fault: a sweep with no faults, once the grace period is over, leaves no orphan and
/// every invariant intact.
fn recover(w: &World, case: &str) {
    w.faults.reset();
    w.clock.advance(GRACE + Duration::from_secs(1));
    block_on(w.service.sweep()).unwrap_or_else(|e| panic!("{case}: recovery sweep failed: {e}"));
    w.check_consistent(&format!("{case} (after recovery sweep)"));
    assert_eq!(
        w.orphans(),
        BTreeSet::new(),
        "{case}: orphans survive the recovery sweep"
    );
}

/// What one faulted run did, for the totals.
struct CaseReport {
    use_case_failed: bool,
    orphans_swept: u64,
}

/// One faulted run: `scenario` with the `n`-th call of `port` failing with `fault`. Panics with
/// the case's name on any broken promise.
fn check_case(
    scenario: &Scenario,
    port: PortName,
    n: u64,
    fault: Fault,
    channel_calls: &[&'static str],
) -> CaseReport {
    let case = format!("{} / {port} call {n} / {fault:?}", scenario.name);
    let (w, vr) = prepare(scenario);
    let before = w.rooms();
    let orphans_before = w.orphans();
    w.faults.fail_at(port, n, fault);
    let out = run(&w, &vr, scenario.action);
    assert_eq!(w.faults.injected(), 1, "{case}: the fault did not fire");

    // The answer.
    let mut use_case_failed = false;
    match (&out, scenario.refusal) {
        (Outcome::Ok, None) => {
            // A "gone" connection is removed, possibly the caller's own; the sweep is
            // best-effort and counts what it skipped.
            if fault != Fault::Gone && scenario.atomic {
                assert!(
                    (scenario.done)(&w),
                    "{case}: reported success but did not do it"
                );
            }
        }
        (
            Outcome::Err {
                code, port: None, ..
            },
            Some(refusal),
        ) if *code == refusal => {
            assert_eq!(w.rooms(), before, "{case}: refused but changed a room");
        }
        (
            Outcome::Err {
                code,
                retryable,
                port: Some(p),
            },
            _,
        ) => {
            use_case_failed = true;
            assert_ne!(
                port,
                PortName::Notifier,
                "{case}: a notification failure failed the use case"
            );
            assert_eq!(*p, port, "{case}: blamed the wrong port");
            let want_retryable = fault == Fault::Fail { retryable: true };
            assert_eq!(*retryable, want_retryable, "{case}: retryable flag");
            let want_code = if want_retryable {
                "UNAVAILABLE"
            } else {
                "INTERNAL"
            };
            assert_eq!(*code, want_code, "{case}");
            if scenario.atomic {
                w.check_consistent(&case);
                assert_eq!(w.rooms(), before, "{case}: failed but changed a room");
            }
        }
        other => panic!("{case}: unexpected outcome {other:?}"),
    }

    // No half-written room.
    w.check_consistent(&case);

    // No orphan, unless the signaling service itself kept one from us.
    let new_orphans: BTreeSet<_> = w.orphans().difference(&orphans_before).cloned().collect();
    if !new_orphans.is_empty() {
        let method = (port == PortName::Channels)
            .then(|| channel_calls[usize::try_from(n - 1).expect("small")]);
        let unavoidable = matches!(
            (method, fault),
            (Some("create"), Fault::FailAfterEffect) | (Some("delete"), Fault::Fail { .. })
        );
        assert!(
            unavoidable,
            "{case}: left orphan channels {new_orphans:?} (faulted call: {method:?})"
        );
    }
    recover(&w, &case);
    CaseReport {
        use_case_failed,
        orphans_swept: new_orphans.len() as u64,
    }
}

#[test]
fn every_use_case_survives_a_fault_at_every_call_of_every_port() {
    let mut cases = 0u64;
    let mut failed_use_cases = 0u64;
    let mut orphans_swept = 0u64;
    let mut per_port: BTreeMap<String, u64> = BTreeMap::new();
    let mut broken: Vec<String> = Vec::new();
    for scenario in scenarios() {
        // Baseline: no fault. Count the calls per port and check the scenario does its job.
        let (w, vr) = prepare(&scenario);
        let before = w.rooms();
        let base = run(&w, &vr, scenario.action);
        match (&base, scenario.refusal) {
            (Outcome::Ok, None) => {}
            (
                Outcome::Err {
                    code, port: None, ..
                },
                Some(refusal),
            ) if *code == refusal => {}
            other => panic!("{}: baseline run gave {other:?}", scenario.name),
        }
        assert!(
            (scenario.done)(&w),
            "{}: baseline did not do its job",
            scenario.name
        );
        w.check_consistent(scenario.name);
        assert!(
            w.orphans().is_empty(),
            "{}: baseline left orphans",
            scenario.name
        );
        if !scenario.atomic {
            assert_ne!(
                w.rooms(),
                before,
                "{}: baseline changed nothing",
                scenario.name
            );
        }
        let calls: Vec<(PortName, u64)> = PORTS.iter().map(|&p| (p, w.faults.calls(p))).collect();
        let channel_calls = w.channel_calls.lock().unwrap().clone();
        assert_eq!(
            channel_calls.len() as u64,
            w.faults.calls(PortName::Channels)
        );
        eprintln!("{}: calls per port {calls:?}", scenario.name);

        for (port, n_calls) in calls {
            for n in 1..=n_calls {
                for fault in faults_for(port) {
                    cases += 1;
                    *per_port.entry(port.to_string()).or_default() += 1;
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        check_case(&scenario, port, n, fault, &channel_calls)
                    }));
                    match run {
                        Ok(report) => {
                            failed_use_cases += u64::from(report.use_case_failed);
                            orphans_swept += report.orphans_swept;
                        }
                        Err(panic) => broken.push(
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "non-string panic".into()),
                        ),
                    }
                }
            }
        }
    }
    let summary = format!(
        "fault injection: {cases} cases over {} scenarios, {cases} faults injected (each case \
         asserts its fault fired), {failed_use_cases} use-case failures checked, {orphans_swept} \
         unavoidable orphans swept; faults per port {per_port:?}",
        scenarios().len()
    );
    println!("{summary}");
    eprintln!("{summary}");
    assert!(
        broken.is_empty(),
        "{} of {cases} fault cases broke a promise:\n{}",
        broken.len(),
        broken.join("\n---\n")
    );
    assert!(
        cases >= 600,
        "only {cases} fault cases: the scenarios no longer exercise the ports"
    );
    for port in PORTS {
        assert!(
            per_port.get(&port.to_string()).copied().unwrap_or(0) >= 9,
            "too few faults on the {port}"
        );
    }
}
