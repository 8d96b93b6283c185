//! The handler over the in-memory adapters: every route's happy path, every refusal's status and
//! code, malformed bodies and events, the original's console test payload, `$disconnect`, the
//! scheduled sweep, endpoint routing of notifications, and the panic guard.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use serde_json::{json, Value};
use voice_adapters_aws::EndpointNotifier;
use voice_adapters_memory::faults::{Fault, Faults, Faulty};
use voice_adapters_memory::{
    memory_service, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryHandles,
    MemoryNotifier, MemoryPorts, MemoryStore,
};
use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::errors::PortName;
use voice_domain::ports::{
    Adapters, ChannelTags, ChatDirectory, DirectoryError, Membership, Ports, SignalingChannels,
};
use voice_domain::{
    Capacity, ChatRoomId, ConnectionId, ServiceConfig, UserId, VoiceEvent, VoiceRoomId,
    VoiceService,
};
use voice_lambda::{HandlerError, LambdaOutput, VoiceLambda};

const ALICE: &str = "L0SM9cOFvHcCIhw="; // API Gateway connection ids end in '='
const BOB: &str = "L0SNEdbXvHcCFxQ=";
const CAROL: &str = "L0SNdc0LvHcCF2Q=";
const DAVE: &str = "L0SNkfCMvHcCGEg=";
const STRANGER: &str = "L0SO0000vHcCGEg=";
const CHAT: &str = "chat-1";

fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}
fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn chat() -> ChatRoomId {
    ChatRoomId::parse(CHAT).unwrap()
}

/// alice admin of chat-1, bob approved, carol pending, dave connected but not a member.
fn populate(d: &MemoryDirectory) {
    d.connect(conn(ALICE), user("alice"));
    d.connect(conn(BOB), user("bob"));
    d.connect(conn(CAROL), user("carol"));
    d.connect(conn(DAVE), user("dave"));
    d.create_room(chat(), user("alice")).unwrap();
    d.request_join(&chat(), user("bob")).unwrap();
    d.approve(&chat(), &user("bob")).unwrap();
    d.request_join(&chat(), user("carol")).unwrap();
}

fn world_with(config: ServiceConfig) -> (VoiceLambda<MemoryPorts>, MemoryHandles) {
    let (service, handles) = memory_service(config);
    populate(&handles.directory);
    (
        VoiceLambda::new(voice_executor::Executor::new(Arc::new(service))),
        handles,
    )
}

fn active(store: &MemoryStore) -> Vec<voice_domain::VoiceRoom> {
    store.all().into_iter().filter(|r| r.is_active()).collect()
}

fn world() -> (VoiceLambda<MemoryPorts>, MemoryHandles) {
    world_with(ServiceConfig::default())
}

