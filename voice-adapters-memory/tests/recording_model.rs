//! Property test of the recording rules: random sequences of voice commands (start, join, leave,
//! disconnect and resume from a new tab, sweep with the clock moving, end) mixed with
//! `startRecording` / `stopRecording` from every user, on the real `VoiceService` over the
//! in-memory adapters. After every step:
//! - each recording command's outcome (success or wire code) is the one the rules predict from
//!   the room as it was: only the master or the chat admin, as a connected participant on its
//!   current connection, may start; only the master, the admin or the recorder may stop;
//! - a running recording lives only in an active room and its recorder is a connected
//!   participant on its current connection: leaving, dropping, resuming elsewhere and the room
//!   ending all stop it (the domain rule; `VoiceRoom::from_parts` checks the invariant too);
//! - consent: a member watching the chat room has been told of every start and every stop, so
//!   what it believes ("recording" or not, and which one) is the stored truth;
//! - uploads are taken for the last recording exactly while it runs and for the final-chunk
//!   grace after it stopped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::executor::block_on;
use proptest::prelude::*;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
    SequentialIds,
};
use voice_domain::errors::UseCaseError;
use voice_domain::ports::{Adapters, Ports, VoiceRoomStore};
use voice_domain::recording::{RecordingId, FINAL_CHUNK_GRACE};
use voice_domain::{
    ChatRoomId, ConnectionId, ServiceConfig, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId,
    VoiceService,
};

/// Over a whole run: recordings started, stopped on request, and stopped by themselves (the
/// recorder left or dropped, the room ended), so the run is known to reach every rule.
static STARTED: AtomicUsize = AtomicUsize::new(0);
static STOPPED: AtomicUsize = AtomicUsize::new(0);
static AUTO_STOPPED: AtomicUsize = AtomicUsize::new(0);

struct P;

impl Ports for P {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = MemoryChannels<ManualClock>;
    type Credentials = MemoryCredentials<ManualClock>;
    type Notifier = MemoryNotifier;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = voice_domain::pool::NoPool;
}

/// u0 is the chat admin, u1..u2 approved members, u3 pending.
const USERS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Start(usize),
    Join(usize),
    Leave(usize),
    Drop(usize),
    Sweep(u64),
    End(usize),
    StartRec(usize),
    StopRec(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS;
    prop_oneof![
        1 => u.clone().prop_map(Op::Start),
        3 => u.clone().prop_map(Op::Join),
        1 => u.clone().prop_map(Op::Leave),
        1 => u.clone().prop_map(Op::Drop),
        1 => (0u64..40).prop_map(Op::Sweep),
        1 => u.clone().prop_map(Op::End),
        3 => u.clone().prop_map(Op::StartRec),
        2 => u.prop_map(Op::StopRec),
    ]
}

struct World {
    service: VoiceService<P>,
    store: MemoryStore,
    directory: MemoryDirectory,
    notifier: MemoryNotifier,
    clock: ManualClock,
    chat: ChatRoomId,
    /// Each user's current connection generation.
    gens: [u32; USERS],
    /// The latest voice room.
    room: Option<VoiceRoomId>,
    /// What the watching member was told: the running recording, if any.
    told: Option<RecordingId>,
    /// The latest recording ever started.
    last: Option<RecordingId>,
}

fn user(u: usize) -> UserId {
    UserId::parse(format!("u{u}")).unwrap()
}

impl World {
    fn new() -> Self {
        let store = MemoryStore::new();
        let directory = MemoryDirectory::new();
        let clock = ManualClock::at(Timestamp::from_millis(1_000_000));
        let notifier = MemoryNotifier::new();
        let service = VoiceService::new(
            Adapters::<P> {
                store: store.clone(),
                directory: directory.clone(),
                channels: MemoryChannels::new(clock.clone()),
                credentials: MemoryCredentials::new(clock.clone()),
                notifier: notifier.clone(),
                clock: clock.clone(),
                ids: SequentialIds::default(),
                pool: voice_domain::pool::NoPool,
            },
            ServiceConfig::default(),
        );
        let chat = ChatRoomId::parse("chat").unwrap();
        directory.create_room(chat.clone(), user(0)).unwrap();
        for u in 1..USERS {
            directory.request_join(&chat, user(u)).unwrap();
            if u < 3 {
                directory.approve(&chat, &user(u)).unwrap();
            }
        }
        // A member who never joins voice and never drops: it hears what the chat room hears.
        directory.connect(ConnectionId::parse("watch").unwrap(), user(1));
        let w = Self {
            service,
            store,
            directory,
            notifier,
            clock,
            chat,
            gens: [0; USERS],
            room: None,
            told: None,
            last: None,
        };
        for u in 0..USERS {
            w.directory.connect(w.conn(u), user(u));
        }
        w
    }

