//! The chat part of the protocol (self-hosted only).

use std::time::Duration;

use serde_json::json;

use crate::support::{room_with_member, spawn_app, spawn_app_with};

#[tokio::test]
async fn hello_must_come_first_and_identifies_the_connection() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    assert_eq!(c.err("listRooms", json!({})).await, "NOT_IDENTIFIED");
    assert_eq!(
        c.err("createRoom", json!({"name": "x"})).await,
        "NOT_IDENTIFIED"
    );
    assert_eq!(
        c.err("createVoiceRoom", json!({"roomId": "r"})).await,
        "NOT_IDENTIFIED"
    );
    assert_eq!(c.err("hello", json!({"name": "   "})).await, "BAD_REQUEST");
    assert_eq!(c.err("hello", json!({})).await, "BAD_REQUEST");
    // Invisible and text-direction characters would let one name pass for another.
    assert_eq!(
        c.err("hello", json!({"name": "victim\u{200B}"})).await,
        "BAD_REQUEST"
    );
    assert_eq!(
        c.err("hello", json!({"name": "\u{3164}"})).await,
        "BAD_REQUEST"
    );
    assert_eq!(
        c.err("hello", json!({"name": "x".repeat(65)})).await,
        "TOO_LARGE"
    );
    let d = c.ok("hello", json!({"name": "  Ada "})).await;
    assert_eq!(d["name"], "Ada");
    let user_id = d["userId"].as_str().unwrap().to_owned();
    assert!(!user_id.is_empty());
    assert!(d["connectionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(d["resumed"], false);
    assert_eq!(
        c.ok("listRooms", json!({})).await,
        json!({"rooms": [], "nextCursor": null})
    );

    // A reloaded page sends its resume token back and stays the same user.
    let token = d["resumeToken"].as_str().unwrap().to_owned();
    let mut again = app.connect().await;
    let d2 = again
        .ok("hello", json!({"name": "Ada", "resumeToken": token}))
        .await;
    assert_eq!(d2["userId"], user_id.as_str());
    assert_eq!(d2["resumed"], true);
    assert_ne!(d2["connectionId"], d["connectionId"]);
    // A forged one is ignored: a new user.
    let mut other = app.connect().await;
    let d3 = other
        .ok(
            "hello",
            json!({"name": "Eve", "resumeToken": format!("{token}x")}),
        )
        .await;
    assert_ne!(d3["userId"], user_id.as_str());
    assert_eq!(d3["resumed"], false);
}

#[tokio::test]
async fn rooms_join_requests_approval_and_denial() {
    let app = spawn_app().await;
    let mut admin = app.user("Ada").await;
    let mut bo = app.user("Bo").await;
    let mut cy = app.user("Cy").await;

    let room = admin.ok("createRoom", json!({"name": "General"})).await;
    let room_id = room["roomId"].as_str().unwrap().to_owned();
    assert_eq!(room["name"], "General");
    assert_eq!(
        admin.err("createRoom", json!({"name": "general"})).await,
        "ROOM_EXISTS"
    );

    let rooms = bo.ok("listRooms", json!({})).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"roomId": room_id, "name": "General", "adminUserId": admin.user_id,
                "memberCount": 1, "myState": "none", "voiceRoomId": null}])
    );
    assert_eq!(
        bo.err("requestJoin", json!({"roomId": "no-such-room"}))
            .await,
        "CHAT_ROOM_NOT_FOUND"
    );
    assert_eq!(
        bo.err("requestJoin", json!({"roomId": ""})).await,
        "BAD_REQUEST"
    );

    let d = bo.ok("requestJoin", json!({"roomId": room_id})).await;
    assert_eq!(d, json!({"state": "pending"}));
    let ev = admin.event("joinRequested").await;
    assert_eq!(
        ev,
        json!({"type": "event", "event": "joinRequested", "roomId": room_id, "userId": bo.user_id, "name": "Bo"})
    );
    assert_eq!(
        bo.ok("listRooms", json!({})).await["rooms"][0]["myState"],
        "pending"
    );
    // Only the admin decides.
    assert_eq!(
        cy.err(
            "approveJoin",
            json!({"roomId": room_id, "userId": bo.user_id})
        )
        .await,
        "NOT_ADMIN"
    );
    assert_eq!(
        admin
            .err(
                "approveJoin",
                json!({"roomId": room_id, "userId": cy.user_id})
            )
            .await,
        "NO_PENDING_REQUEST"
    );
    let d = admin
        .ok(
            "approveJoin",
            json!({"roomId": room_id, "userId": bo.user_id}),
        )
        .await;
    assert_eq!(d["state"], "approved");
    let bo_id = bo.user_id.clone();
    let ev = bo.event("joinApproved").await;
    assert_eq!(ev["roomId"], room_id.as_str());
    assert_eq!(ev["userId"], bo.user_id.as_str());
    for c in [&mut admin, &mut bo] {
        let ev = c.event("memberJoined").await;
        assert_eq!(
            ev,
            json!({"type": "event", "event": "memberJoined", "roomId": room_id, "userId": bo_id, "name": "Bo"})
        );
    }
    assert_eq!(
        admin
            .err(
                "approveJoin",
                json!({"roomId": room_id, "userId": bo.user_id})
            )
            .await,
        "NO_PENDING_REQUEST"
    );

    // Cy asks and is denied.
    cy.ok("requestJoin", json!({"roomId": room_id})).await;
    admin.event("joinRequested").await;
    let members = bo.ok("listMembers", json!({"roomId": room_id})).await["members"].clone();
    assert_eq!(
        members,
        json!([
            {"userId": admin.user_id, "name": "Ada", "state": "approved", "isAdmin": true, "online": true},
            {"userId": bo.user_id, "name": "Bo", "state": "approved", "isAdmin": false, "online": true},
            {"userId": cy.user_id, "name": "Cy", "state": "pending", "isAdmin": false, "online": true},
        ])
    );
    assert_eq!(
        cy.err("listMembers", json!({"roomId": room_id})).await,
        "NOT_APPROVED"
    );
    let d = admin
        .ok("denyJoin", json!({"roomId": room_id, "userId": cy.user_id}))
        .await;
    assert_eq!(d["state"], "none");
    let ev = cy.event("joinDenied").await;
    assert_eq!(ev["userId"], cy.user_id.as_str());
    assert_eq!(
        cy.err("listMembers", json!({"roomId": room_id})).await,
        "NOT_MEMBER"
    );
    let rooms = admin.ok("listRooms", json!({})).await;
    assert_eq!(rooms["rooms"][0]["memberCount"], 2);
    assert_eq!(rooms["rooms"][0]["myState"], "approved");

    // Bo goes offline: the member list says so.
    bo.abort();
    let mut offline = false;
    for _ in 0..50 {
        let members = admin.ok("listMembers", json!({"roomId": room_id})).await["members"].clone();
        if members[1]["online"] == false {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offline, "a closed connection is no longer online");
}