async fn create(lambda: &VoiceLambda<MemoryPorts>) -> String {
    let r = call(
        lambda,
        ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT}))),
    )
    .await;
    assert_ok(&r, "createVoiceRoom");
    r.data()["voiceRoomId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_route_works_end_to_end_over_memory() {
    let (lambda, h) = world();

    // getVoiceRoom before anything: null.
    let r = call(
        &lambda,
        ws_event(
            "getVoiceRoom",
            BOB,
            Some(json!({"action":"getVoiceRoom","roomId":CHAT,"requestId":"g0"})),
        ),
    )
    .await;
    assert_ok(&r, "getVoiceRoom");
    assert_eq!(r.body["requestId"], "g0");
    assert_eq!(r.data(), &json!({"voiceRoom": null}));

    // createVoiceRoom with the original's body shape (no action: the route says it).
    let r = call(
        &lambda,
        ws_event(
            "createVoiceRoom",
            ALICE,
            Some(json!({"roomId": CHAT, "requestId": "c1"})),
        ),
    )
    .await;
    assert_ok(&r, "createVoiceRoom");
    assert_eq!(r.body["requestId"], "c1");
    let vr = r.data()["voiceRoomId"].as_str().unwrap().to_owned();
    assert_eq!(r.data()["chatRoomId"], CHAT);
    assert_eq!(r.data()["status"], "active");
    assert_eq!(r.data()["masterUserId"], "alice");
    assert_eq!(r.data()["participants"].as_array().unwrap().len(), 1);
    assert_eq!(h.channels.list_now().len(), 1);
    // Bob (approved, connected) was told.
    assert!(h
        .notifier
        .take(&conn(BOB))
        .iter()
        .any(|e| matches!(e, VoiceEvent::VoiceStarted { .. })));

    // getVoiceRoom now returns it.
    let r = call(
        &lambda,
        ws_event("getVoiceRoom", BOB, Some(json!({"roomId": CHAT}))),
    )
    .await;
    assert_ok(&r, "getVoiceRoom");
    assert_eq!(r.data()["voiceRoom"]["voiceRoomId"], vr.as_str());

    // getVoiceCredentials: alice masters her own channel, no peers yet.
    let r = call(
        &lambda,
        ws_event(
            "getVoiceCredentials",
            ALICE,
            Some(json!({"action":"getVoiceCredentials","voiceRoomId":vr})),
        ),
    )
    .await;
    assert_ok(&r, "getVoiceCredentials");
    let alice_arn = r.data()["signalingChannelARN"].as_str().unwrap().to_owned();
    assert_eq!(r.data()["role"], "MASTER");
    assert_eq!(r.data()["self"]["channelArn"], alice_arn.as_str());
    assert_eq!(r.data()["peers"], json!([]));
    assert_eq!(r.data()["newlyJoined"], false);

    // bob joins: masters a new channel, views alice's; scoped credentials.
    let r = call(
        &lambda,
        ws_event(
            "getVoiceCredentials",
            BOB,
            Some(json!({"voiceRoomId": vr, "requestId": "j2"})),
        ),
    )
    .await;
    assert_ok(&r, "getVoiceCredentials");
    assert_eq!(r.body["requestId"], "j2");
    assert_eq!(r.data()["userId"], "bob");
    assert_eq!(r.data()["newlyJoined"], true);
    assert_ne!(r.data()["signalingChannelARN"], alice_arn.as_str());
    let peers = r.data()["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["userId"], "alice");
    assert_eq!(peers[0]["role"], "VIEWER");
    assert_eq!(peers[0]["channelArn"], alice_arn.as_str());
    assert_eq!(r.data()["credentials"]["kind"], "token");
    let expires = r.data()["expiresAt"].as_u64().unwrap();
    let issued = r.data()["issuedAt"].as_u64().unwrap();
    assert!(issued > 0 && expires > issued, "{:?}", r.data());
    let (req, _) = h.credentials.issued().pop().unwrap();
    assert_eq!(req.grants.len(), 2, "master on own + viewer on alice's");
    assert_eq!(h.channels.list_now().len(), 2);

    // setMute.
    let r = call(
        &lambda,
        ws_event(
            "setMute",
            BOB,
            Some(json!({"voiceRoomId": vr, "muted": true})),
        ),
    )
    .await;
    assert_ok(&r, "setMute");
    let bob_p = r.data()["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["userId"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob_p["muted"], true);
    assert!(h
        .notifier
        .take(&conn(ALICE))
        .iter()
        .any(|e| matches!(e, VoiceEvent::MuteChanged { muted: true, .. })));

    // leaveVoiceRoom: bob's channel is deleted.
    let r = call(
        &lambda,
        ws_event("leaveVoiceRoom", BOB, Some(json!({"voiceRoomId": vr}))),
    )
    .await;
    assert_ok(&r, "leaveVoiceRoom");
    assert_eq!(r.data()["participants"].as_array().unwrap().len(), 1);
    assert_eq!(h.channels.list_now().len(), 1);

    // endVoiceRoom by the master: ended, every channel deleted.
    let r = call(
        &lambda,
        ws_event(
            "endVoiceRoom",
            ALICE,
            Some(json!({"voiceRoomId": vr, "requestId": "e9"})),
        ),
    )
    .await;
    assert_ok(&r, "endVoiceRoom");
    assert_eq!(r.body["requestId"], "e9");
    assert_eq!(r.data()["status"], "ended");
    assert_eq!(r.data()["participants"], json!([]));
    assert!(h.channels.list_now().is_empty());
}

#[tokio::test]
async fn access_refusals_map_to_401_403_404() {
    let (lambda, _h) = world();
    let body = Some(json!({"roomId": CHAT, "requestId": "x"}));
    let r = call(&lambda, ws_event("createVoiceRoom", STRANGER, body.clone())).await;
    assert_refused(&r, 401, "NOT_IDENTIFIED");
    assert_eq!(r.body["requestId"], "x");
    assert_eq!(r.body["action"], "createVoiceRoom");
    let r = call(&lambda, ws_event("createVoiceRoom", DAVE, body.clone())).await;
    assert_refused(&r, 403, "NOT_MEMBER");
    let r = call(&lambda, ws_event("createVoiceRoom", CAROL, body.clone())).await;
    assert_refused(&r, 403, "NOT_APPROVED");
    let r = call(&lambda, ws_event("getVoiceRoom", CAROL, body)).await;
    assert_refused(&r, 403, "NOT_APPROVED");
    let r = call(
        &lambda,
        ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": "nope"}))),
    )
    .await;
    assert_refused(&r, 404, "CHAT_ROOM_NOT_FOUND");
    let r = call(
        &lambda,
        ws_event(
            "getVoiceCredentials",
            BOB,
            Some(json!({"voiceRoomId": "vr-none"})),
        ),
    )
    .await;
    assert_refused(&r, 404, "VOICE_ROOM_NOT_FOUND");
    for route in ["endVoiceRoom", "leaveVoiceRoom"] {
        let r = call(
            &lambda,
            ws_event(route, BOB, Some(json!({"voiceRoomId": "vr-none"}))),
        )
        .await;
        assert_refused(&r, 404, "VOICE_ROOM_NOT_FOUND");
    }
    let r = call(
        &lambda,
        ws_event(
            "setMute",
            STRANGER,
            Some(json!({"voiceRoomId": "vr-none", "muted": false})),
        ),
    )
    .await;
    assert_refused(&r, 401, "NOT_IDENTIFIED");
}

#[tokio::test]
async fn state_refusals_map_to_403_and_409() {
    let (lambda, h) = world_with(ServiceConfig {
        capacity: Capacity::new(2).unwrap(),
        ..ServiceConfig::default()
    });
    let vr = create(&lambda).await;

    let r = call(
        &lambda,
        ws_event("createVoiceRoom", BOB, Some(json!({"roomId": CHAT}))),
    )
    .await;
    assert_refused(&r, 409, "ALREADY_ACTIVE");
    assert!(r.message().contains(&vr), "names the active room: {r:?}");

    // Not a participant yet.
    for (route, body) in [
        ("setMute", json!({"voiceRoomId": vr, "muted": true})),
        ("leaveVoiceRoom", json!({"voiceRoomId": vr})),
    ] {
        let r = call(&lambda, ws_event(route, BOB, Some(body))).await;
        assert_refused(&r, 409, "NOT_PARTICIPANT");
    }
    // Only master or admin may end.
    let r = call(
        &lambda,
        ws_event("endVoiceRoom", BOB, Some(json!({"voiceRoomId": vr}))),
    )
    .await;
    assert_refused(&r, 403, "NOT_ALLOWED");
    // Pending members may not join.
    let r = call(
        &lambda,
        ws_event(
            "getVoiceCredentials",
            CAROL,
            Some(json!({"voiceRoomId": vr})),
        ),
    )
    .await;
    assert_refused(&r, 403, "NOT_APPROVED");

    // Capacity 2: alice + bob fill it; a third approved member is refused.
    let r = call(
        &lambda,
        ws_event("getVoiceCredentials", BOB, Some(json!({"voiceRoomId": vr}))),
    )
    .await;
    assert_ok(&r, "getVoiceCredentials");
    h.directory.approve(&chat(), &user("carol")).unwrap();
    let r = call(
        &lambda,
        ws_event(
            "getVoiceCredentials",
            CAROL,
            Some(json!({"voiceRoomId": vr})),
        ),
    )
    .await;
    assert_refused(&r, 409, "ROOM_FULL");

    // Ended rooms refuse everything with VOICE_ROOM_ENDED.
    let r = call(
        &lambda,
        ws_event("endVoiceRoom", ALICE, Some(json!({"voiceRoomId": vr}))),
    )
    .await;
    assert_ok(&r, "endVoiceRoom");
    for (route, body) in [
        ("getVoiceCredentials", json!({"voiceRoomId": vr})),
        ("endVoiceRoom", json!({"voiceRoomId": vr})),
        ("leaveVoiceRoom", json!({"voiceRoomId": vr})),
        ("setMute", json!({"voiceRoomId": vr, "muted": true})),
    ] {
        let r = call(&lambda, ws_event(route, ALICE, Some(body))).await;
        assert_refused(&r, 409, "VOICE_ROOM_ENDED");
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_bad_request() {
    let (lambda, h) = world();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "",
            ws_event_raw("createVoiceRoom", ALICE, "{not json"),
            "not valid JSON",
        ),
        (
            "",
            ws_event_raw("createVoiceRoom", ALICE, "[1,2]"),
            "JSON object",
        ),
        (
            "",
            ws_event("createVoiceRoom", ALICE, None),
            "frame is empty",
        ),
        (
            "",
            ws_event_raw("createVoiceRoom", ALICE, "   "),
            "frame is empty",
        ),
        (
            "createVoiceRoom",
            ws_event("createVoiceRoom", ALICE, Some(json!({}))),
            "roomId",
        ),
        (
            "createVoiceRoom",
            ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": ""}))),
            "must not be empty",
        ),
        (
            "createVoiceRoom",
            ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": 5}))),
            "invalid fields",
        ),
        (
            "setMute",
            ws_event("setMute", ALICE, Some(json!({"voiceRoomId": "v1"}))),
            "muted",
        ),
        (
            "setMute",
            ws_event(
                "setMute",
                ALICE,
                Some(json!({"voiceRoomId": "v1", "muted": "yes"})),
            ),
            "invalid fields",
        ),
        (
            "getVoiceCredentials",
            ws_event(
                "getVoiceCredentials",
                ALICE,
                Some(json!({"voiceRoomId": "has space"})),
            ),
            "whitespace",
        ),
    ];
    for (action, event, needle) in cases {
        let r = call(&lambda, event).await;
        assert_refused(&r, 400, "BAD_REQUEST");
        assert_eq!(r.body["action"], action, "{r:?}");
        assert!(r.message().contains(needle), "{needle:?} not in {r:?}");
    }
    // Binary frames.
    let mut e = ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT})));
    e["isBase64Encoded"] = json!(true);
    let r = call(&lambda, e).await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert!(r.message().contains("binary"), "{r:?}");
    // The requestId is echoed when the body is an object, even if invalid.
    let r = call(
        &lambda,
        ws_event(
            "setMute",
            ALICE,
            Some(json!({"requestId": "m1", "voiceRoomId": "v1"})),
        ),
    )
    .await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert_eq!(r.body["requestId"], "m1");
    // Nothing happened.
    assert!(h.channels.list_now().is_empty());
    assert!(active(&h.store).is_empty());
}

