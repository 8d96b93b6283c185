//! The authorization matrix of `tests/authz/matrix.rs` against the Lambda handler, over the
//! in-memory adapters: every caller kind × every voice action, each cell on a fresh world, as
//! API Gateway WebSocket events. An allowed call must do what it says (room, channels,
//! credentials scoped to the mesh plan, events); a refused one must carry the table's code with
//! its HTTP status, and change nothing: same rooms, same channels, no credentials issued, no
//! event sent to anyone.
//!
//! The token rows of the matrix (expired, forged, another room's or role's token) do not
//! apply here: on AWS the caller is identified by its API Gateway connection, and its KVS
//! credentials are STS session credentials scoped by policy (`voice-adapters-aws` tests the
//! policy). They are covered on the self-hosted relay (`voice-server/tests/authz.rs`).

mod common;

#[path = "../../tests/authz/matrix.rs"]
mod matrix;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use voice_adapters_memory::{memory_service, MemoryHandles, MemoryPorts};
use voice_domain::room::ChannelGrant;
use voice_domain::{
    ChannelArn, ChannelRole, ChatRoomId, ConnectionId, ServiceConfig, UserId, VoiceEvent, VoiceRoom,
};
use voice_lambda::VoiceLambda;

use matrix::{cells, Action, Caller, Expect};

const CHAT_A: &str = "chat-a";
const CHAT_B: &str = "chat-b";
/// API Gateway connection ids end in `=`.
const CONNS: [(&str, &str); 7] = [
    ("ada", "QWRhQ29ubjE="),
    ("mo", "TW9Db25uMQ="),
    ("pia", "UGlhQ29ubjE="),
    ("bo", "Qm9Db25uMQ="),
    ("pat", "UGF0Q29ubjE="),
    ("out", "T3V0Q29ubjE="),
    ("oz", "T3pDb25uMQ="),
];
/// A connection the chat app does not know.
const UNKNOWN: &str = "Tm9ib2R5MQ=";

fn conn_of(user: &str) -> &'static str {
    CONNS.iter().find(|(u, _)| *u == user).unwrap().1
}
fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}
fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn chat(s: &str) -> ChatRoomId {
    ChatRoomId::parse(s).unwrap()
}

fn caller_conn(c: Caller) -> &'static str {
    match c {
        Caller::NoIdentity => UNKNOWN,
        Caller::NotMember => conn_of("out"),
        Caller::Pending => conn_of("pat"),
        Caller::ApprovedMember => conn_of("bo"),
        Caller::ChatAdmin => conn_of("ada"),
        Caller::VoiceMaster => conn_of("mo"),
        Caller::Participant => conn_of("pia"),
        Caller::OtherChatMember => conn_of("oz"),
    }
}

fn caller_user(c: Caller) -> Option<&'static str> {
    Some(match c {
        Caller::NoIdentity => return None,
        Caller::NotMember => "out",
        Caller::Pending => "pat",
        Caller::ApprovedMember => "bo",
        Caller::ChatAdmin => "ada",
        Caller::VoiceMaster => "mo",
        Caller::Participant => "pia",
        Caller::OtherChatMember => "oz",
    })
}

/// The HTTP status the handler answers a refusal code with.
fn status_of(code: &str) -> i64 {
    match code {
        "NOT_IDENTIFIED" => 401,
        "NOT_MEMBER" | "NOT_APPROVED" | "NOT_ALLOWED" => 403,
        "ALREADY_ACTIVE" | "NOT_PARTICIPANT" | "NOT_IN_VOICE" => 409,
        other => panic!("no status known for {other}"),
    }
}

struct World {
    lambda: VoiceLambda<MemoryPorts>,
    h: MemoryHandles,
    vr: String,
}

async fn ok(lambda: &VoiceLambda<MemoryPorts>, route: &str, who: &str, body: Value) -> Value {
    let r = call(lambda, ws_event(route, conn_of(who), Some(body))).await;
    assert_ok(&r, route);
    r.data().clone()
}

