//! Moderation by a chat room's admin: remove a member (they may ask again) or ban one (they
//! may not, until unbanned). A removed member leaves the room's voice at once and their old
//! voice token stops relaying.

use std::time::Duration;

use serde_json::json;

use crate::support::{approve, room_with_member, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_removed_member_is_told_leaves_voice_and_may_ask_again() {
    let app = spawn_app().await;
    let (mut ada, mut bo, room_id) = room_with_member(&app).await;
    let mut cy = app.user("Cy").await;
    approve(&mut ada, &mut cy, &room_id).await;

    // Ada starts voice, Bo joins it.
    let view = ada.ok("createVoiceRoom", json!({"roomId": room_id})).await;
    let vr = view["voiceRoomId"].as_str().unwrap().to_owned();
    ada.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let grant = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let token = grant["credentials"]["token"].as_str().unwrap().to_owned();
    ada.clear_events();
    cy.clear_events();

    // Only the admin may remove, and not themselves.
    assert_eq!(
        cy.err(
            "removeMember",
            json!({"roomId": room_id, "userId": bo.user_id})
        )
        .await,
        "NOT_ADMIN"
    );
    assert_eq!(
        ada.err(
            "removeMember",
            json!({"roomId": room_id, "userId": ada.user_id})
        )
        .await,
        "BAD_REQUEST"
    );

    let d = ada
        .ok(
            "removeMember",
            json!({"roomId": room_id, "userId": bo.user_id}),
        )
        .await;
    assert_eq!(d["state"], "none");
    assert_eq!(d["banned"], false);
    let expected = json!({"type": "event", "event": "memberRemoved", "roomId": room_id, "userId": bo.user_id, "banned": false});
    for c in [&mut ada, &mut bo, &mut cy] {
        assert_eq!(c.event("memberRemoved").await, expected);
    }
    // Out of voice at once, as a normal leave.
    for c in [&mut ada, &mut cy] {
        let ev = c.event("participantLeft").await;
        assert_eq!(ev["user"], bo.user_id.as_str());
    }
    let got = ada.ok("getVoiceRoom", json!({"roomId": room_id})).await;
    let parts = got["voiceRoom"]["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{got}");
    // The old voice token relays nothing any more.
    let signal = bo
        .request(
            "signal",
            json!({"voiceRoomId": vr, "token": token, "to": ada.user_id, "kind": "offer", "payload": {"sdp": "v=0"}}),
        )
        .await;
    assert_eq!(signal["ok"], false, "{signal}");
    ada.no_event("signal", Duration::from_millis(100)).await;
    // Nothing of the room is Bo's now; asking again is allowed.
    assert_eq!(
        bo.err("getVoiceCredentials", json!({"voiceRoomId": vr}))
            .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        bo.err("sendMessage", json!({"roomId": room_id, "text": "hi"}))
            .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        bo.ok("requestJoin", json!({"roomId": room_id})).await["state"],
        "pending"
    );
}

#[tokio::test]
async fn a_banned_user_may_not_ask_again_until_unbanned() {
    let app = spawn_app().await;
    let (mut ada, mut bo, room_id) = room_with_member(&app).await;
    let d = ada
        .ok(
            "banMember",
            json!({"roomId": room_id, "userId": bo.user_id}),
        )
        .await;
    assert_eq!(d["banned"], true);
    let ev = bo.event("memberRemoved").await;
    assert_eq!(ev["banned"], true);
    let refused = bo.request("requestJoin", json!({"roomId": room_id})).await;
    assert_eq!(refused["error"]["code"], "BANNED", "{refused}");
    assert_eq!(refused["error"]["retryable"], false);
    assert_eq!(
        bo.err(
            "unbanMember",
            json!({"roomId": room_id, "userId": bo.user_id})
        )
        .await,
        "NOT_ADMIN"
    );

    // A pending requester can be banned too, and a ban can be lifted.
    let mut cy = app.user("Cy").await;
    cy.ok("requestJoin", json!({"roomId": room_id})).await;
    ada.ok(
        "banMember",
        json!({"roomId": room_id, "userId": cy.user_id}),
    )
    .await;
    assert_eq!(
        cy.err("requestJoin", json!({"roomId": room_id})).await,
        "BANNED"
    );
    let d = ada
        .ok(
            "unbanMember",
            json!({"roomId": room_id, "userId": bo.user_id}),
        )
        .await;
    assert_eq!(d["wasBanned"], true);
    assert_eq!(
        bo.ok("requestJoin", json!({"roomId": room_id})).await["state"],
        "pending"
    );
    assert_eq!(
        cy.err("requestJoin", json!({"roomId": room_id})).await,
        "BANNED",
        "unbanning one user leaves the others banned"
    );
}

/// Issue 13: a ban may name someone who is not a member, so an admin banning made-up user ids
/// in a loop made the server store a ban row per frame, without end. Now only a user who has
/// signed in can be banned (`BAD_REQUEST` in plain words, nothing stored), and a room holds at
/// most `--max-bans-per-room` bans (`QUOTA_EXCEEDED`; a re-ban and a plain removal still work,
/// an unban frees a place).
#[tokio::test]
async fn bans_of_made_up_ids_are_refused_and_bans_per_room_are_capped() {
    let app = spawn_app_with(|c| {
        c.chat_limits = chat_domain::ChatLimits {
            bans_per_room: 3,
            ..chat_domain::ChatLimits::default()
        };
    })
    .await;
    let (mut ada, mut bo, room_id) = room_with_member(&app).await;

    // The attack: made-up ids in a loop. Each is refused and none is stored.
    for i in 0..40 {
        let fake = format!("made-up-{i}");
        let refused = ada
            .request("banMember", json!({"roomId": room_id, "userId": fake}))
            .await;
        assert_eq!(refused["error"]["code"], "BAD_REQUEST", "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("signed in")),
            "{refused}"
        );
    }
    let d = ada
        .ok(
            "unbanMember",
            json!({"roomId": room_id, "userId": "made-up-0"}),
        )
        .await;
    assert_eq!(d["wasBanned"], false, "a refused ban stores nothing");

    // Real users who are not members may still be banned before they ask (a pre-emptive
    // ban), up to the limit.
    let mut cy = app.user("Cy").await;
    let di = app.user("Di").await;
    let ed = app.user("Ed").await;
    for who in [&cy.user_id, &di.user_id, &ed.user_id] {
        ada.ok("banMember", json!({"roomId": room_id, "userId": who}))
            .await;
    }
    let refused = ada
        .request(
            "banMember",
            json!({"roomId": room_id, "userId": bo.user_id}),
        )
        .await;
    assert_eq!(refused["error"]["code"], "QUOTA_EXCEEDED", "{refused}");
    assert_eq!(refused["error"]["retryable"], false);
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 bans") && m.contains("unban")),
        "{refused}"
    );
    // The refused ban changed nothing: Bo is still a member.
    bo.ok(
        "sendMessage",
        json!({"roomId": room_id, "text": "still here"}),
    )
    .await;
    // At the limit a re-ban is no new ban, and removing without a ban is no ban at all.
    ada.ok(
        "banMember",
        json!({"roomId": room_id, "userId": cy.user_id}),
    )
    .await;
    ada.ok(
        "removeMember",
        json!({"roomId": room_id, "userId": bo.user_id}),
    )
    .await;
    // An unban frees a place.
    let d = ada
        .ok(
            "unbanMember",
            json!({"roomId": room_id, "userId": cy.user_id}),
        )
        .await;
    assert_eq!(d["wasBanned"], true);
    ada.ok(
        "banMember",
        json!({"roomId": room_id, "userId": bo.user_id}),
    )
    .await;
    assert_eq!(
        bo.err("requestJoin", json!({"roomId": room_id})).await,
        "BANNED"
    );
    assert_eq!(
        cy.ok("requestJoin", json!({"roomId": room_id})).await["state"],
        "pending"
    );
}