#[tokio::test]
async fn a_body_without_an_action_is_refused_on_any_route() {
    // API Gateway routes by the body's `action`; a direct invocation may put anything in the
    // route key, but the executor reads the action from the body, as the server does.
    let (lambda, h) = world();
    let r = call(
        &lambda,
        ws_event_raw(
            "createVoiceRoom",
            ALICE,
            r#"{"roomId":"c","requestId":"q"}"#,
        ),
    )
    .await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert_eq!(r.body["requestId"], "q");
    assert!(r.message().contains("action"), "{r:?}");
    assert!(h.channels.list_now().is_empty(), "nothing was created");
}

#[tokio::test]
async fn unknown_routes_and_default_are_unknown_action() {
    let (lambda, _h) = world();
    let r = call(
        &lambda,
        ws_event(
            "$default",
            ALICE,
            Some(json!({"action": "danceParty", "requestId": "d1"})),
        ),
    )
    .await;
    assert_refused(&r, 400, "UNKNOWN_ACTION");
    assert_eq!(r.body["action"], "danceParty");
    assert_eq!(r.body["requestId"], "d1");
    assert!(
        r.message().contains("createVoiceRoom"),
        "lists the actions: {r:?}"
    );

    let r = call(&lambda, ws_event_raw("$default", ALICE, "garbage")).await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert!(r.message().contains("not valid JSON"), "{r:?}");

    let r = call(
        &lambda,
        ws_event("sendMessage", ALICE, Some(json!({"text": "hi"}))),
    )
    .await;
    assert_refused(&r, 400, "UNKNOWN_ACTION");
    assert_eq!(r.body["action"], "sendMessage");
}

