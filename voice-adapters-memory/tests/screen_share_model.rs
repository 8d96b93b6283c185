//! Property test of the screen-share rules: random sequences of voice commands (start, join,
//! leave, disconnect and resume from a new tab, sweep with the clock moving, end) mixed with
//! `startScreenShare` / `stopScreenShare` / `setScreenSharePolicy` from every user, on the real
//! `VoiceService` over the in-memory adapters. After every step:
//! - each screen-share command's outcome (success or wire code) is the one the rules predict
//!   from the room as it was: a connected participant on its current connection may share if
//!   the policy lets it (`anyone`, or `hosts`: the master and the chat admin) and nobody else
//!   shares; the sharer, the master and the admin may stop it; the master and the admin set the
//!   policy;
//! - at most one sharer, and it is a connected participant on its current connection: leaving,
//!   dropping, resuming elsewhere and the room ending all stop the share
//!   (`VoiceRoom::from_parts` checks this too);
//! - the policy is respected: under `hosts` the sharer is the master or the chat admin
//!   (tightening the policy stops anyone else's share);
//! - every member is told: what a watching member believes (who shares, which policy) is the
//!   stored truth, so receivers that show only the announced sharer show the right one.

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
use voice_domain::screen::{ScreenSharePolicy, ScreenShareStopReason};
use voice_domain::{
    ChatRoomId, ConnectionId, ServiceConfig, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId,
    VoiceService,
};

/// Over a whole run: shares started, stopped on request, stopped by themselves (sharer left or
/// dropped, room ended) and stopped by a tightened policy, refused as busy and as not allowed,
/// so the run is known to reach every rule.
static STARTED: AtomicUsize = AtomicUsize::new(0);
static STOPPED: AtomicUsize = AtomicUsize::new(0);
static AUTO_STOPPED: AtomicUsize = AtomicUsize::new(0);
static POLICY_STOPPED: AtomicUsize = AtomicUsize::new(0);
static BUSY: AtomicUsize = AtomicUsize::new(0);
static FORBIDDEN: AtomicUsize = AtomicUsize::new(0);

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
    Share(usize),
    Unshare(usize),
    Policy(usize, bool),
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
        4 => u.clone().prop_map(Op::Share),
        2 => u.clone().prop_map(Op::Unshare),
        2 => (u, any::<bool>()).prop_map(|(u, h)| Op::Policy(u, h)),
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
    /// What the watching member was told: who shares, if anyone.
    told_sharer: Option<UserId>,
    /// What the watching member was told: the latest room's policy.
    told_policy: ScreenSharePolicy,
}

fn user(u: usize) -> UserId {
    UserId::parse(format!("u{u}")).unwrap()
}

