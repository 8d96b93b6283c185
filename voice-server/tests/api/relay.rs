//! The signaling relay (self-hosted only): what passes, and every refusal.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{approve, room_with_member, spawn_app, spawn_app_with, Client, TestApp};

/// A voice room with Ada (master, first) and Bo (joined second), each with its token.
struct Mesh {
    ada: Client,
    bo: Client,
    room_id: String,
    vr: String,
    ada_token: String,
    bo_token: String,
}

async fn mesh(app: &TestApp) -> Mesh {
    let (mut ada, mut bo, room_id) = room_with_member(app).await;
    let vr = ada.ok("createVoiceRoom", json!({"roomId": room_id})).await["voiceRoomId"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada_token = token(&mut ada, &vr).await;
    let bo_token = token(&mut bo, &vr).await;
    ada.clear_events();
    bo.clear_events();
    Mesh {
        ada,
        bo,
        room_id,
        vr,
        ada_token,
        bo_token,
    }
}

async fn token(c: &mut Client, vr: &str) -> String {
    let g = c
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    g["credentials"]["token"].as_str().unwrap().to_owned()
}

fn signal(vr: &str, token: &str, to: &str, kind: &str, payload: Value) -> Value {
    json!({"voiceRoomId": vr, "token": token, "to": to, "kind": kind, "payload": payload})
}

fn offer() -> Value {
    json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"})
}

#[tokio::test]
async fn offers_answers_and_candidates_flow_along_the_mesh() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        vr,
        ada_token,
        bo_token,
        ..
    } = mesh(&app).await;

    // Bo joined later: Bo (viewer on Ada's channel) offers, Ada (master) answers.
    let d = bo
        .ok(
            "signal",
            signal(&vr, &bo_token, &ada.user_id, "offer", offer()),
        )
        .await;
    assert_eq!(d, json!({}));
    let ev = ada.event("signal").await;
    assert_eq!(
        ev,
        json!({"type": "event", "event": "signal", "voiceRoomId": vr, "from": bo.user_id, "kind": "offer", "payload": offer()})
    );

    let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
    ada.ok(
        "signal",
        signal(&vr, &ada_token, &bo.user_id, "answer", answer.clone()),
    )
    .await;
    let ev = bo.event("signal").await;
    assert_eq!(ev["from"], ada.user_id.as_str());
    assert_eq!(ev["kind"], "answer");
    assert_eq!(ev["payload"], answer);

    let cand = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    ada.ok(
        "signal",
        signal(&vr, &ada_token, &bo.user_id, "candidate", cand.clone()),
    )
    .await;
    assert_eq!(bo.event("signal").await["payload"], cand);
    bo.ok(
        "signal",
        signal(&vr, &bo_token, &ada.user_id, "candidate", cand.clone()),
    )
    .await;
    let ev = ada.event("signal").await;
    assert_eq!(
        (ev["kind"].as_str(), ev["from"].as_str()),
        (Some("candidate"), Some(bo.user_id.as_str()))
    );
}

#[tokio::test]
async fn offers_and_answers_in_the_wrong_direction_are_refused() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        vr,
        ada_token,
        bo_token,
        ..
    } = mesh(&app).await;
    // Ada is master of the Ada–Bo link: she may not offer, Bo may not answer.
    assert_eq!(
        ada.err(
            "signal",
            signal(&vr, &ada_token, &bo.user_id, "offer", offer())
        )
        .await,
        "NOT_PEER"
    );
    assert_eq!(
        bo.err(
            "signal",
            signal(
                &vr,
                &bo_token,
                &ada.user_id,
                "answer",
                json!({"type": "answer", "sdp": ""})
            )
        )
        .await,
        "NOT_PEER"
    );
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &bo_token, &ada.user_id, "hello", json!({}))
        )
        .await,
        "BAD_REQUEST"
    );
    ada.no_event("signal", Duration::from_millis(50)).await;
    bo.no_event("signal", Duration::from_millis(10)).await;
}