#[tokio::test]
async fn the_originals_console_test_payload_gets_a_400_naming_route_key() {
    let (lambda, h) = world();
    let payload: Value = serde_json::from_str(
        r#"{"requestContext":{"connectionId":"test"},"body":"{\"roomId\":\"test-room\"}"}"#,
    )
    .unwrap();
    let r = call(&lambda, payload).await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert!(r.message().contains("routeKey"), "{r:?}");
    assert!(h.channels.list_now().is_empty());
}

#[tokio::test]
async fn missing_or_invalid_connection_ids_are_400() {
    let (lambda, _h) = world();
    let mut e = ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT})));
    e["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("connectionId");
    let r = call(&lambda, e).await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert!(r.message().contains("connectionId"), "{r:?}");
    assert_eq!(r.body["action"], "createVoiceRoom");

    let r = call(
        &lambda,
        ws_event("createVoiceRoom", "", Some(json!({"roomId": CHAT}))),
    )
    .await;
    assert_refused(&r, 400, "BAD_REQUEST");
    let r = call(&lambda, ws_event("$disconnect", "has space", None)).await;
    assert_refused(&r, 400, "BAD_REQUEST");
    assert!(r.message().contains("connectionId is invalid"), "{r:?}");
}

#[tokio::test]
async fn malformed_events_are_400_not_runtime_errors() {
    let (lambda, _h) = world();
    for payload in [
        json!({}),
        json!([1]),
        json!(null),
        json!({"requestContext": "x"}),
        json!({"requestContext": {"routeKey": 1, "connectionId": ALICE}}),
        json!({"source": "aws.events", "detail-type": "AWS API Call via CloudTrail"}),
    ] {
        let r = call(&lambda, payload.clone()).await;
        assert_refused(&r, 400, "BAD_REQUEST");
        assert!(
            r.message().contains("requestContext")
                || r.message().contains("malformed")
                || r.message().contains("EventBridge"),
            "{payload}: {r:?}"
        );
    }
}

