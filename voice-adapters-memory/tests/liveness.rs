//! Liveness as use cases, over the memory adapters with a controlled clock: where the deployment
//! cannot see its connections (AWS: API Gateway does not ping clients), a participant's
//! keepalive (`getVoiceRoom` = `active_voice`) records it alive and applies the liveness rule to
//! its room: one not heard from for the liveness timeout becomes reconnecting, and leaves once
//! the reconnect grace has passed since, by the others' keepalives alone (no sweep); the sweep
//! is the backstop for a room where nobody sends any more.
//! Where the deployment sees its connections (self-hosted: `liveness_timeout` is `None`), silence
//! alone removes nobody: the server's socket pings and `on_disconnect` do that.

use std::time::Duration;

use futures::executor::block_on;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
    SequentialIds,
};
use voice_domain::ports::{Adapters, MemberState, Ports, VoiceRoomStore as _};
use voice_domain::room::LeaveReason;
use voice_domain::{
    ChatRoomId, ConnectionId, ServiceConfig, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId,
    VoiceService,
};

/// The Lambda's default liveness timeout, and the web client's in-voice keepalive period.
const TIMEOUT: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_secs(15);

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

struct World {
    service: VoiceService<P>,
    store: MemoryStore,
    notifier: MemoryNotifier,
    clock: ManualClock,
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}

fn chat() -> ChatRoomId {
    ChatRoomId::parse("chat").unwrap()
}

/// Ada (admin), Bo and Cy (approved), connected; the service with `liveness` and a 15 s grace.
fn world(liveness: Option<Duration>) -> World {
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let (store, directory, notifier) = (
        MemoryStore::new(),
        MemoryDirectory::new(),
        MemoryNotifier::new(),
    );
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
        ServiceConfig {
            reconnect_grace: GRACE,
            liveness_timeout: liveness,
            ..ServiceConfig::default()
        },
    );
    directory.create_room(chat(), user("ada")).unwrap();
    for u in ["bo", "cy"] {
        directory
            .set_state(&chat(), user(u), MemberState::Approved)
            .unwrap();
    }
    for u in ["ada", "bo", "cy"] {
        directory.connect(conn(&format!("c-{u}")), user(u));
    }
    World {
        service,
        store,
        notifier,
        clock,
    }
}

impl World {
    /// Ada starts, Bo and Cy join; the inboxes are emptied.
    fn call(&self) -> VoiceRoomId {
        let room = block_on(self.service.start_voice(&conn("c-ada"), &chat())).unwrap();
        for u in ["bo", "cy"] {
            block_on(self.service.join_voice(&conn(&format!("c-{u}")), room.id())).unwrap();
        }
        for u in ["ada", "bo", "cy"] {
            self.notifier.take(&conn(&format!("c-{u}")));
        }
        room.id().clone()
    }

    fn room(&self, id: &VoiceRoomId) -> VoiceRoom {
        block_on(self.store.get(id)).unwrap().unwrap()
    }

    /// 5 s pass and each of `who` sends its keepalive (`getVoiceRoom`).
    fn keepalive(&self, who: &[&str]) {
        self.clock.advance(EVERY);
        for u in who {
            self.keepalive_now(u);
        }
    }