#[tokio::test]
async fn messages_reach_approved_members_only() {
    let app = spawn_app().await;
    let (mut admin, mut bo, room_id) = room_with_member(&app).await;
    let mut pending = app.user("Pat").await;
    pending.ok("requestJoin", json!({"roomId": room_id})).await;
    let mut outsider = app.user("Out").await;

    assert_eq!(
        pending
            .err("sendMessage", json!({"roomId": room_id, "text": "hi"}))
            .await,
        "NOT_APPROVED"
    );
    assert_eq!(
        outsider
            .err("sendMessage", json!({"roomId": room_id, "text": "hi"}))
            .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        outsider
            .err("getMessages", json!({"roomId": room_id}))
            .await,
        "NOT_MEMBER"
    );
    assert_eq!(
        bo.err("sendMessage", json!({"roomId": room_id, "text": "  "}))
            .await,
        "BAD_REQUEST"
    );
    assert_eq!(
        bo.err(
            "sendMessage",
            json!({"roomId": room_id, "text": "x".repeat(2001)})
        )
        .await,
        "TOO_LARGE"
    );

    let sent = bo
        .ok(
            "sendMessage",
            json!({"roomId": room_id, "text": "hello all"}),
        )
        .await;
    assert_eq!(sent["text"], "hello all");
    assert_eq!(sent["userId"], bo.user_id.as_str());
    assert!(sent["at"].as_u64().is_some_and(|t| t > 1_600_000_000_000));
    for c in [&mut admin, &mut bo] {
        let ev = c.event("message").await;
        assert_eq!(ev["roomId"], room_id.as_str());
        assert_eq!(ev["name"], "Bo");
        assert_eq!(ev["text"], "hello all");
        assert_eq!(ev["at"], sent["at"]);
    }
    pending
        .no_event("message", Duration::from_millis(100))
        .await;
    outsider
        .no_event("message", Duration::from_millis(10))
        .await;

    for i in 0..105 {
        admin
            .ok(
                "sendMessage",
                json!({"roomId": room_id, "text": format!("m{i}")}),
            )
            .await;
    }
    let msgs = bo.ok("getMessages", json!({"roomId": room_id})).await["messages"].clone();
    let msgs = msgs.as_array().unwrap();
    assert_eq!(msgs.len(), 100);
    assert_eq!(msgs[0]["text"], "m5");
    assert_eq!(msgs[99]["text"], "m104");
}

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let mut c = app.user("Ada").await;

    c.send_text("{not json").await;
    let r = c.next_reply().await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["error"]["code"], "BAD_REQUEST");

    c.send_text(r#"{"requestId":"x1"}"#).await;
    let r = c.next_reply().await;
    assert_eq!(
        (r["requestId"].as_str(), r["error"]["code"].as_str()),
        (Some("x1"), Some("BAD_REQUEST"))
    );

    c.send_text("[1,2]").await;
    assert_eq!(c.next_reply().await["error"]["code"], "BAD_REQUEST");

    c.send_binary(vec![1, 2, 3]).await;
    assert_eq!(c.next_reply().await["error"]["code"], "BAD_REQUEST");

    assert_eq!(c.err("fly", json!({})).await, "UNKNOWN_ACTION");
    assert_eq!(c.err("createRoom", json!({"name": 5})).await, "BAD_REQUEST");
    assert_eq!(
        c.err("setMute", json!({"voiceRoomId": "v"})).await,
        "BAD_REQUEST"
    );
    assert_eq!(
        c.err("getVoiceCredentials", json!({"voiceRoomId": ""}))
            .await,
        "BAD_REQUEST"
    );
    assert_eq!(
        c.err("approveJoin", json!({"roomId": "r", "userId": "a b"}))
            .await,
        "BAD_REQUEST"
    );

    // Still usable.
    let d = c.ok("createRoom", json!({"name": "After errors"})).await;
    assert_eq!(d["name"], "After errors");
}