#[tokio::test]
async fn disconnect_removes_the_connection_from_its_room() {
    let (lambda, h) = world();
    let vr = create(&lambda).await;
    let r = call(
        &lambda,
        ws_event("getVoiceCredentials", BOB, Some(json!({"voiceRoomId": vr}))),
    )
    .await;
    assert_ok(&r, "getVoiceCredentials");
    assert_eq!(h.channels.list_now().len(), 2);
    h.notifier.take(&conn(ALICE));

    // Bob becomes reconnecting: he keeps his place and channel for the reconnect grace.
    let r = call(&lambda, ws_event("$disconnect", BOB, None)).await;
    assert_ok(&r, "$disconnect");
    assert_eq!(
        r.data(),
        &json!({"roomsLeft": [], "roomsReconnecting": [vr]})
    );
    let room = active(&h.store)
        .into_iter()
        .next()
        .expect("alice keeps the room");
    assert_eq!(room.participants().len(), 2);
    assert!(room.participants()[1].is_reconnecting());
    assert_eq!(h.channels.list_now().len(), 2, "bob keeps his channel");
    assert!(h
        .notifier
        .take(&conn(ALICE))
        .iter()
        .any(|e| matches!(e, VoiceEvent::ParticipantReconnecting { .. })));

    // A connection in no room: still 200, nothing left.
    let r = call(&lambda, ws_event("$disconnect", DAVE, None)).await;
    assert_ok(&r, "$disconnect");
    assert_eq!(r.data(), &json!({"roomsLeft": [], "roomsReconnecting": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_make_exactly_one_room() {
    let (lambda, h) = world();
    let (a, b) = tokio::join!(
        call(
            &lambda,
            ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT}))),
        ),
        call(
            &lambda,
            ws_event("createVoiceRoom", BOB, Some(json!({"roomId": CHAT}))),
        ),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let loser = if a.status == 409 { &a } else { &b };
    assert_eq!(loser.code(), "ALREADY_ACTIVE");
    assert_eq!(active(&h.store).len(), 1);
    assert_eq!(
        h.channels.list_now().len(),
        1,
        "the loser's channel was deleted"
    );
}

#[tokio::test]
async fn the_schedule_runs_the_sweep_and_returns_its_report() {
    // A zero reconnect grace: a participant on a dead connection is removed at once.
    let (lambda, h) = world_with(ServiceConfig {
        orphan_grace: Duration::ZERO,
        reconnect_grace: Duration::ZERO,
        ..ServiceConfig::default()
    });
    let vr = create(&lambda).await;
    // An orphan channel nobody holds (a crash between create and record).
    h.channels
        .create(
            &voice_domain::ChannelName::from_unique("orphan").unwrap(),
            &ChannelTags {
                chat_room: chat(),
                voice_room: VoiceRoomId::parse("vr-crashed").unwrap(),
                owner: user("bob"),
            },
        )
        .await
        .unwrap();
    // Alice's socket died without a $disconnect.
    h.directory.disconnect(&conn(ALICE));

    let out = invoke(&lambda, scheduled_event()).await.unwrap();
    let LambdaOutput::Sweep(report) = &out else {
        panic!("expected a sweep report, got {out:?}")
    };
    assert_eq!(report.rooms_ended, vec![vr.clone()]);
    assert_eq!(report.channels_deleted, 1);
    assert_eq!(report.failures, 0);
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({"roomsEnded": [vr], "participantsRemoved": 0, "participantsReconnecting": 0, "channelsDeleted": 1, "leasesReclaimed": 0, "channelsEvicted": 0, "failures": 0})
    );
    assert!(active(&h.store).is_empty());
    assert!(h.channels.list_now().is_empty());

    // Idempotent: a second sweep changes nothing.
    let out = invoke(&lambda, scheduled_event()).await.unwrap();
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({"roomsEnded": [], "participantsRemoved": 0, "participantsReconnecting": 0, "channelsDeleted": 0, "leasesReclaimed": 0, "channelsEvicted": 0, "failures": 0})
    );
}