#[tokio::test]
async fn signals_outside_the_mesh_are_refused() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        room_id,
        vr,
        bo_token,
        ..
    } = mesh(&app).await;
    // Cy is an approved member of the chat room but not in the voice room.
    let mut cy = app.user("Cy").await;
    approve(&mut ada, &mut cy, &room_id).await;
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &bo_token, &cy.user_id, "candidate", json!({}))
        )
        .await,
        "NOT_PEER"
    );
    // To oneself.
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &bo_token, &bo.user_id, "candidate", json!({}))
        )
        .await,
        "NOT_PEER"
    );
    // To someone unknown.
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &bo_token, "nobody", "candidate", json!({}))
        )
        .await,
        "NOT_PEER"
    );
    // After Bo left the voice room, its still-valid token does not make it a peer.
    bo.ok("leaveVoiceRoom", json!({"voiceRoomId": vr})).await;
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &bo_token, &ada.user_id, "offer", offer())
        )
        .await,
        "NOT_PEER"
    );
    // A second tab of a participant is not the participant's connection.
    let ada_resume = ada.ok("hello", json!({"name": "Ada"})).await["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada_token = token(&mut ada, &vr).await;
    let mut ada2 = app.connect().await;
    ada2.ok("hello", json!({"name": "Ada", "resumeToken": ada_resume}))
        .await;
    let bo_token = token(&mut bo, &vr).await;
    assert_eq!(
        ada2.err(
            "signal",
            signal(&vr, &ada_token, &bo.user_id, "candidate", json!({}))
        )
        .await,
        "NOT_PEER"
    );
    // Not identified at all.
    let mut anon = app.connect().await;
    assert_eq!(
        anon.err(
            "signal",
            signal(&vr, &bo_token, &ada.user_id, "offer", offer())
        )
        .await,
        "NOT_IDENTIFIED"
    );
    ada.no_event("signal", Duration::from_millis(50)).await;
    cy.no_event("signal", Duration::from_millis(10)).await;
}

#[tokio::test]
async fn forged_tampered_and_borrowed_tokens_are_unauthorized() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        room_id,
        vr,
        ada_token,
        bo_token,
    } = mesh(&app).await;

    // Garbage and a tampered signature.
    for bad in ["", "abc", "a.b.c", &format!("{bo_token}x")] {
        assert_eq!(
            bo.err("signal", signal(&vr, bad, &ada.user_id, "offer", offer()))
                .await,
            "UNAUTHORIZED",
            "token {bad:?}"
        );
    }
    // Tampered claims: Bo rewrites its grants to claim MASTER on Ada's channel, keeps the signature.
    let (payload, sig) = bo_token.split_once('.').unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["userId"], bo.user_id.as_str());
    assert_eq!(claims["voiceRoomId"], vr.as_str());
    assert!(claims["exp"].as_u64().is_some());
    claims["grants"][1]["role"] = json!("MASTER");
    let forged = format!(
        "{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &forged, &ada.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    // Signed with another key (another server's token).
    let other = spawn_app_with(|c| {
        c.token_secret = Some(voice_domain::ports::Secret::new(
            "a-different-secret-0123456789",
        ))
    })
    .await;
    let foreign = {
        let Mesh { bo_token, .. } = mesh(&other).await;
        bo_token
    };
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &foreign, &ada.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    // Another user's token (Bo presents Ada's).
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &ada_token, &ada.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    // Cy joins third: her token grants VIEWER on Ada's channel, exactly what Bo's link to Ada
    // needs, but it is Cy's.
    let mut cy = app.user("Cy").await;
    approve(&mut ada, &mut cy, &room_id).await;
    let cy_token = token(&mut cy, &vr).await;
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &cy_token, &ada.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    ada.no_event("signal", Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_token_for_another_voice_room_is_unauthorized() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        vr,
        ..
    } = mesh(&app).await;
    // A second chat room with its own voice room, same two people.
    let room2 = ada.ok("createRoom", json!({"name": "Second"})).await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    approve(&mut ada, &mut bo, &room2).await;
    let vr2 = ada.ok("createVoiceRoom", json!({"roomId": room2})).await["voiceRoomId"]
        .as_str()
        .unwrap()
        .to_owned();
    let bo_token2 = token(&mut bo, &vr2).await;
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &bo_token2, &ada.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    // Yet the right room works with it.
    bo.ok(
        "signal",
        signal(&vr2, &bo_token2, &ada.user_id, "offer", offer()),
    )
    .await;
    let ev = ada.event("signal").await;
    assert_eq!(ev["voiceRoomId"], vr2.as_str());
}