    fn conn(&self, u: usize) -> ConnectionId {
        ConnectionId::parse(format!("k{u}-{}", self.gens[u])).unwrap()
    }

    fn stored(&self) -> Option<VoiceRoom> {
        let id = self.room.as_ref()?;
        block_on(self.store.get(id)).unwrap()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.stored();
        match *op {
            Op::Start(u) => {
                if let Ok(r) = block_on(self.service.start_voice(&self.conn(u), &self.chat)) {
                    self.room = Some(r.id().clone());
                }
            }
            Op::Join(u) => {
                if let Some(id) = self.room.clone() {
                    let _ = block_on(self.service.join_voice(&self.conn(u), &id));
                }
            }
            Op::Leave(u) => {
                if let Some(id) = self.room.clone() {
                    let _ = block_on(self.service.leave_voice(&self.conn(u), &id));
                }
            }
            Op::Drop(u) => {
                let old = self.conn(u);
                self.directory.disconnect(&old);
                let _ = block_on(self.service.on_disconnect(&old));
                self.gens[u] += 1;
                self.directory.connect(self.conn(u), user(u));
            }
            Op::Sweep(secs) => {
                self.clock.advance(Duration::from_secs(secs));
                let _ = block_on(self.service.sweep());
            }
            Op::End(u) => {
                if let Some(id) = self.room.clone() {
                    let _ = block_on(self.service.end_voice(&self.conn(u), &id));
                }
            }
            Op::StartRec(u) => {
                let Some(id) = self.room.clone() else {
                    return Ok(());
                };
                let room = before.expect("a started room is stored");
                let me = user(u);
                let expected = if u == 3 {
                    Err("NOT_APPROVED")
                } else if !room.is_active() {
                    Err("VOICE_ROOM_ENDED")
                } else if !room
                    .participant(&me)
                    .is_some_and(|p| p.connection == self.conn(u) && !p.is_reconnecting())
                {
                    Err("NOT_PARTICIPANT")
                } else if room.master() != &me && u != 0 {
                    Err("NOT_ALLOWED")
                } else if room.is_recording() {
                    Err("ALREADY_RECORDING")
                } else {
                    Ok(())
                };
                let got = block_on(self.service.start_recording(&self.conn(u), &id));
                prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| e.code()), expected);
                if let Ok(r) = got {
                    STARTED.fetch_add(1, Ordering::Relaxed);
                    let rec = r.running_recording().expect("started");
                    prop_assert_eq!(&rec.by, &me);
                    self.last = Some(rec.id.clone());
                }
            }
            Op::StopRec(u) => {
                let Some(id) = self.room.clone() else {
                    return Ok(());
                };
                let room = before.expect("a started room is stored");
                let me = user(u);
                let replaced = room
                    .participant(&me)
                    .is_some_and(|p| p.connection != self.conn(u));
                let expected = if u != 0 && room.is_active() && replaced {
                    Err("NOT_ALLOWED")
                } else if !room.is_active() {
                    Err("VOICE_ROOM_ENDED")
                } else if let Some(rec) = room.running_recording() {
                    if room.master() == &me || u == 0 || rec.by == me {
                        Ok(())
                    } else {
                        Err("NOT_ALLOWED")
                    }
                } else {
                    Err("NOT_RECORDING")
                };
                let got = block_on(self.service.stop_recording(&self.conn(u), &id));
                prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| e.code()), expected);
                if got.is_ok() {
                    STOPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for ev in self.notifier.take(&ConnectionId::parse("watch").unwrap()) {
            match ev {
                VoiceEvent::RecordingStarted { recording_id, .. } => {
                    prop_assert!(self.told.is_none(), "two recordings at once");
                    self.told = Some(recording_id);
                }
                VoiceEvent::RecordingStopped {
                    recording_id,
                    reason,
                    ..
                } => {
                    if !matches!(
                        reason,
                        voice_domain::recording::RecordingStopReason::Stopped { .. }
                    ) {
                        AUTO_STOPPED.fetch_add(1, Ordering::Relaxed);
                    }
                    prop_assert_eq!(self.told.take(), Some(recording_id));
                }
                _ => {}
            }
        }
        let Some(room) = self.stored() else {
            return Ok(());
        };
        prop_assert!(VoiceRoom::from_parts(room.parts().clone()).is_ok());
        let running = room.running_recording();
        prop_assert_eq!(running.map(|r| &r.id), self.told.as_ref());
        if let Some(rec) = running {
            prop_assert!(room.is_active());
            let idx: usize = rec.by.as_str()[1..].parse().unwrap();
            let p = room
                .participant(&rec.by)
                .expect("the recorder is in the room");
            prop_assert!(!p.is_reconnecting());
            prop_assert_eq!(&p.connection, &self.conn(idx));
        }
        if let Some(last) = &self.last {
            let now = self.clock.now_for_test();
            let should = room.recording().is_some_and(|r| {
                &r.id == last
                    && r.stopped
                        .as_ref()
                        .is_none_or(|s| now.since(s.at) < FINAL_CHUNK_GRACE)
            });
            let got = block_on(self.service.recording_upload(room.id(), last));
            prop_assert_eq!(got.is_ok(), should);
        }
        Ok(())
    }
}

