//! Voice resume as use cases, over the memory adapters with a controlled clock: a disconnect
//! makes the participant reconnecting, the same user joining from a new connection resumes it,
//! the sweep removes it once the reconnect grace has passed (with hand-over and auto-end), and
//! `restarted` keeps a previous process's rooms for their participants.

use std::time::Duration;

use futures::executor::block_on;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
    SequentialIds,
};
use voice_domain::errors::UseCaseError;
use voice_domain::ports::{Adapters, MemberState, Ports, VoiceRoomStore as _};
use voice_domain::room::{EndReason, LeaveReason, RoomStatus};
use voice_domain::{
    ChatRoomId, ConnectionId, ServiceConfig, Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId,
    VoiceService,
};

const GRACE: Duration = Duration::from_secs(30);

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
    directory: MemoryDirectory,
    channels: MemoryChannels<ManualClock>,
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

/// Ada (admin) and Bo, Cy (approved), on `c-ada`, `c-bo`, `c-cy`; the service has a 30 s grace.
fn world() -> World {
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let (store, directory, notifier) = (
        MemoryStore::new(),
        MemoryDirectory::new(),
        MemoryNotifier::new(),
    );
    let channels = MemoryChannels::new(clock.clone());
    let service = VoiceService::new(
        Adapters::<P> {
            store: store.clone(),
            directory: directory.clone(),
            channels: channels.clone(),
            credentials: MemoryCredentials::new(clock.clone()),
            notifier: notifier.clone(),
            clock: clock.clone(),
            ids: SequentialIds::default(),
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig {
            reconnect_grace: GRACE,
            ..ServiceConfig::default()
        },
    );
    directory.create_room(chat(), user("ada")).unwrap();
    for u in ["ada", "bo", "cy"] {
        if u != "ada" {
            directory
                .set_state(&chat(), user(u), MemberState::Approved)
                .unwrap();
        }
        directory.connect(conn(&format!("c-{u}")), user(u));
    }
    World {
        service,
        store,
        directory,
        channels,
        notifier,
        clock,
    }
}

impl World {
    /// Ada starts, Bo and Cy join, in that order; the inboxes are emptied.
    fn call(&self) -> VoiceRoomId {
        let room = block_on(self.service.start_voice(&conn("c-ada"), &chat())).unwrap();
        for u in ["bo", "cy"] {
            block_on(self.service.join_voice(&conn(&format!("c-{u}")), room.id())).unwrap();
        }
        self.drain();
        room.id().clone()
    }

    fn drain(&self) {
        for u in ["ada", "bo", "cy", "bo2"] {
            self.notifier.take(&conn(&format!("c-{u}")));
        }
    }

    fn room(&self, id: &VoiceRoomId) -> VoiceRoom {
        block_on(self.store.get(id)).unwrap().unwrap()
    }

    /// The socket closes: the chat app forgets it and `$disconnect` reaches voice.
    fn drop_conn(&self, c: &str) {
        self.directory.disconnect(&conn(c));
        self.notifier.mark_gone(conn(c));
        block_on(self.service.on_disconnect(&conn(c))).unwrap();
    }
}

#[test]
fn a_drop_then_a_resume_within_the_grace_keeps_place_role_mute_and_channel() {
    let w = world();
    let vr = w.call();
    block_on(w.service.set_mute(&conn("c-bo"), &vr, true)).unwrap();
    let before = w.room(&vr);
    w.drain();

    w.drop_conn("c-bo");
    let ev = VoiceEvent::ParticipantReconnecting {
        voice_room_id: vr.clone(),
        chat_room_id: chat(),
        user: user("bo"),
    };
    assert_eq!(w.notifier.take(&conn("c-ada")), vec![ev.clone()]);
    assert_eq!(w.notifier.take(&conn("c-cy")), vec![ev]);
    let room = w.room(&vr);
    assert!(room.participant(&user("bo")).unwrap().is_reconnecting());
    assert_eq!(w.channels.list_now().len(), 3, "bo keeps his channel");

    // 29 s later a sweep changes nothing; bo comes back on a new connection.
    w.clock.advance(GRACE - Duration::from_secs(1));
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.participants_removed, 0);
    w.directory.connect(conn("c-bo2"), user("bo"));
    let grant = block_on(w.service.join_voice(&conn("c-bo2"), &vr)).unwrap();
    assert!(!grant.newly_joined);
    assert_eq!(grant.room.id(), &vr);
    assert_eq!(
        grant.own.channel,
        before.participant(&user("bo")).unwrap().channel
    );
    assert_eq!(
        grant
            .peers
            .iter()
            .map(|p| p.user.clone())
            .collect::<Vec<_>>(),
        vec![user("ada")]
    );
    let resumed = VoiceEvent::ParticipantResumed {
        voice_room_id: vr.clone(),
        chat_room_id: chat(),
        user: user("bo"),
        client_id: Some(voice_domain::ClientId::from_connection(&conn("c-bo2")).unwrap()),
    };
    assert_eq!(w.notifier.take(&conn("c-ada")), vec![resumed.clone()]);
    assert_eq!(w.notifier.take(&conn("c-cy")), vec![resumed]);
    let room = w.room(&vr);
    let bo = room.participant(&user("bo")).unwrap();
    assert_eq!(bo.connection, conn("c-bo2"));
    assert!(!bo.is_reconnecting() && bo.muted);
    let order: Vec<_> = room.participants().iter().map(|p| p.user.clone()).collect();
    assert_eq!(order, vec![user("ada"), user("bo"), user("cy")]);

    // Long after, nothing expires: bo is connected.
    w.clock.advance(GRACE * 3);
    block_on(w.service.sweep()).unwrap();
    assert_eq!(w.room(&vr).participants().len(), 3);
}