#[tokio::test]
async fn the_response_serialises_as_an_api_gateway_proxy_response() {
    let (lambda, _h) = world();
    let out = invoke(
        &lambda,
        ws_event("getVoiceRoom", ALICE, Some(json!({"roomId": CHAT}))),
    )
    .await
    .unwrap();
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v["statusCode"], 200);
    assert_eq!(v["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["action"], "getVoiceRoom");
    assert_eq!(v["isBase64Encoded"], false);
}

// ---------------------------------------------------------------------------------------------
// Dependency failures: adapters wrapped with fault injection.
// ---------------------------------------------------------------------------------------------

struct FaultyPorts;

impl Ports for FaultyPorts {
    type Store = Faulty<MemoryStore>;
    type Directory = Faulty<MemoryDirectory>;
    type Channels = Faulty<MemoryChannels>;
    type Credentials = Faulty<MemoryCredentials>;
    type Notifier = Faulty<MemoryNotifier>;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

fn faulty_world() -> (
    VoiceLambda<FaultyPorts>,
    Faults,
    MemoryStore,
    MemoryChannels,
) {
    let faults = Faults::new();
    let store = MemoryStore::new();
    let directory = MemoryDirectory::new();
    populate(&directory);
    let channels = MemoryChannels::new(SystemClock);
    let service = VoiceService::new(
        Adapters::<FaultyPorts> {
            store: Faulty::new(store.clone(), PortName::Store, faults.clone()),
            directory: Faulty::new(directory, PortName::Directory, faults.clone()),
            channels: Faulty::new(channels.clone(), PortName::Channels, faults.clone()),
            credentials: Faulty::new(
                MemoryCredentials::new(SystemClock),
                PortName::Credentials,
                faults.clone(),
            ),
            notifier: Faulty::new(MemoryNotifier::new(), PortName::Notifier, faults.clone()),
            clock: SystemClock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig::default(),
    );
    (
        VoiceLambda::new(voice_executor::Executor::new(Arc::new(service))),
        faults,
        store,
        channels,
    )
}

#[tokio::test]
async fn dependency_failures_are_503_retryable_or_500_with_a_body() {
    let (lambda, faults, store, channels) = faulty_world();
    let create = || ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT})));

    // The store's first call (active_in_chat_room) is throttled.
    faults.fail_at(PortName::Store, 1, Fault::Fail { retryable: true });
    let r = call(&lambda, create()).await;
    assert_refused(&r, 503, "UNAVAILABLE");
    assert_eq!(r.body["error"]["retryable"], true);
    assert!(r.message().contains("try again"), "{r:?}");

    // Channel creation fails for good (e.g. access denied).
    faults.reset();
    faults.fail_at(PortName::Channels, 1, Fault::Fail { retryable: false });
    let r = call(&lambda, create()).await;
    assert_refused(&r, 500, "INTERNAL");
    assert_eq!(r.body["error"]["retryable"], false);
    assert!(
        !r.message().contains("injected"),
        "the port's detail stays in the logs: {r:?}"
    );

    // The room write fails after the channel was made: no orphan is left.
    faults.reset();
    faults.fail_at(PortName::Store, 2, Fault::Fail { retryable: true });
    let r = call(&lambda, create()).await;
    assert_refused(&r, 503, "UNAVAILABLE");
    assert!(channels.list_now().is_empty());
    assert!(active(&store).is_empty());

    // $disconnect with the store down: 503 with a body.
    faults.reset();
    faults.fail_at(PortName::Store, 1, Fault::Fail { retryable: true });
    let r = call(&lambda, ws_event("$disconnect", ALICE, None)).await;
    assert_refused(&r, 503, "UNAVAILABLE");
    assert_eq!(r.body["action"], "$disconnect");
}