async fn world() -> World {
    let (service, h) = memory_service(ServiceConfig::default());
    for (u, c) in CONNS {
        h.directory.connect(conn(c), user(u));
    }
    h.directory.create_room(chat(CHAT_A), user("ada")).unwrap();
    for m in ["mo", "pia", "bo"] {
        h.directory.request_join(&chat(CHAT_A), user(m)).unwrap();
        h.directory.approve(&chat(CHAT_A), &user(m)).unwrap();
    }
    h.directory
        .request_join(&chat(CHAT_A), user("pat"))
        .unwrap();
    h.directory.create_room(chat(CHAT_B), user("oz")).unwrap();
    let lambda = VoiceLambda::new(voice_executor::Executor::new(Arc::new(service)));

    let vb = ok(&lambda, "createVoiceRoom", "oz", json!({"roomId": CHAT_B})).await;
    ok(
        &lambda,
        "getVoiceCredentials",
        "oz",
        json!({"voiceRoomId": vb["voiceRoomId"]}),
    )
    .await;
    let v = ok(&lambda, "createVoiceRoom", "mo", json!({"roomId": CHAT_A})).await;
    let vr = v["voiceRoomId"].as_str().unwrap().to_owned();
    ok(
        &lambda,
        "getVoiceCredentials",
        "mo",
        json!({"voiceRoomId": vr}),
    )
    .await;
    let g = ok(
        &lambda,
        "getVoiceCredentials",
        "pia",
        json!({"voiceRoomId": vr}),
    )
    .await;
    assert_eq!(g["newlyJoined"], true);
    let w = World { lambda, h, vr };
    w.drain_events();
    w
}

/// What a refusal must leave alone.
#[derive(Debug, PartialEq)]
struct Snapshot {
    rooms: Vec<VoiceRoom>,
    channels: BTreeSet<ChannelArn>,
    credentials_issued: usize,
}

impl World {
    fn drain_events(&self) -> Vec<(String, Vec<VoiceEvent>)> {
        CONNS
            .iter()
            .map(|(u, c)| ((*u).to_owned(), self.h.notifier.take(&conn(c))))
            .chain(std::iter::once((
                "unknown".to_owned(),
                self.h.notifier.take(&conn(UNKNOWN)),
            )))
            .filter(|(_, evs)| !evs.is_empty())
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        let mut rooms = self.h.store.all();
        rooms.sort_by(|a, b| a.id().cmp(b.id()));
        Snapshot {
            rooms,
            channels: self.channels(),
            credentials_issued: self.h.credentials.issued().len(),
        }
    }

    fn channels(&self) -> BTreeSet<ChannelArn> {
        self.h
            .channels
            .list_now()
            .into_iter()
            .map(|l| l.channel.arn)
            .collect()
    }

    fn room(&self, id: &str) -> VoiceRoom {
        self.h
            .store
            .all()
            .into_iter()
            .find(|r| r.id().as_str() == id)
            .expect("room stored")
    }

    fn active_in_a(&self) -> Option<VoiceRoom> {
        self.h
            .store
            .all()
            .into_iter()
            .find(|r| r.is_active() && r.chat_room() == &chat(CHAT_A))
    }

    fn body(&self, action: Action) -> Value {
        match action {
            Action::CreateWhileActive | Action::CreateWhenIdle | Action::GetVoiceRoom => {
                json!({"roomId": CHAT_A})
            }
            Action::GetCredentials | Action::End | Action::Leave => json!({"voiceRoomId": self.vr}),
            Action::SetMute => json!({"voiceRoomId": self.vr, "muted": true}),
            Action::ServerMute => json!({"voiceRoomId": self.vr, "userId": "pia", "muted": true}),
            Action::StartShare | Action::StartShareHosts | Action::StopShare => {
                json!({"voiceRoomId": self.vr})
            }
            Action::SetSharePolicy => json!({"voiceRoomId": self.vr, "policy": "hosts"}),
        }
    }

    /// Channels held by active participants: the only channels that may exist.
    fn held(&self) -> BTreeSet<ChannelArn> {
        self.h
            .store
            .all()
            .iter()
            .filter(|r| r.is_active())
            .flat_map(|r| r.participants().iter().map(|p| p.channel.arn.clone()))
            .collect()
    }
}

fn told(
    events: &[(String, Vec<VoiceEvent>)],
    who: &str,
    pred: impl Fn(&VoiceEvent) -> bool,
) -> bool {
    events
        .iter()
        .any(|(u, evs)| u == who && evs.iter().any(&pred))
}

/// The members of A who hear A's voice events, and those who must not.
const HEAR: [&str; 4] = ["ada", "mo", "pia", "bo"];
const DEAF: [&str; 3] = ["pat", "out", "oz"];