trait NowForTest {
    fn now_for_test(&self) -> Timestamp;
}

impl NowForTest for ManualClock {
    fn now_for_test(&self) -> Timestamp {
        voice_domain::ports::Clock::now(self)
    }
}

#[test]
fn recording_rules_hold_over_random_histories() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        let mut w = World::new();
        for op in &ops {
            w.step(op)?;
        }
        Ok(())
    }) {
        panic!("{e}");
    }
    let (started, stopped, auto) = (
        STARTED.load(Ordering::Relaxed),
        STOPPED.load(Ordering::Relaxed),
        AUTO_STOPPED.load(Ordering::Relaxed),
    );
    eprintln!(
        "recordings started {started}, stopped on request {stopped}, stopped by themselves {auto}"
    );
    if cases >= 100 {
        assert!(
            started > 0 && stopped > 0 && auto > 0,
            "the run no longer reaches every rule: started {started}, stopped {stopped}, auto {auto}"
        );
    }
}

#[test]
fn the_recorder_leaving_stops_the_recording_and_everyone_is_told() {
    let mut w = World::new();
    for op in [
        Op::Start(1),
        Op::Join(0),
        Op::Join(2),
        Op::StartRec(1),
        Op::Leave(1),
    ] {
        w.step(&op).unwrap();
    }
    let room = w.stored().unwrap();
    assert!(room.is_active() && !room.is_recording());
    assert!(w.told.is_none());
    // The admin records, then the room ends: stopped with it.
    w.step(&Op::StartRec(0)).unwrap();
    assert!(w.stored().unwrap().is_recording());
    w.step(&Op::End(0)).unwrap();
    let room = w.stored().unwrap();
    assert!(!room.is_active() && room.recording().is_some() && !room.is_recording());
}

/// Storages that hand the recorder per-part upload URLs (S3) ask `recorder_upload` first: only
/// the recorder's own connection gets them while it runs, no other member, participant or
/// stranger; finishing needs the recording stopped; after the final-chunk grace nobody uploads.
#[test]
fn only_the_recorders_connection_may_upload_and_it_finishes_only_a_stopped_recording() {
    use voice_domain::errors::RecorderUploadError as E;
    let mut w = World::new();
    for op in [Op::Start(1), Op::Join(2), Op::StartRec(1)] {
        w.step(&op).unwrap();
    }
    let room = w.room.clone().unwrap();
    let rec = w.stored().unwrap().running_recording().unwrap().id.clone();
    let ask = |w: &World, u: usize, finishing: bool| {
        block_on(
            w.service
                .recorder_upload(&w.conn(u), &room, &rec, finishing),
        )
        .map(|_| ())
    };
    assert_eq!(ask(&w, 1, false), Ok(()));
    assert_eq!(
        ask(&w, 2, false),
        Err(E::NotRecorder),
        "another participant"
    );
    assert_eq!(
        ask(&w, 0, false),
        Err(E::NotRecorder),
        "the admin, not in the room"
    );
    let stranger = ConnectionId::parse("nobody").unwrap();
    assert_eq!(
        block_on(w.service.recorder_upload(&stranger, &room, &rec, false)).map(|_| ()),
        Err(E::NotIdentified)
    );
    let other = RecordingId::parse("rec-other").unwrap();
    assert_eq!(
        block_on(w.service.recorder_upload(&w.conn(1), &room, &other, false)).map(|_| ()),
        Err(E::NotRecorder),
        "another recording's id"
    );
    assert_eq!(ask(&w, 1, true), Err(E::StillRunning));
    w.step(&Op::StopRec(1)).unwrap();
    assert_eq!(ask(&w, 1, true), Ok(()));
    assert_eq!(ask(&w, 2, true), Err(E::NotRecorder));
    w.clock.advance(FINAL_CHUNK_GRACE);
    assert_eq!(ask(&w, 1, false), Err(E::Closed));
    assert_eq!(E::NotRecorder.code(), "NOT_ALLOWED");
}