#[tokio::test]
async fn a_sweep_that_cannot_list_fails_the_invocation() {
    let (lambda, faults, _store, _channels) = faulty_world();
    faults.fail_at(PortName::Store, 1, Fault::Fail { retryable: true });
    let err = invoke(&lambda, scheduled_event()).await.unwrap_err();
    assert!(matches!(err, HandlerError::Sweep(_)), "{err:?}");
    let d: lambda_runtime::Diagnostic = err.into();
    assert_eq!(d.error_type, "SweepFailed");
    assert!(d.error_message.contains("sweep failed"), "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// Notifications go to the API's management endpoint.
// ---------------------------------------------------------------------------------------------

struct RoutedPorts;

impl Ports for RoutedPorts {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = MemoryChannels;
    type Credentials = MemoryCredentials;
    type Notifier = EndpointNotifier<MemoryNotifier>;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

type Outboxes = Arc<Mutex<HashMap<String, MemoryNotifier>>>;

fn routed_world(
    configured: Option<&str>,
) -> (
    VoiceLambda<RoutedPorts>,
    Outboxes,
    EndpointNotifier<MemoryNotifier>,
    MemoryDirectory,
) {
    let outboxes: Outboxes = Arc::default();
    let built = Arc::clone(&outboxes);
    let notifier = EndpointNotifier::new(configured.map(str::to_owned), move |endpoint: &str| {
        let n = MemoryNotifier::new();
        built.lock().unwrap().insert(endpoint.to_owned(), n.clone());
        n
    });
    let directory = MemoryDirectory::new();
    populate(&directory);
    let service = VoiceService::new(
        Adapters::<RoutedPorts> {
            store: MemoryStore::new(),
            directory: directory.clone(),
            channels: MemoryChannels::new(SystemClock),
            credentials: MemoryCredentials::new(SystemClock),
            notifier: notifier.clone(),
            clock: SystemClock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        // A zero reconnect grace, so that the sweep ends a room whose connection died at once.
        ServiceConfig {
            reconnect_grace: Duration::ZERO,
            ..ServiceConfig::default()
        },
    );
    (
        VoiceLambda::new(voice_executor::Executor::new(Arc::new(service))),
        outboxes,
        notifier,
        directory,
    )
}

#[tokio::test]
async fn events_go_to_the_endpoint_derived_from_the_request() {
    let (lambda, outboxes, notifier, directory) = routed_world(None);
    let r = call(
        &lambda,
        ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT}))),
    )
    .await;
    assert_ok(&r, "createVoiceRoom");
    let derived = "https://abc123.execute-api.us-east-1.amazonaws.com/prod";
    assert_eq!(notifier.endpoints(), vec![derived.to_owned()]);
    let bob_got = outboxes.lock().unwrap()[derived].take(&conn(BOB));
    assert!(bob_got
        .iter()
        .any(|e| matches!(e, VoiceEvent::VoiceStarted { .. })));

    // The sweep has no request context: it reuses the endpoint last seen, with the same client.
    directory.disconnect(&conn(ALICE));
    let out = invoke(&lambda, scheduled_event()).await.unwrap();
    let LambdaOutput::Sweep(report) = out else {
        panic!("expected a sweep report")
    };
    assert_eq!(report.rooms_ended.len(), 1);
    assert_eq!(notifier.endpoints(), vec![derived.to_owned()]);
    let bob_got = outboxes.lock().unwrap()[derived].take(&conn(BOB));
    assert!(bob_got
        .iter()
        .any(|e| matches!(e, VoiceEvent::VoiceEnded { .. })));
}

