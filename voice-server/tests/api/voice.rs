//! The voice actions and events (both deployments' protocol, served by the self-hosted server).

use base64::Engine as _;
use hmac::Mac as _;
use serde_json::{json, Value};

use crate::support::{approve, room_with_member, spawn_app, spawn_app_with, Client, TestApp};

async fn start(c: &mut Client, room_id: &str) -> String {
    let view = c.ok("createVoiceRoom", json!({"roomId": room_id})).await;
    view["voiceRoomId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_approved_member_starts_voice_and_every_member_hears_each_step() {
    let app = spawn_app().await;
    let (mut admin, mut bo, room_id) = room_with_member(&app).await;
    let mut cy = app.user("Cy").await;
    approve(&mut admin, &mut cy, &room_id).await;
    let mut outsider = app.user("Out").await;
    let (bo_id, cy_id) = (bo.user_id.clone(), cy.user_id.clone());

    // Bo (an approved member, not the admin) starts voice.
    let view = bo.ok("createVoiceRoom", json!({"roomId": room_id})).await;
    let vr = view["voiceRoomId"].as_str().unwrap().to_owned();
    assert_eq!(view["chatRoomId"], room_id.as_str());
    assert_eq!(view["status"], "active");
    assert_eq!(view["masterUserId"], bo.user_id.as_str());
    assert_eq!(view["capacity"], 10);
    assert_eq!(view["participants"].as_array().unwrap().len(), 1);
    assert_eq!(view["participants"][0]["userId"], bo.user_id.as_str());
    for c in [&mut admin, &mut bo, &mut cy] {
        let ev = c.event("voiceStarted").await;
        assert_eq!(
            ev,
            json!({"type": "event", "event": "voiceStarted", "voiceRoomId": vr, "chatRoomId": room_id, "master": bo_id})
        );
        let ev = c.event("participantJoined").await;
        assert_eq!(ev["user"], bo_id.as_str());
        assert_eq!(ev["muted"], false);
    }
    outsider
        .no_event("voiceStarted", std::time::Duration::from_millis(50))
        .await;

    // The room shows up for members.
    let got = admin.ok("getVoiceRoom", json!({"roomId": room_id})).await;
    assert_eq!(got["voiceRoom"]["voiceRoomId"], vr.as_str());
    let rooms = admin.ok("listRooms", json!({})).await;
    assert_eq!(rooms["rooms"][0]["voiceRoomId"], vr.as_str());
    assert_eq!(
        outsider.ok("listRooms", json!({})).await["rooms"][0]["voiceRoomId"],
        Value::Null
    );

    // The master's own grant: master of its channel, no peers.
    let g_bo = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(g_bo["newlyJoined"], false);
    assert_eq!(g_bo["role"], "MASTER");
    assert_eq!(g_bo["peers"], json!([]));

    // Cy joins: viewer on Bo's channel, master of its own; a token; our own WebSocket URL.
    let g = cy
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(g["voiceRoomId"], vr.as_str());
    assert_eq!(g["userId"], cy.user_id.as_str());
    assert_eq!(g["newlyJoined"], true);
    assert_eq!(g["role"], "MASTER");
    assert_eq!(g["self"]["role"], "MASTER");
    assert_eq!(g["self"]["wssEndpoint"], app.ws_url().as_str());
    assert_eq!(g["self"]["iceServers"], json!([]));
    assert!(g["self"].get("httpsEndpoint").is_none());
    assert_eq!(g["signalingChannelARN"], g["self"]["channelArn"]);
    assert_eq!(g["peers"].as_array().unwrap().len(), 1);
    assert_eq!(g["peers"][0]["userId"], bo.user_id.as_str());
    assert_eq!(g["peers"][0]["role"], "VIEWER");
    assert_eq!(g["peers"][0]["channelArn"], g_bo["self"]["channelArn"]);
    assert_eq!(g["credentials"]["kind"], "token");
    assert!(g["credentials"]["token"]
        .as_str()
        .is_some_and(|t| t.contains('.')));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expires = g["expiresAt"].as_u64().unwrap();
    assert!(expires > now_ms + 3_500_000 && expires <= now_ms + 3_600_000);
    // The lifetime by the server's own clock, which clients schedule their refresh from.
    let issued = g["issuedAt"].as_u64().unwrap();
    assert!(
        issued.abs_diff(now_ms) < 60_000,
        "issuedAt {issued} vs now {now_ms}"
    );
    // (Token expiries are whole seconds, rounded down.)
    assert!(
        (3_599_000..=3_600_000).contains(&(expires - issued)),
        "expiresAt - issuedAt is the token TTL: {}",
        expires - issued
    );
    assert_eq!(g["room"]["participants"].as_array().unwrap().len(), 2);
    for c in [&mut admin, &mut bo, &mut cy] {
        let ev = c.event("participantJoined").await;
        assert_eq!(ev["user"], cy_id.as_str());
    }
    // A refresh does not join twice.
    let again = cy
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(again["newlyJoined"], false);

    // Mute.
    let view = cy
        .ok("setMute", json!({"voiceRoomId": vr, "muted": true}))
        .await;
    assert_eq!(view["participants"][1]["muted"], true);
    for c in [&mut admin, &mut bo, &mut cy] {
        let ev = c.event("muteChanged").await;
        assert_eq!(
            ev,
            json!({"type": "event", "event": "muteChanged", "voiceRoomId": vr, "chatRoomId": room_id, "user": cy_id, "muted": true, "serverMuted": false})
        );
    }
    assert_eq!(
        admin
            .err("setMute", json!({"voiceRoomId": vr, "muted": true}))
            .await,
        "NOT_PARTICIPANT"
    );
    assert_eq!(
        admin
            .err("leaveVoiceRoom", json!({"voiceRoomId": vr}))
            .await,
        "NOT_PARTICIPANT"
    );

    // The master leaves: Cy takes over, everyone hears it.
    let view = bo.ok("leaveVoiceRoom", json!({"voiceRoomId": vr})).await;
    assert_eq!(view["masterUserId"], cy.user_id.as_str());
    for c in [&mut admin, &mut bo, &mut cy] {
        let ev = c.event("participantLeft").await;
        assert_eq!(ev["user"], bo_id.as_str());
        assert_eq!(ev["reason"], "left");
        let ev = c.event("masterChanged").await;
        assert_eq!(
            ev,
            json!({"type": "event", "event": "masterChanged", "voiceRoomId": vr, "chatRoomId": room_id, "master": cy_id})
        );
    }

    // The master ends it.
    let view = cy.ok("endVoiceRoom", json!({"voiceRoomId": vr})).await;
    assert_eq!(view["status"], "ended");
    assert_eq!(view["endedReason"]["kind"], "endedByMaster");
    for c in [&mut admin, &mut bo, &mut cy] {
        let ev = c.event("voiceEnded").await;
        assert_eq!(ev["voiceRoomId"], vr.as_str());
        assert_eq!(ev["reason"], json!({"kind": "endedByMaster", "by": cy_id}));
    }
    assert_eq!(
        admin.ok("getVoiceRoom", json!({"roomId": room_id})).await,
        json!({"voiceRoom": null})
    );
    assert_eq!(
        bo.err("getVoiceCredentials", json!({"voiceRoomId": vr}))
            .await,
        "VOICE_ROOM_ENDED"
    );
    assert_eq!(
        cy.err("endVoiceRoom", json!({"voiceRoomId": vr})).await,
        "VOICE_ROOM_ENDED"
    );
    // A new one can start.
    start(&mut admin, &room_id).await;
}

#[tokio::test]
async fn voice_refusals_name_the_reason() {
    let app = spawn_app().await;
    let (mut admin, mut bo, room_id) = room_with_member(&app).await;
    let mut pending = app.user("Pat").await;
    pending.ok("requestJoin", json!({"roomId": room_id})).await;
    let mut outsider = app.user("Out").await;
    let mut anon = app.connect().await;

    assert_eq!(
        anon.err("createVoiceRoom", json!({"roomId": room_id}))
            .await,
        "NOT_IDENTIFIED"
    );
    assert_eq!(
        outsider
            .err("createVoiceRoom", json!({"roomId": room_id}))
            .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        pending
            .err("createVoiceRoom", json!({"roomId": room_id}))
            .await,
        "NOT_APPROVED"
    );
    assert_eq!(
        bo.err("createVoiceRoom", json!({"roomId": "nope"})).await,
        "CHAT_ROOM_NOT_FOUND"
    );
    assert_eq!(
        pending
            .err("getVoiceRoom", json!({"roomId": room_id}))
            .await,
        "NOT_APPROVED"
    );

    let vr = start(&mut bo, &room_id).await;
    let reply = admin
        .request("createVoiceRoom", json!({"roomId": room_id}))
        .await;
    assert_eq!(reply["error"]["code"], "ALREADY_ACTIVE");
    assert!(reply["error"]["message"].as_str().unwrap().contains(&vr));

    assert_eq!(
        anon.err("getVoiceCredentials", json!({"voiceRoomId": vr}))
            .await,
        "NOT_IDENTIFIED"
    );
    assert_eq!(
        outsider
            .err("getVoiceCredentials", json!({"voiceRoomId": vr}))
            .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        pending
            .err("getVoiceCredentials", json!({"voiceRoomId": vr}))
            .await,
        "NOT_APPROVED"
    );
    assert_eq!(
        bo.err("getVoiceCredentials", json!({"voiceRoomId": "no-such"}))
            .await,
        "VOICE_ROOM_NOT_FOUND"
    );

    // A participant who is neither master nor admin may not end it.
    let mut cy = app.user("Cy").await;
    approve(&mut admin, &mut cy, &room_id).await;
    cy.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(
        cy.err("endVoiceRoom", json!({"voiceRoomId": vr})).await,
        "NOT_ALLOWED"
    );
    assert_eq!(
        outsider
            .err("endVoiceRoom", json!({"voiceRoomId": vr}))
            .await,
        "NOT_ALLOWED"
    );
    // The chat admin may, without being in it.
    let view = admin.ok("endVoiceRoom", json!({"voiceRoomId": vr})).await;
    assert_eq!(view["endedReason"]["kind"], "endedByAdmin");
    for c in [&mut bo, &mut cy] {
        let ev = c.event("voiceEnded").await;
        assert_eq!(ev["reason"]["kind"], "endedByAdmin");
        assert_eq!(ev["reason"]["by"], admin.user_id.as_str());
    }
}

#[tokio::test]
async fn a_full_room_refuses_the_next_joiner() {
    let app = spawn_app_with(|c| c.capacity = voice_domain::Capacity::new(2).unwrap()).await;
    let (mut admin, mut bo, room_id) = room_with_member(&app).await;
    let mut cy = app.user("Cy").await;
    approve(&mut admin, &mut cy, &room_id).await;
    let vr = start(&mut admin, &room_id).await;
    bo.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let reply = cy
        .request("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(reply["error"]["code"], "ROOM_FULL");
    assert!(reply["error"]["message"].as_str().unwrap().contains('2'));
    // When someone leaves, there is room again.
    bo.ok("leaveVoiceRoom", json!({"voiceRoomId": vr})).await;
    cy.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
}

/// A short reconnect grace, so that tests can watch it pass (the sweep then runs every 100 ms).
const SHORT_GRACE: std::time::Duration = std::time::Duration::from_millis(400);

/// A client that said hello as `name`, and its resume token.
async fn user_with_token(app: &TestApp, name: &str) -> (Client, String) {
    let mut c = app.connect().await;
    let d = c.ok("hello", json!({ "name": name })).await;
    c.user_id = d["userId"].as_str().unwrap().to_owned();
    c.name = name.to_owned();
    (c, d["resumeToken"].as_str().unwrap().to_owned())
}

/// The same user back on a new connection, as a page does after a network drop.
async fn come_back(app: &TestApp, name: &str, token: &str, user_id: &str) -> Client {
    let mut c = app.connect().await;
    let d = c
        .ok("hello", json!({ "name": name, "resumeToken": token }))
        .await;
    assert_eq!(d["resumed"], true, "{d}");
    assert_eq!(d["userId"], user_id);
    c.user_id = user_id.to_owned();
    c.name = name.to_owned();
    c
}

fn participant<'a>(view: &'a Value, user: &str) -> &'a Value {
    view["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["userId"] == user)
        .unwrap_or_else(|| panic!("{user} is not in {view}"))
}

#[tokio::test]
async fn a_dropped_participant_is_reconnecting_then_resumes_into_the_same_room() {
    let app = spawn_app_with(|c| c.reconnect_grace = std::time::Duration::from_secs(60)).await;
    let mut ada = app.user("Ada").await;
    let (mut bo, bo_token) = user_with_token(&app, "Bo").await;
    let room_id = ada.ok("createRoom", json!({"name": "General"})).await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    approve(&mut ada, &mut bo, &room_id).await;
    let vr = start(&mut ada, &room_id).await;
    let first = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    bo.ok("setMute", json!({"voiceRoomId": vr, "muted": true}))
        .await;
    assert_eq!(ada.event("muteChanged").await["muted"], true);
    ada.clear_events();
    let bo_id = bo.user_id.clone();

    // The network drops: Bo's socket dies without a close handshake.
    bo.abort();
    let ev = ada.event("participantReconnecting").await;
    assert_eq!(
        ev,
        json!({"type": "event", "event": "participantReconnecting", "voiceRoomId": vr, "chatRoomId": room_id, "user": bo_id})
    );
    let view = ada.ok("getVoiceRoom", json!({"roomId": room_id})).await["voiceRoom"].clone();
    assert_eq!(view["voiceRoomId"], vr.as_str());
    assert_eq!(participant(&view, &bo_id)["connection"], "reconnecting");
    assert_eq!(participant(&view, &bo_id)["muted"], true);
    assert_eq!(participant(&view, &ada.user_id)["connection"], "connected");

    // Bo's page reconnects with its resume token and asks for credentials again.
    let mut bo = come_back(&app, "Bo", &bo_token, &bo_id).await;
    let g = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(g["voiceRoomId"], vr.as_str(), "the same voice room");
    assert_eq!(g["newlyJoined"], false);
    assert_eq!(
        g["signalingChannelARN"], first["signalingChannelARN"],
        "same channel"
    );
    let peer_users = |g: &Value| -> Vec<Value> {
        g["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["userId"].clone())
            .collect()
    };
    assert_eq!(peer_users(&g), peer_users(&first), "same place in the mesh");
    assert_eq!(peer_users(&g), vec![json!(ada.user_id)]);
    assert_ne!(
        g["clientId"], first["clientId"],
        "a new connection, a new client id"
    );
    let ev = ada.event("participantResumed").await;
    assert_eq!(
        ev,
        json!({"type": "event", "event": "participantResumed", "voiceRoomId": vr, "chatRoomId": room_id, "user": bo_id, "clientId": g["clientId"]}),
        "the event names the connection's new client id, as the grant does"
    );
    let view = ada.ok("getVoiceRoom", json!({"roomId": room_id})).await["voiceRoom"].clone();
    assert_eq!(view["voiceRoomId"], vr.as_str());
    assert_eq!(participant(&view, &bo_id)["connection"], "connected");
    assert_eq!(participant(&view, &bo_id)["muted"], true, "mute kept");
    assert_eq!(participant(&view, &bo_id)["clientId"], g["clientId"]);
    assert_eq!(view["masterUserId"], ada.user_id.as_str());
    ada.no_event("participantLeft", std::time::Duration::ZERO)
        .await;
    // The resumed participant acts from its new connection.
    bo.ok("setMute", json!({"voiceRoomId": vr, "muted": false}))
        .await;
    assert_eq!(ada.event("muteChanged").await["muted"], false);
}

#[tokio::test]
async fn a_participant_who_does_not_come_back_leaves_after_the_grace_with_hand_over() {
    let app = spawn_app_with(|c| c.reconnect_grace = SHORT_GRACE).await;
    let (mut admin, bo, room_id) = room_with_member(&app).await;
    let mut cy = app.user("Cy").await;
    approve(&mut admin, &mut cy, &room_id).await;
    let mut bo = bo;
    let vr = start(&mut bo, &room_id).await;
    cy.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    admin.clear_events();
    cy.clear_events();
    let (bo_id, cy_id) = (bo.user_id.clone(), cy.user_id.clone());

    bo.abort();
    for c in [&mut admin, &mut cy] {
        assert_eq!(
            c.event("participantReconnecting").await["user"],
            bo_id.as_str()
        );
        // Once the grace has passed, the sweep removes Bo as a leave, and Cy takes over.
        let ev = c.event("participantLeft").await;
        assert_eq!(ev["user"], bo_id.as_str());
        assert_eq!(ev["reason"], "disconnected");
        let ev = c.event("masterChanged").await;
        assert_eq!(ev["master"], cy_id.as_str());
    }
    let view = admin.ok("getVoiceRoom", json!({"roomId": room_id})).await;
    let ps = view["voiceRoom"]["participants"].as_array().unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["userId"], cy.user_id.as_str());

    // The last one dropping ends the room once its grace has passed.
    cy.abort();
    assert_eq!(
        admin.event("participantReconnecting").await["user"],
        cy_id.as_str()
    );
    let ev = admin.event("participantLeft").await;
    assert_eq!(ev["user"], cy_id.as_str());
    let ev = admin.event("voiceEnded").await;
    assert_eq!(ev["reason"], json!({"kind": "lastParticipantLeft"}));
}

#[tokio::test]
async fn with_a_zero_grace_an_abrupt_disconnect_is_a_leave_at_once() {
    let app = spawn_app_with(|c| c.reconnect_grace = std::time::Duration::ZERO).await;
    let (mut admin, bo, room_id) = room_with_member(&app).await;
    let mut bo = bo;
    let vr = start(&mut bo, &room_id).await;
    admin.clear_events();
    let bo_id = bo.user_id.clone();
    bo.abort();
    let ev = admin.event("participantLeft").await;
    assert_eq!(ev["user"], bo_id.as_str());
    assert_eq!(ev["reason"], "disconnected");
    assert_eq!(admin.event("voiceEnded").await["voiceRoomId"], vr.as_str());
}

#[tokio::test]
async fn grants_carry_stun_and_turn_servers_with_rest_credentials() {
    const TURN_SECRET: &str = "turn-shared-secret-for-tests";
    let app = spawn_app_with(|c| {
        c.ice_servers = vec![
            "stun:stun.example.test:3478".into(),
            "turn:turn.example.test:3478?transport=udp".into(),
            "turns:turn.example.test:5349".into(),
        ];
        c.turn_secret = Some(voice_domain::ports::Secret::new(TURN_SECRET));
        c.turn_ttl = std::time::Duration::from_secs(600);
    })
    .await;
    let (_admin, mut bo, room_id) = room_with_member(&app).await;
    let vr = start(&mut bo, &room_id).await;
    let g = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let ice = g["self"]["iceServers"].as_array().unwrap();
    assert_eq!(ice.len(), 2);
    assert_eq!(ice[0], json!({"urls": ["stun:stun.example.test:3478"]}));
    assert_eq!(
        ice[1]["urls"],
        json!([
            "turn:turn.example.test:3478?transport=udp",
            "turns:turn.example.test:5349"
        ])
    );
    let username = ice[1]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, bo.user_id.as_str());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry > now + 590 && expiry <= now + 601,
        "{expiry} vs {now}"
    );
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(TURN_SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(ice[1]["credential"], expected.as_str());
}