#[tokio::test]
async fn a_flooding_connection_is_rate_limited_without_being_dropped() {
    let app = spawn_app_with(|c| {
        c.rate_limit = voice_server::RateLimit {
            burst: 5,
            per_second: 1.0,
        }
    })
    .await;
    let mut c = app.connect().await;
    for i in 0..8 {
        c.send_text(json!({"action": "listRooms", "requestId": format!("f{i}")}).to_string())
            .await;
    }
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = c.next_reply().await;
        codes.push(r["error"]["code"].as_str().unwrap_or("ok").to_owned());
        if r["error"]["code"] == "RATE_LIMITED" {
            assert_eq!(r["error"]["retryable"], true);
            assert!(r["requestId"]
                .as_str()
                .is_some_and(|id| id.starts_with('f')));
        }
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "NOT_IDENTIFIED").count(),
        5,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "RATE_LIMITED").count(),
        3,
        "{codes:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.err("listRooms", json!({})).await, "NOT_IDENTIFIED");
}

#[tokio::test]
async fn a_second_tab_of_the_same_user_hears_events_too() {
    let app = spawn_app().await;
    let (mut admin, mut bo, room_id) = room_with_member(&app).await;
    let bo_token = bo.ok("hello", json!({"name": "Bo"})).await["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bo2 = app.connect().await;
    bo2.ok("hello", json!({"name": "Bo", "resumeToken": bo_token}))
        .await;
    admin
        .ok(
            "sendMessage",
            json!({"roomId": room_id, "text": "both tabs"}),
        )
        .await;
    assert_eq!(bo.event("message").await["text"], "both tabs");
    assert_eq!(bo2.event("message").await["text"], "both tabs");
}

#[tokio::test]
async fn a_new_room_is_pushed_to_every_identified_connection() {
    let app = spawn_app().await;
    let mut ada = app.user("Ada").await;
    let mut bo = app.user("Bo").await;
    let mut anonymous = app.connect().await;
    let ada_id = ada.user_id.clone();
    let room = ada.ok("createRoom", json!({"name": "Live"})).await;
    for c in [&mut ada, &mut bo] {
        let e = c.event("roomCreated").await;
        assert_eq!(e["roomId"], room["roomId"]);
        assert_eq!(e["name"], "Live");
        assert_eq!(e["adminUserId"], ada_id.as_str());
    }
    anonymous
        .no_event("roomCreated", Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn members_hear_when_someone_comes_online_and_goes_offline() {
    let app = spawn_app().await;
    let (mut admin, member, room_id) = room_with_member(&app).await;
    let member_id = member.user_id.clone();
    let mut outsider = app.user("Cy").await;
    admin.clear_events();
    // The member's only connection closes: the admin hears "offline"; an outsider nothing.
    member.abort();
    let e = admin.event("presenceChanged").await;
    assert_eq!(
        (e["userId"].as_str(), e["online"].as_bool()),
        (Some(member_id.as_str()), Some(false))
    );
    // A second connection of the admin does not make the admin "come online" again.
    let mut again = app.connect().await;
    let resume = admin.ok("hello", json!({"name": "Ada"})).await["resumeToken"].clone();
    again
        .ok("hello", json!({"name": "Ada", "resumeToken": resume}))
        .await;
    admin
        .no_event("presenceChanged", Duration::from_millis(300))
        .await;
    outsider
        .no_event("presenceChanged", Duration::from_millis(100))
        .await;
    let members = admin.ok("listMembers", json!({"roomId": room_id})).await;
    let row = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["userId"] == member_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["online"], false);
}

/// One user (or a script with many throw-away users) cannot make the server store rooms and
/// join requests without end: each quota refuses with `QUOTA_EXCEEDED` in plain words, and
/// what frees it (an answer from the admin) frees it.
#[tokio::test]
async fn quotas_bound_rooms_and_waiting_join_requests() {
    let app = spawn_app_with(|c| {
        c.chat_limits = chat_domain::ChatLimits {
            rooms_per_user: 2,
            pending_per_room: 2,
            pending_per_user: 2,
            ..chat_domain::ChatLimits::default()
        };
    })
    .await;
    let mut ada = app.user("Ada").await;
    let mut rooms = Vec::new();
    for name in ["One", "Two"] {
        let r = ada.ok("createRoom", json!({ "name": name })).await;
        rooms.push(r["roomId"].as_str().unwrap().to_owned());
    }
    let refused = ada.request("createRoom", json!({"name": "Three"})).await;
    assert_eq!(refused["error"]["code"], "QUOTA_EXCEEDED", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 chat rooms")),
        "{refused}"
    );
    assert_eq!(refused["error"]["retryable"], false);
    let listed = ada.ok("listRooms", json!({})).await;
    assert_eq!(
        listed["rooms"].as_array().unwrap().len(),
        2,
        "nothing stored"
    );

    // Another user's rooms count for them, not for Ada.
    let mut bo = app.user("Bo").await;
    let third = bo.ok("createRoom", json!({"name": "Three"})).await;
    let third = third["roomId"].as_str().unwrap().to_owned();

    // Per room: two requests wait, the third requester is refused until the admin answers.
    let mut cy = app.user("Cy").await;
    let mut di = app.user("Di").await;
    let mut ed = app.user("Ed").await;
    assert_eq!(
        cy.ok("requestJoin", json!({"roomId": rooms[0]})).await["state"],
        "pending"
    );
    di.ok("requestJoin", json!({"roomId": rooms[0]})).await;
    assert_eq!(
        ed.err("requestJoin", json!({"roomId": rooms[0]})).await,
        "QUOTA_EXCEEDED"
    );
    // Asking again while pending is not a new request: never refused.
    cy.ok("requestJoin", json!({"roomId": rooms[0]})).await;
    let cy_id = cy.user_id.clone();
    ada.ok("denyJoin", json!({"roomId": rooms[0], "userId": cy_id}))
        .await;
    ed.ok("requestJoin", json!({"roomId": rooms[0]})).await;

    // Per user: Ed has one waiting; a second is fine, a third is refused.
    ed.ok("requestJoin", json!({"roomId": rooms[1]})).await;
    let refused = ed.request("requestJoin", json!({"roomId": third})).await;
    assert_eq!(refused["error"]["code"], "QUOTA_EXCEEDED", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 join requests waiting")),
        "{refused}"
    );
}

/// Resume tokens expire (sliding: each hello issues a fresh one) and `signOutEverywhere`
/// revokes every token the user holds: a leaked token is not a permanent takeover.
#[tokio::test]
async fn resume_tokens_expire_and_sign_out_everywhere_revokes_them() {
    let app = spawn_app().await;
    let mut ada = app.connect().await;
    let d = ada.ok("hello", json!({"name": "Ada"})).await;
    let first = d["resumeToken"].as_str().unwrap().to_owned();
    let mut tab = app.connect().await;
    let d2 = tab
        .ok("hello", json!({"name": "Ada", "resumeToken": first}))
        .await;
    assert_eq!(
        (d2["resumed"].clone(), d2["userId"].clone()),
        (json!(true), d["userId"].clone())
    );
    let second = d2["resumeToken"].as_str().unwrap().to_owned();

    ada.ok("signOutEverywhere", json!({})).await;
    for token in [first, second] {
        let mut thief = app.connect().await;
        let d3 = thief
            .ok("hello", json!({"name": "Eve", "resumeToken": token}))
            .await;
        assert_eq!(d3["resumed"], false, "a revoked token resumes nobody");
        assert_ne!(d3["userId"], d["userId"]);
    }
    // A token issued after the sign-out works.
    let fresh = ada.ok("hello", json!({"name": "Ada"})).await["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut back = app.connect().await;
    let d4 = back
        .ok("hello", json!({"name": "Ada", "resumeToken": fresh}))
        .await;
    assert_eq!(d4["userId"], d["userId"]);
    assert_eq!(d4["resumed"], true);
}

#[tokio::test]
async fn an_expired_resume_token_gets_a_new_user() {
    let app = spawn_app_with(|c| c.chat_limits.resume_ttl = Duration::from_secs(1)).await;
    let mut ada = app.connect().await;
    let d = ada.ok("hello", json!({"name": "Ada"})).await;
    let token = d["resumeToken"].as_str().unwrap().to_owned();
    // Not a timed assertion: the wait only makes sure the token is older than its 1 s life.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut later = app.connect().await;
    let d2 = later
        .ok("hello", json!({"name": "Ada", "resumeToken": token}))
        .await;
    assert_eq!(d2["resumed"], false);
    assert_ne!(d2["userId"], d["userId"]);
}

/// `listRooms`, `listMembers` and `getMessages` come in pages over a real socket: following
/// `nextCursor` lists every room and member once, pages are no longer than the page size, the
/// history pages back to the first message, and a damaged cursor is `BAD_REQUEST` in plain
/// words.
#[tokio::test]
async fn lists_come_in_pages_with_cursors() {
    let app = spawn_app_with(|c| {
        c.chat_limits = chat_domain::ChatLimits {
            rooms_page: 3,
            members_page: 2,
            history_bytes: 16 * 1024,
            ..chat_domain::ChatLimits::default()
        };
    })
    .await;
    let mut ada = app.user("Ada").await;
    let mut made = Vec::new();
    for i in 0..7 {
        let r = ada
            .ok("createRoom", json!({ "name": format!("Room {i}") }))
            .await;
        made.push(r["roomId"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor = serde_json::Value::Null;
    for _ in 0..20 {
        let page = ada.ok("listRooms", json!({ "cursor": cursor })).await;
        let rooms = page["rooms"].as_array().unwrap();
        assert!(rooms.len() <= 3, "{page}");
        seen.extend(
            rooms
                .iter()
                .map(|r| r["roomId"].as_str().unwrap().to_owned()),
        );
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    // Every room once (the order is the store's: creation order in SQLite, id order here).
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a room listed twice: {seen:?}");
    made.sort();
    assert_eq!(sorted, made);
    let small = ada.ok("listRooms", json!({ "limit": 1 })).await;
    assert_eq!(small["rooms"].as_array().unwrap().len(), 1);
    for bad in ["r.zz", "m.61", "x", "r."] {
        let refused = ada.request("listRooms", json!({ "cursor": bad })).await;
        assert_eq!(refused["error"]["code"], "BAD_REQUEST", "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("without a cursor")),
            "{refused}"
        );
    }

    // Members: Ada and three approved members, two a page.
    let room = made[0].clone();
    let mut ids = vec![ada.user_id.clone()];
    for name in ["Bo", "Cy", "Di"] {
        let mut u = app.user(name).await;
        u.ok("requestJoin", json!({ "roomId": room })).await;
        ada.ok(
            "approveJoin",
            json!({ "roomId": room, "userId": u.user_id }),
        )
        .await;
        ids.push(u.user_id.clone());
    }
    let mut listed = Vec::new();
    let mut cursor = serde_json::Value::Null;
    for _ in 0..10 {
        let page = ada
            .ok("listMembers", json!({ "roomId": room, "cursor": cursor }))
            .await;
        let members = page["members"].as_array().unwrap();
        assert!(members.len() <= 2, "{page}");
        listed.extend(
            members
                .iter()
                .map(|m| m["userId"].as_str().unwrap().to_owned()),
        );
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);

    // History: 30 messages of ~1 KB escaped each, 16 KiB a page; paging back reaches the first.
    let text: String = "\u{1}".repeat(200);
    for i in 0..30 {
        ada.ok(
            "sendMessage",
            json!({ "roomId": room, "text": format!("{i} {text}") }),
        )
        .await;
    }
    let mut history: Vec<String> = Vec::new();
    let mut cursor = serde_json::Value::Null;
    let mut pages = 0;
    for _ in 0..30 {
        let page = ada
            .ok("getMessages", json!({ "roomId": room, "cursor": cursor }))
            .await;
        pages += 1;
        let mut texts: Vec<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["text"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        texts.extend(history);
        history = texts;
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let want: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(
        history, want,
        "paging back gives the whole history in order"
    );
    assert!(pages > 1, "the byte budget made several pages");
    let refused = ada
        .request("getMessages", json!({ "roomId": room, "cursor": "h.zz" }))
        .await;
    assert_eq!(refused["error"]["code"], "BAD_REQUEST", "{refused}");
}

/// Two `createRoom`s sent at once on two connections of one user, with one place left under
/// the quota: one room is created, the other refused (a read-then-write check let both
/// through). Repeated a few times, since over real sockets the interleaving is up to the
/// scheduler; the barrier test in voice-adapters-memory (`quota_race.rs`) forces it.
#[tokio::test]
async fn simultaneous_creations_over_two_connections_stay_within_the_room_quota() {
    let app = spawn_app_with(|c| {
        c.chat_limits = chat_domain::ChatLimits {
            rooms_per_user: 1,
            ..chat_domain::ChatLimits::default()
        };
    })
    .await;
    for round in 0..5 {
        let mut one = app.connect().await;
        let hello = one
            .ok("hello", json!({ "name": format!("Racer {round}") }))
            .await;
        let mut two = app.connect().await;
        two.ok(
            "hello",
            json!({ "name": format!("Racer {round}"), "resumeToken": hello["resumeToken"] }),
        )
        .await;
        let (a, b) = tokio::join!(
            one.request("createRoom", json!({ "name": format!("A{round}") })),
            two.request("createRoom", json!({ "name": format!("B{round}") })),
        );
        let created = [&a, &b].iter().filter(|r| r["ok"] == true).count();
        assert_eq!(created, 1, "round {round}: {a} {b}");
    }
}
