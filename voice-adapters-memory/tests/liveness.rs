//! Liveness as use cases, over the memory adapters with a controlled clock: where the deployment
//! cannot see its connections (AWS: API Gateway does not ping clients), a participant's
//! keepalive (`getVoiceRoom` = `active_voice`) records it alive, and the sweep takes one not
//! heard from for the liveness timeout out of voice once the reconnect grace has passed since.
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

const TIMEOUT: Duration = Duration::from_secs(50);
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

    /// 20 s pass and each of `who` sends its keepalive (`getVoiceRoom`).
    fn keepalive(&self, who: &[&str]) {
        self.clock.advance(Duration::from_secs(20));
        for u in who {
            block_on(self.service.active_voice(&conn(&format!("c-{u}")), &chat())).unwrap();
        }
    }

    fn users(&self, id: &VoiceRoomId) -> Vec<String> {
        self.room(id)
            .participants()
            .iter()
            .map(|p| p.user.as_str().to_owned())
            .collect()
    }
}

#[test]
fn a_participant_whose_keepalives_stop_leaves_after_the_timeout_and_the_grace() {
    let w = world(Some(TIMEOUT));
    let vr = w.call();
    // Bo's network dies silently right after joining (his socket is still "open": the
    // directory knows his connection, no $disconnect comes). Ada and Cy keep sending.
    w.keepalive(&["ada", "cy"]); // t = 20 s
    w.keepalive(&["ada", "cy"]); // t = 40 s
    let r = block_on(w.service.sweep()).unwrap();
    assert_eq!(
        (r.participants_reconnecting, r.participants_removed),
        (0, 0)
    );
    w.keepalive(&["ada", "cy"]); // t = 60 s: Bo overdue since 50 s, within his grace
    let r = block_on(w.service.sweep()).unwrap();
    assert_eq!(
        (r.participants_reconnecting, r.participants_removed),
        (1, 0)
    );
    let bo = w.room(&vr).participant(&user("bo")).unwrap().clone();
    assert_eq!(
        bo.reconnecting_since,
        Some(bo.joined_at.plus(TIMEOUT)),
        "reconnecting from when he was overdue, not from the sweep"
    );
    assert_eq!(
        w.notifier.take(&conn("c-ada")),
        vec![VoiceEvent::ParticipantReconnecting {
            voice_room_id: vr.clone(),
            chat_room_id: chat(),
            user: user("bo"),
        }]
    );
    w.keepalive(&["ada", "cy"]); // t = 80 s: 30 s past his timeout, grace over
    let r = block_on(w.service.sweep()).unwrap();
    assert_eq!(r.participants_removed, 1);
    assert_eq!(w.users(&vr), vec!["ada", "cy"]);
    assert!(w
        .notifier
        .take(&conn("c-ada"))
        .contains(&VoiceEvent::ParticipantLeft {
            voice_room_id: vr.clone(),
            chat_room_id: chat(),
            user: user("bo"),
            reason: LeaveReason::Disconnected,
        }));
    // Those who kept sending stay, however many sweeps run.
    for _ in 0..10 {
        w.keepalive(&["ada", "cy"]);
        block_on(w.service.sweep()).unwrap();
    }
    assert_eq!(w.users(&vr), vec!["ada", "cy"]);
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