fn policy(hosts: bool) -> ScreenSharePolicy {
    if hosts {
        ScreenSharePolicy::Hosts
    } else {
        ScreenSharePolicy::Anyone
    }
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
            told_sharer: None,
            told_policy: ScreenSharePolicy::Anyone,
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

    /// Whether `u`'s current connection may act for it in `room` (it is not a participant on
    /// another, replaced connection).
    fn acts_here(&self, room: &VoiceRoom, u: usize) -> bool {
        !room.is_active()
            || room
                .participant(&user(u))
                .is_none_or(|p| p.connection == self.conn(u))
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
            Op::Share(u) => {
                let Some(id) = self.room.clone() else {
                    return Ok(());
                };
                let room = before.expect("a started room is stored");
                let me = user(u);
                let host = room.master() == &me || u == 0;
                let expected = if u == 3 {
                    Err("NOT_APPROVED")
                } else if !self.acts_here(&room, u) {
                    Err("NOT_IN_VOICE")
                } else if !room.is_active() {
                    Err("VOICE_ROOM_ENDED")
                } else if room.participant(&me).is_none_or(|p| p.is_reconnecting()) {
                    Err("NOT_IN_VOICE")
                } else if room.screen_share_policy() == ScreenSharePolicy::Hosts && !host {
                    Err("NOT_ALLOWED")
                } else if room.screen_share().is_some_and(|s| s.by != me) {
                    Err("SCREEN_SHARE_BUSY")
                } else {
                    Ok(())
                };
                let got = block_on(self.service.start_screen_share(&self.conn(u), &id));
                prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| e.code()), expected);
                match got {
                    Ok(r) => {
                        STARTED.fetch_add(1, Ordering::Relaxed);
                        prop_assert_eq!(r.screen_share().map(|s| &s.by), Some(&me));
                    }
                    Err(e) if e.code() == "SCREEN_SHARE_BUSY" => {
                        BUSY.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == "NOT_ALLOWED" => {
                        FORBIDDEN.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
            Op::Unshare(u) => {
                let Some(id) = self.room.clone() else {
                    return Ok(());
                };
                let room = before.expect("a started room is stored");
                let me = user(u);
                let expected = if u != 0 && !self.acts_here(&room, u) {
                    Err("NOT_ALLOWED")
                } else if !room.is_active() {
                    Err("VOICE_ROOM_ENDED")
                } else if let Some(share) = room.screen_share() {
                    if share.by == me || room.master() == &me || u == 0 {
                        Ok(())
                    } else {
                        Err("NOT_ALLOWED")
                    }
                } else {
                    Err("NOT_SHARING")
                };
                let got = block_on(self.service.stop_screen_share(&self.conn(u), &id));
                prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| e.code()), expected);
                if let Ok(r) = got {
                    STOPPED.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(r.screen_share().is_none());
                }
            }
            Op::Policy(u, hosts) => {
                let Some(id) = self.room.clone() else {
                    return Ok(());
                };
                let room = before.expect("a started room is stored");
                let me = user(u);
                let expected = if u != 0 && !self.acts_here(&room, u) {
                    Err("NOT_ALLOWED")
                } else if !room.is_active() {
                    Err("VOICE_ROOM_ENDED")
                } else if room.master() != &me && u != 0 {
                    Err("NOT_ALLOWED")
                } else {
                    Ok(())
                };
                let got = block_on(self.service.set_screen_share_policy(
                    &self.conn(u),
                    &id,
                    policy(hosts),
                ));
                prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| e.code()), expected);
                if let Ok(r) = got {
                    prop_assert_eq!(r.screen_share_policy(), policy(hosts));
                }
            }
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for ev in self.notifier.take(&ConnectionId::parse("watch").unwrap()) {
            match ev {
                VoiceEvent::VoiceStarted { .. } => {
                    prop_assert!(self.told_sharer.is_none(), "a share outlived its room");
                    self.told_policy = ScreenSharePolicy::Anyone;
                }
                VoiceEvent::ScreenShareStarted { user, .. } => {
                    prop_assert!(self.told_sharer.is_none(), "two sharers at once");
                    self.told_sharer = Some(user);
                }
                VoiceEvent::ScreenShareStopped { user, reason, .. } => {
                    match reason {
                        ScreenShareStopReason::Stopped { .. } => {}
                        ScreenShareStopReason::PolicyChanged => {
                            POLICY_STOPPED.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            AUTO_STOPPED.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    prop_assert_eq!(self.told_sharer.take(), Some(user));
                }
                VoiceEvent::ScreenSharePolicyChanged { policy, .. } => {
                    prop_assert_ne!(policy, self.told_policy, "a policy change changed nothing");
                    self.told_policy = policy;
                }
                _ => {}
            }
        }
        let Some(room) = self.stored() else {
            return Ok(());
        };
        prop_assert!(VoiceRoom::from_parts(room.parts().clone()).is_ok());
        let share = room.screen_share();
        prop_assert_eq!(share.map(|s| &s.by), self.told_sharer.as_ref());
        if room.is_active() {
            prop_assert_eq!(room.screen_share_policy(), self.told_policy);
        }
        if let Some(share) = share {
            prop_assert!(room.is_active());
            let idx: usize = share.by.as_str()[1..].parse().unwrap();
            let p = room
                .participant(&share.by)
                .expect("the sharer is in the room");
            prop_assert!(!p.is_reconnecting());
            prop_assert_eq!(&p.connection, &self.conn(idx));
            if room.screen_share_policy() == ScreenSharePolicy::Hosts {
                prop_assert!(
                    room.master() == &share.by || idx == 0,
                    "a guest shares under the hosts policy"
                );
            }
        }
        Ok(())
    }
}

#[test]
fn screen_share_rules_hold_over_random_histories() {
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
    let counts = [
        ("started", STARTED.load(Ordering::Relaxed)),
        ("stopped on request", STOPPED.load(Ordering::Relaxed)),
        (
            "stopped by themselves",
            AUTO_STOPPED.load(Ordering::Relaxed),
        ),
        (
            "stopped by the policy",
            POLICY_STOPPED.load(Ordering::Relaxed),
        ),
        ("refused busy", BUSY.load(Ordering::Relaxed)),
        ("refused by the policy", FORBIDDEN.load(Ordering::Relaxed)),
    ];
    eprintln!("screen shares: {counts:?}");
    if cases >= 100 {
        for (what, n) in counts {
            assert!(n > 0, "the run no longer reaches every rule: none {what}");
        }
    }
}

#[test]
fn with_the_hosts_policy_a_guest_is_refused_and_the_master_shares_to_everyone() {
    let mut w = World::new();
    for op in [
        Op::Start(1),
        Op::Join(0),
        Op::Join(2),
        Op::Share(2),
        Op::Policy(1, true),
    ] {
        w.step(&op).unwrap();
    }
    // The guest's share stopped when the policy tightened; asking again is refused.
    assert!(w.stored().unwrap().screen_share().is_none());
    let id = w.room.clone().unwrap();
    let refused = block_on(w.service.start_screen_share(&w.conn(2), &id)).unwrap_err();
    assert_eq!(refused.code(), "NOT_ALLOWED");
    assert!(refused.to_string().contains("only the voice room's master"));
    w.step(&Op::Share(1)).unwrap();
    assert_eq!(w.told_sharer, Some(user(1)));
    // The master drops: the share ends and everyone is told.
    w.step(&Op::Drop(1)).unwrap();
    assert!(w.told_sharer.is_none());
    assert!(w.stored().unwrap().screen_share().is_none());
}