fn check_effect(w: &World, caller: Caller, action: Action, before: &Snapshot, data: &Value) {
    let case = format!("{caller:?} × {action:?}");
    let me = caller_user(caller).unwrap();
    let events = w.drain_events();
    let room_before = before
        .rooms
        .iter()
        .find(|r| r.id().as_str() == w.vr)
        .unwrap();
    for deaf in DEAF {
        assert!(
            !events.iter().any(|(u, _)| u == deaf),
            "{case}: {deaf} heard A's voice events: {events:?}"
        );
    }
    match action {
        Action::CreateWhileActive => unreachable!(),
        Action::CreateWhenIdle => {
            let id = data["voiceRoomId"].as_str().unwrap();
            assert_ne!(id, w.vr, "{case}");
            let room = w.active_in_a().expect("a new active room");
            assert_eq!(room.id().as_str(), id, "{case}");
            assert_eq!(room.master(), &user(me), "{case}");
            assert_eq!(room.participants().len(), 1, "{case}");
            for u in HEAR {
                assert!(
                    told(&events, u, |e| matches!(e, VoiceEvent::VoiceStarted { .. })),
                    "{case}: {u} not told"
                );
            }
        }
        Action::GetCredentials => {
            let was_in = room_before.participant(&user(me)).is_some();
            assert_eq!(data["newlyJoined"], !was_in, "{case}");
            assert_eq!(data["userId"], me, "{case}");
            let room = w.room(&w.vr);
            let order: Vec<&UserId> = room.participants().iter().map(|p| &p.user).collect();
            let pos = order.iter().position(|u| **u == user(me)).unwrap();
            // Credentials for exactly the caller's mesh plan: master of its own channel, viewer
            // on each earlier participant's.
            let (req, _) = w.h.credentials.issued().pop().expect("credentials issued");
            let mut want = vec![ChannelGrant {
                channel: room.participants()[pos].channel.arn.clone(),
                role: ChannelRole::Master,
            }];
            want.extend(room.participants()[..pos].iter().map(|p| ChannelGrant {
                channel: p.channel.arn.clone(),
                role: ChannelRole::Viewer,
            }));
            assert_eq!(req.grants, want, "{case}");
            assert_eq!(req.user, user(me), "{case}");
            let peers: Vec<&str> = data["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["userId"].as_str().unwrap())
                .collect();
            let want_peers: Vec<&str> = order[..pos].iter().map(|u| u.as_str()).collect();
            assert_eq!(peers, want_peers, "{case}");
            assert_eq!(
                w.channels().len(),
                before.channels.len() + usize::from(!was_in),
                "{case}: one new channel per new participant"
            );
            if !was_in {
                for u in HEAR {
                    assert!(told(&events, u, |e| matches!(
                        e,
                        VoiceEvent::ParticipantJoined { .. }
                    )));
                }
            }
        }
        Action::End => {
            let room = w.room(&w.vr);
            assert!(!room.is_active(), "{case}");
            assert!(room.participants().is_empty(), "{case}");
            let kind = if caller == Caller::ChatAdmin {
                "endedByAdmin"
            } else {
                "endedByMaster"
            };
            assert_eq!(
                data["endedReason"],
                json!({"kind": kind, "by": me}),
                "{case}"
            );
            for u in HEAR {
                assert!(told(&events, u, |e| matches!(
                    e,
                    VoiceEvent::VoiceEnded { .. }
                )));
            }
        }
        Action::Leave => {
            let room = w.room(&w.vr);
            assert!(room.participant(&user(me)).is_none(), "{case}");
            let want_master = if caller == Caller::VoiceMaster {
                "pia"
            } else {
                "mo"
            };
            assert_eq!(room.master(), &user(want_master), "{case}");
            let mine = &room_before.participant(&user(me)).unwrap().channel.arn;
            assert!(
                !w.channels().contains(mine),
                "{case}: the leaver's channel is deleted"
            );
            for u in HEAR {
                assert!(told(&events, u, |e| matches!(
                    e,
                    VoiceEvent::ParticipantLeft { .. }
                )));
            }
        }
        Action::SetMute => {
            let room = w.room(&w.vr);
            assert!(room.participant(&user(me)).unwrap().muted, "{case}");
            for u in HEAR {
                assert!(told(&events, u, |e| matches!(
                    e,
                    VoiceEvent::MuteChanged { muted: true, .. }
                )));
            }
        }
        Action::ServerMute => {
            let room = w.room(&w.vr);
            assert!(room.participant(&user("pia")).unwrap().muted, "{case}");
            assert!(room.is_server_muted(&user("pia")), "{case}");
            for u in HEAR {
                assert!(told(&events, u, |e| matches!(
                    e,
                    VoiceEvent::MuteChanged {
                        muted: true,
                        server_muted: true,
                        ..
                    }
                )));
            }
        }
        Action::StartShare | Action::StartShareHosts => {
            let room = w.room(&w.vr);
            assert_eq!(
                room.screen_share().map(|s| &s.by),
                Some(&user(me)),
                "{case}"
            );
            assert_eq!(data["screenShare"]["userId"], me, "{case}");
            for u in HEAR {
                assert!(
                    told(&events, u, |e| matches!(
                        e,
                        VoiceEvent::ScreenShareStarted { user: who, .. } if who.as_str() == me
                    )),
                    "{case}: {u} not told"
                );
            }
        }
        Action::StopShare => {
            assert!(w.room(&w.vr).screen_share().is_none(), "{case}");
            assert!(data.get("screenShare").is_none(), "{case}: {data}");
            for u in HEAR {
                assert!(
                    told(&events, u, |e| matches!(
                        e,
                        VoiceEvent::ScreenShareStopped { user: who, .. } if who.as_str() == "pia"
                    )),
                    "{case}: {u} not told"
                );
            }
        }
        Action::SetSharePolicy => {
            let room = w.room(&w.vr);
            assert_eq!(
                room.screen_share_policy(),
                voice_domain::screen::ScreenSharePolicy::Hosts,
                "{case}"
            );
            assert_eq!(data["screenSharePolicy"], "hosts", "{case}");
            for u in HEAR {
                assert!(
                    told(&events, u, |e| matches!(
                        e,
                        VoiceEvent::ScreenSharePolicyChanged { .. }
                    )),
                    "{case}: {u} not told"
                );
            }
        }
        Action::GetVoiceRoom => {
            assert_eq!(data["voiceRoom"]["voiceRoomId"], w.vr.as_str(), "{case}");
            assert_eq!(&w.snapshot(), before, "{case}: reading changes nothing");
            assert!(events.is_empty(), "{case}");
        }
    }
    // Whatever happened, no channel is left without a participant.
    assert_eq!(w.channels(), w.held(), "{case}: orphan or missing channel");
}

#[tokio::test]
async fn every_caller_kind_gets_the_tables_answer_for_every_voice_action() {
    init_logs();
    let (mut allowed, mut refused) = (0, 0);
    for (caller, action, expect) in cells() {
        let case = format!("{caller:?} × {action:?}");
        let w = world().await;
        if action == Action::CreateWhenIdle {
            ok(
                &w.lambda,
                "endVoiceRoom",
                "mo",
                json!({"voiceRoomId": w.vr}),
            )
            .await;
            w.drain_events();
        }
        match action {
            Action::StartShareHosts => {
                let body = json!({"voiceRoomId": w.vr, "policy": "hosts"});
                ok(&w.lambda, "setScreenSharePolicy", "mo", body).await;
            }
            Action::StopShare => {
                let body = json!({"voiceRoomId": w.vr});
                ok(&w.lambda, "startScreenShare", "pia", body).await;
            }
            _ => {}
        }
        w.drain_events();
        let before = w.snapshot();
        let r = call(
            &w.lambda,
            ws_event(action.wire(), caller_conn(caller), Some(w.body(action))),
        )
        .await;
        match expect {
            Expect::Allow => {
                allowed += 1;
                assert_ok(&r, action.wire());
                check_effect(&w, caller, action, &before, r.data());
            }
            Expect::Refuse(code) => {
                refused += 1;
                assert_eq!(
                    (r.code(), r.status),
                    (code, status_of(code)),
                    "{case}: {r:?}"
                );
                assert_refused(&r, status_of(code), code);
                assert_eq!(r.body["action"], action.wire(), "{case}");
                assert_eq!(r.body["error"]["retryable"], false, "{case}");
                assert_eq!(w.snapshot(), before, "{case}: a refusal changed something");
                let events = w.drain_events();
                assert!(events.is_empty(), "{case}: a refusal told {events:?}");
            }
        }
    }
    eprintln!(
        "authz matrix (Lambda, memory adapters): {} cells, {allowed} allowed, {refused} refused",
        allowed + refused
    );
    assert_eq!((allowed, refused), (28, 68));
}

/// The same refusals whatever the voice room id names: an unknown one is "not found" for every
/// caller who is identified, and "not identified" before anything else.
#[tokio::test]
async fn unknown_voice_rooms_are_not_found_for_every_identified_caller() {
    let w = world().await;
    for caller in matrix::CALLERS {
        for route in ["getVoiceCredentials", "endVoiceRoom", "leaveVoiceRoom"] {
            let r = call(
                &w.lambda,
                ws_event(
                    route,
                    caller_conn(caller),
                    Some(json!({"voiceRoomId": "no-such-room"})),
                ),
            )
            .await;
            if caller == Caller::NoIdentity {
                assert_refused(&r, 401, "NOT_IDENTIFIED");
            } else {
                assert_refused(&r, 404, "VOICE_ROOM_NOT_FOUND");
            }
        }
    }
}