#[test]
fn a_refresh_handled_after_a_leave_does_not_join_again() {
    let w = world();
    let vr = w.call();
    // Bo's page refreshes while it still is a participant: a refresh, nothing written.
    let before = w.room(&vr).version();
    let grant = block_on(w.service.refresh_voice(&conn("c-bo"), &vr)).unwrap();
    assert!(!grant.newly_joined);
    assert_eq!(w.room(&vr).version(), before);

    // Bo leaves; a refresh the page sent just before is handled after the leave.
    block_on(w.service.leave_voice(&conn("c-bo"), &vr)).unwrap();
    w.drain();
    let err = block_on(w.service.refresh_voice(&conn("c-bo"), &vr)).unwrap_err();
    assert_eq!(err.code(), "NOT_PARTICIPANT");
    let room = w.room(&vr);
    assert!(room.participant(&user("bo")).is_none(), "bo is not back");
    assert_eq!(room.participants().len(), 2);
    assert!(
        w.notifier.take(&conn("c-ada")).is_empty(),
        "no participantJoined"
    );
    assert_eq!(w.channels.list_now().len(), 2, "no channel made for bo");

    // A refresh may still resume: Cy dropped and her page comes back on a new connection.
    w.drop_conn("c-cy");
    w.directory.connect(conn("c-cy2"), user("cy"));
    let grant = block_on(w.service.refresh_voice(&conn("c-cy2"), &vr)).unwrap();
    assert!(!grant.newly_joined);
    assert_eq!(
        w.room(&vr).participant(&user("cy")).unwrap().connection,
        conn("c-cy2")
    );

    // Joining on purpose still works.
    let grant = block_on(w.service.join_voice(&conn("c-bo"), &vr)).unwrap();
    assert!(grant.newly_joined);
}