#[tokio::test]
async fn a_configured_endpoint_wins_over_the_derived_one() {
    let configured = "https://custom.example.com/ws";
    let (lambda, outboxes, notifier, _directory) = routed_world(Some(configured));
    let r = call(
        &lambda,
        ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT}))),
    )
    .await;
    assert_ok(&r, "createVoiceRoom");
    assert_eq!(notifier.endpoints(), vec![configured.to_owned()]);
    assert!(!outboxes.lock().unwrap()[configured]
        .take(&conn(BOB))
        .is_empty());
}

#[tokio::test]
async fn without_any_endpoint_the_request_still_succeeds() {
    // A request without domainName (a hand-made test event) and nothing configured: the
    // notification cannot go out, which is logged, and the use case still succeeds.
    let (lambda, _outboxes, notifier, _directory) = routed_world(None);
    let mut e = ws_event("createVoiceRoom", ALICE, Some(json!({"roomId": CHAT})));
    e["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("domainName");
    let r = call(&lambda, e).await;
    assert_ok(&r, "createVoiceRoom");
    assert!(notifier.endpoints().is_empty());
}

// ---------------------------------------------------------------------------------------------
// A panic below the handler still yields a 500 with a body.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct PanickingDirectory;

#[async_trait]
impl ChatDirectory for PanickingDirectory {
    async fn user_of(&self, _c: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        panic!("bug in an adapter")
    }
    async fn membership(
        &self,
        _r: &ChatRoomId,
        _u: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        panic!("bug in an adapter")
    }
    async fn connections_of(&self, _r: &ChatRoomId) -> Result<Vec<ConnectionId>, DirectoryError> {
        panic!("bug in an adapter")
    }
}

struct PanickyPorts;

impl Ports for PanickyPorts {
    type Store = MemoryStore;
    type Directory = PanickingDirectory;
    type Channels = MemoryChannels;
    type Credentials = MemoryCredentials;
    type Notifier = MemoryNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}

#[tokio::test]
async fn a_panic_becomes_a_500_reply_with_a_body() {
    let service = VoiceService::new(
        Adapters::<PanickyPorts> {
            store: MemoryStore::new(),
            directory: PanickingDirectory,
            channels: MemoryChannels::new(SystemClock),
            credentials: MemoryCredentials::new(SystemClock),
            notifier: MemoryNotifier::new(),
            clock: SystemClock,
            ids: UuidIds,
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig::default(),
    );
    let lambda = VoiceLambda::new(voice_executor::Executor::new(Arc::new(service)));
    let r = call(
        &lambda,
        ws_event(
            "createVoiceRoom",
            ALICE,
            Some(json!({"roomId": CHAT, "requestId": "p1"})),
        ),
    )
    .await;
    assert_refused(&r, 500, "INTERNAL");
    assert_eq!(r.body["requestId"], "p1");
    assert_eq!(r.body["action"], "createVoiceRoom");
}