#[tokio::test]
async fn expired_tokens_are_unauthorized_until_refreshed() {
    let app = spawn_app_with(|c| c.credential_ttl = Duration::from_secs(1)).await;
    let Mesh {
        mut ada,
        mut bo,
        vr,
        ..
    } = mesh(&app).await;
    let stale = token(&mut bo, &vr).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        bo.err(
            "signal",
            signal(&vr, &stale, &ada.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    ada.no_event("signal", Duration::from_millis(20)).await;
    let fresh = token(&mut bo, &vr).await;
    bo.ok(
        "signal",
        signal(&vr, &fresh, &ada.user_id, "offer", offer()),
    )
    .await;
    assert_eq!(ada.event("signal").await["kind"], "offer");
}

#[tokio::test]
async fn oversized_payloads_and_frames_are_refused() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        vr,
        bo_token,
        ..
    } = mesh(&app).await;
    let big = json!({"type": "offer", "sdp": "a".repeat(11 * 1024)});
    assert_eq!(
        bo.err("signal", signal(&vr, &bo_token, &ada.user_id, "offer", big))
            .await,
        "TOO_LARGE"
    );
    ada.no_event("signal", Duration::from_millis(20)).await;
    // Just under the limit passes; the connection is still usable.
    let fits = json!({"sdp": "a".repeat(10 * 1024 - 20)});
    bo.ok(
        "signal",
        signal(&vr, &bo_token, &ada.user_id, "offer", fits),
    )
    .await;
    assert_eq!(ada.event("signal").await["kind"], "offer");

    // A frame over 64 KiB closes the connection; the voice room notices the disconnect.
    let huge = json!({"action": "listRooms", "pad": "x".repeat(70 * 1024)}).to_string();
    bo.send_text(huge).await;
    let _ = bo.closed().await;
    let ev = ada.event("participantReconnecting").await;
    assert_eq!(ev["user"], bo.user_id.as_str());
}

#[tokio::test]
async fn a_token_from_an_earlier_plan_does_not_grant_the_new_link() {
    let app = spawn_app().await;
    let Mesh {
        mut ada,
        mut bo,
        vr,
        ada_token,
        ..
    } = mesh(&app).await;
    // Ada leaves and joins again: now she is the later joiner, a viewer on Bo's channel. Her old
    // token only grants MASTER on her old channel.
    ada.ok("leaveVoiceRoom", json!({"voiceRoomId": vr})).await;
    let fresh = token(&mut ada, &vr).await;
    assert_ne!(fresh, ada_token);
    assert_eq!(
        ada.err(
            "signal",
            signal(&vr, &ada_token, &bo.user_id, "offer", offer())
        )
        .await,
        "UNAUTHORIZED"
    );
    bo.no_event("signal", Duration::from_millis(20)).await;
    ada.ok("signal", signal(&vr, &fresh, &bo.user_id, "offer", offer()))
        .await;
    assert_eq!(bo.event("signal").await["from"], ada.user_id.as_str());
}

/// After a resume the participant's connection is the new one: it signals along the mesh, and
/// the connection it replaced is refused, even while that one is still open.
#[tokio::test]
async fn a_resumed_participant_signals_from_its_new_connection_and_the_old_one_is_refused() {
    let app = spawn_app().await;
    let mut ada = app.user("Ada").await;
    let mut bo = app.connect().await;
    let bo_resume = bo.ok("hello", json!({"name": "Bo"})).await;
    bo.user_id = bo_resume["userId"].as_str().unwrap().to_owned();
    let room_id = ada.ok("createRoom", json!({"name": "General"})).await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    approve(&mut ada, &mut bo, &room_id).await;
    let vr = ada.ok("createVoiceRoom", json!({"roomId": room_id})).await["voiceRoomId"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada_token = token(&mut ada, &vr).await;
    let old_token = token(&mut bo, &vr).await;
    ada.clear_events();

    // Bo's page opens a new connection (the server has not noticed the old one drop).
    let mut bo2 = app.connect().await;
    let d = bo2
        .ok(
            "hello",
            json!({"name": "Bo", "resumeToken": bo_resume["resumeToken"]}),
        )
        .await;
    assert_eq!(d["userId"], bo.user_id.as_str());
    bo2.user_id = bo.user_id.clone();
    let new_token = token(&mut bo2, &vr).await;
    assert_eq!(
        ada.event("participantResumed").await["user"],
        bo.user_id.as_str()
    );

    // The old connection, even with a valid token, may no longer signal for Bo.
    let reply = bo
        .request(
            "signal",
            signal(&vr, &old_token, &ada.user_id, "offer", offer()),
        )
        .await;
    assert_eq!(reply["error"]["code"], "NOT_PEER", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resumed"),
        "{reply}"
    );
    assert_eq!(
        bo.err("leaveVoiceRoom", json!({"voiceRoomId": vr})).await,
        "NOT_PARTICIPANT"
    );
    ada.no_event("signal", Duration::from_millis(20)).await;
    // The new one does, both ways.
    bo2.ok(
        "signal",
        signal(&vr, &new_token, &ada.user_id, "offer", offer()),
    )
    .await;
    let ev = ada.event("signal").await;
    assert_eq!(ev["from"], bo.user_id.as_str());
    ada.ok(
        "signal",
        signal(
            &vr,
            &ada_token,
            &bo.user_id,
            "answer",
            json!({"type": "answer", "sdp": "v=0"}),
        ),
    )
    .await;
    assert_eq!(bo2.event("signal").await["kind"], "answer");
    bo.no_event("signal", Duration::ZERO).await;
}