#[test]
fn a_replaced_connection_can_no_longer_act_for_the_participant() {
    let w = world();
    let vr = w.call();
    // Bo's page opens a new connection before the old one is noticed as gone.
    w.directory.connect(conn("c-bo2"), user("bo"));
    block_on(w.service.join_voice(&conn("c-bo2"), &vr)).unwrap();
    let code = |e: &dyn UseCaseError| e.code();
    let err = block_on(w.service.leave_voice(&conn("c-bo"), &vr)).unwrap_err();
    assert_eq!(code(&err), "NOT_PARTICIPANT");
    let err = block_on(w.service.set_mute(&conn("c-bo"), &vr, true)).unwrap_err();
    assert_eq!(code(&err), "NOT_PARTICIPANT");
    // The old connection closing later does not touch the resumed participant.
    w.drop_conn("c-bo");
    let bo = w.room(&vr).participant(&user("bo")).unwrap().clone();
    assert_eq!(bo.connection, conn("c-bo2"));
    assert!(!bo.is_reconnecting());
    block_on(w.service.set_mute(&conn("c-bo2"), &vr, true)).unwrap();
}

#[test]
fn after_the_grace_the_sweep_removes_them_with_hand_over_and_the_last_ends_the_room() {
    let w = world();
    let vr = w.call();
    w.drop_conn("c-ada");
    w.clock.advance(Duration::from_secs(10));
    w.drop_conn("c-bo");
    w.drain();
    w.clock.advance(GRACE - Duration::from_secs(10));
    // Ada's grace is over, Bo's is not.
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.participants_removed, 1);
    assert!(report.rooms_ended.is_empty());
    let room = w.room(&vr);
    assert_eq!(
        room.master(),
        &user("bo"),
        "the earliest remaining takes over"
    );
    assert_eq!(room.participants().len(), 2);
    assert_eq!(w.channels.list_now().len(), 2, "ada's channel deleted");
    let got = w.notifier.take(&conn("c-cy"));
    assert_eq!(
        got[0],
        VoiceEvent::ParticipantLeft {
            voice_room_id: vr.clone(),
            chat_room_id: chat(),
            user: user("ada"),
            reason: LeaveReason::Disconnected,
        }
    );
    assert!(matches!(got[1], VoiceEvent::MasterChanged { .. }));

    // Cy's socket dies without a $disconnect: the sweep marks him reconnecting first.
    w.directory.disconnect(&conn("c-cy"));
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.participants_reconnecting, 1);
    assert!(w
        .room(&vr)
        .participant(&user("cy"))
        .unwrap()
        .is_reconnecting());
    w.clock.advance(GRACE);
    let report = block_on(w.service.sweep()).unwrap();
    assert_eq!(report.participants_removed, 2);
    assert_eq!(report.rooms_ended, vec![vr.clone()]);
    assert!(matches!(
        w.room(&vr).status(),
        RoomStatus::Ended {
            reason: EndReason::LastParticipantLeft,
            ..
        }
    ));
    assert!(w.channels.list_now().is_empty(), "no orphan channel");
}

#[test]
fn a_restart_keeps_the_rooms_for_their_participants_to_resume() {
    let w = world();
    let vr = w.call();
    // The process dies: every connection is gone, nothing reached voice.
    for u in ["ada", "bo", "cy"] {
        w.directory.disconnect(&conn(&format!("c-{u}")));
    }
    w.clock.advance(Duration::from_secs(600));
    let kept = block_on(w.service.restarted()).unwrap();
    assert_eq!(kept, vec![vr.clone()]);
    assert!(w
        .room(&vr)
        .participants()
        .iter()
        .all(|p| p.is_reconnecting()));
    // Ada and Bo come back; Cy does not.
    for u in ["ada", "bo"] {
        let c = conn(&format!("c-{u}-new"));
        w.directory.connect(c.clone(), user(u));
        let g = block_on(w.service.join_voice(&c, &vr)).unwrap();
        assert_eq!(g.room.id(), &vr);
        assert!(!g.newly_joined);
    }
    w.clock.advance(GRACE);
    block_on(w.service.sweep()).unwrap();
    let room = w.room(&vr);
    assert!(room.is_active());
    let users: Vec<_> = room.participants().iter().map(|p| p.user.clone()).collect();
    assert_eq!(users, vec![user("ada"), user("bo")]);
    assert_eq!(room.master(), &user("ada"));
}