    /// `who` sends a keepalive now; the participants its reply lists.
    fn keepalive_now(&self, who: &str) -> Vec<String> {
        block_on(
            self.service
                .active_voice(&conn(&format!("c-{who}")), &chat()),
        )
        .unwrap()
        .map(|r| {
            r.participants()
                .iter()
                .map(|p| p.user.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default()
    }

    fn users(&self, id: &VoiceRoomId) -> Vec<String> {
        self.room(id)
            .participants()
            .iter()
            .map(|p| p.user.as_str().to_owned())
            .collect()
    }
}

fn reconnecting(vr: &VoiceRoomId, who: &str) -> VoiceEvent {
    VoiceEvent::ParticipantReconnecting {
        voice_room_id: vr.clone(),
        chat_room_id: chat(),
        user: user(who),
    }
}

fn left(vr: &VoiceRoomId, who: &str) -> VoiceEvent {
    VoiceEvent::ParticipantLeft {
        voice_room_id: vr.clone(),
        chat_room_id: chat(),
        user: user(who),
        reason: LeaveReason::Disconnected,
    }
}

#[test]
fn a_silent_participant_is_removed_by_the_others_keepalives_without_a_sweep() {
    let w = world(Some(TIMEOUT));
    let vr = w.call();
    // Bo's network dies silently right after joining (his socket is still "open": the
    // directory knows his connection, no $disconnect comes). Ada and Cy keep sending every 5 s;
    // the sweep never runs.
    w.keepalive(&["ada", "cy"]); // t = 5 s
    assert!(w.notifier.take(&conn("c-ada")).is_empty());
    w.keepalive(&["ada", "cy"]); // t = 10 s: Bo silent for the timeout; Ada's keepalive sees it
    let bo = w.room(&vr).participant(&user("bo")).unwrap().clone();
    assert_eq!(
        bo.reconnecting_since,
        Some(bo.joined_at.plus(TIMEOUT)),
        "reconnecting from when he was overdue"
    );
    assert_eq!(
        w.notifier.take(&conn("c-ada")),
        vec![reconnecting(&vr, "bo")]
    );
    for _ in 0..2 {
        w.keepalive(&["ada", "cy"]); // t = 15 s, 20 s: within his grace, still listed
        assert_eq!(w.users(&vr), vec!["ada", "bo", "cy"]);
    }
    assert!(w.notifier.take(&conn("c-ada")).is_empty());
    // t = 25 s: the grace has passed since 10 s; Ada's keepalive removes him, and her reply
    // already lists only Ada and Cy.
    w.clock.advance(EVERY);
    assert_eq!(w.keepalive_now("ada"), vec!["ada", "cy"]);
    assert_eq!(w.users(&vr), vec!["ada", "cy"]);
    assert_eq!(w.notifier.take(&conn("c-ada")), vec![left(&vr, "bo")]);
    assert_eq!(
        w.notifier.take(&conn("c-cy")),
        vec![reconnecting(&vr, "bo"), left(&vr, "bo")]
    );
    assert_eq!(w.keepalive_now("cy"), vec!["ada", "cy"]);
    // Those who keep sending stay, however long.
    for _ in 0..100 {
        w.keepalive(&["ada", "cy"]);
    }
    assert_eq!(w.users(&vr), vec!["ada", "cy"]);
    assert!(w.notifier.take(&conn("c-ada")).is_empty());
}

#[test]
fn a_keepalive_that_finds_nothing_to_change_writes_nothing() {
    let w = world(Some(TIMEOUT));
    let vr = w.call();
    w.keepalive(&["ada", "bo", "cy"]);
    let v = w.room(&vr).version();
    // Again within the touch interval: nothing overdue, nothing to record, no write.
    w.clock.advance(Duration::from_secs(1));
    for u in ["ada", "bo", "cy"] {
        assert_eq!(w.keepalive_now(u), vec!["ada", "bo", "cy"]);
    }
    assert_eq!(w.room(&vr).version(), v);
    // The next round: one write each, the touch, as before the rule moved into the keepalive.
    w.keepalive(&["ada", "bo", "cy"]);
    assert_eq!(w.room(&vr).version(), v + 3);
}

#[test]
fn a_participant_taken_for_dead_by_a_late_keepalive_comes_back_with_its_next_one() {
    let w = world(Some(TIMEOUT));
    let vr = w.call();
    w.keepalive(&["ada", "bo", "cy"]); // t = 5 s
                                       // Bo's next keepalive is late (a cold start): at 15 s he has been silent for 10 s.
    w.keepalive(&["ada", "cy"]); // t = 10 s
    w.keepalive(&["ada", "cy"]); // t = 15 s
    assert!(w
        .room(&vr)
        .participant(&user("bo"))
        .unwrap()
        .is_reconnecting());
    assert_eq!(
        w.notifier.take(&conn("c-ada")),
        vec![reconnecting(&vr, "bo")]
    );
    // It arrives: Bo is connected again, in his place, and the others are told.
    w.clock.advance(Duration::from_secs(2));
    assert_eq!(w.keepalive_now("bo"), vec!["ada", "bo", "cy"]);
    let bo = w.room(&vr).participant(&user("bo")).unwrap().clone();
    assert!(!bo.is_reconnecting());
    assert_eq!(
        w.notifier.take(&conn("c-ada")),
        vec![VoiceEvent::ParticipantResumed {
            voice_room_id: vr.clone(),
            chat_room_id: chat(),
            user: user("bo"),
            client_id: Some(voice_domain::ClientId::from_connection(&conn("c-bo")).unwrap()),
        }]
    );
    // His grace no longer runs: everyone keeping on sending stays.
    for _ in 0..20 {
        w.keepalive(&["ada", "bo", "cy"]);
    }
    assert_eq!(w.users(&vr), vec!["ada", "bo", "cy"]);
    assert!(w.notifier.take(&conn("c-ada")).is_empty());
}

#[test]
fn the_sweep_is_the_backstop_for_a_room_where_nobody_sends() {
    let w = world(Some(TIMEOUT));
    let vr = w.call();
    w.keepalive(&["ada", "bo", "cy"]);
    let r = block_on(w.service.sweep()).unwrap();
    assert_eq!(
        (r.participants_reconnecting, r.participants_removed),
        (0, 0)
    );
    // Everyone's network dies; 30 s later the minute sweep ends the room.
    w.clock.advance(Duration::from_secs(30));
    let r = block_on(w.service.sweep()).unwrap();
    assert_eq!(
        (r.participants_reconnecting, r.participants_removed),
        (3, 3)
    );
    assert_eq!(r.rooms_ended, vec![vr.clone()]);
    assert!(!w.room(&vr).is_active());
}

#[test]
fn without_a_liveness_timeout_silence_alone_removes_nobody() {
    // Self-hosted: the server pings its sockets and reports a dead one through on_disconnect;
    // the keepalive rule is not applied, whatever the clock says.
    let w = world(None);
    let vr = w.call();
    w.clock.advance(Duration::from_secs(3600));
    let r = block_on(w.service.sweep()).unwrap();
    assert_eq!(
        (r.participants_reconnecting, r.participants_removed),
        (0, 0)
    );
    block_on(w.service.active_voice(&conn("c-ada"), &chat())).unwrap();
    assert!(w
        .room(&vr)
        .participants()
        .iter()
        .all(|p| p.last_seen.is_none()));
    assert_eq!(w.users(&vr), vec!["ada", "bo", "cy"]);
}
