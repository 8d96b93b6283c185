//! The contract every [`ChatStore`] must keep, as one suite each adapter's tests run (memory,
//! SQLite), so the stores cannot drift apart and the rules can trust any of them.
//!
//! Enabled with the `contract-tests` feature. Runtime-agnostic: the caller drives the future.
//! Every check uses ids and names under `ns`, so one store can serve several runs.

use futures_util::future::join_all;
use voice_domain::ports::{MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::model::{ChatMessage, RoomRecord, MESSAGE_HISTORY};
use crate::ports::{ChatStore, ChatStoreError, UserUsage};

fn user(ns: &str, n: &str) -> UserId {
    UserId::parse(format!("{ns}-u-{n}")).expect("contract ids are valid")
}

fn room_id(ns: &str, n: &str) -> ChatRoomId {
    ChatRoomId::parse(format!("{ns}-r-{n}")).expect("contract ids are valid")
}

fn conn(ns: &str, n: &str) -> ConnectionId {
    ConnectionId::parse(format!("{ns}-c-{n}")).expect("contract ids are valid")
}

fn record(ns: &str, n: &str, admin: &UserId) -> RoomRecord {
    RoomRecord {
        id: room_id(ns, n),
        name: format!("{ns} Room {n}"),
        admin: admin.clone(),
    }
}

fn message(room: &ChatRoomId, author: &UserId, text: &str, at: u64) -> ChatMessage {
    ChatMessage {
        room_id: room.to_string(),
        user_id: author.to_string(),
        name: "Author".into(),
        text: text.into(),
        at,
    }
}

/// Runs every check below against `store`.
pub async fn run_all(store: &dyn ChatStore, ns: &str) {
    rooms_are_unique_by_id_and_by_name_ignoring_case(store, &format!("{ns}-uniq")).await;
    the_creator_is_an_approved_admin(store, &format!("{ns}-admin")).await;
    join_requests_follow_pending_then_decided(store, &format!("{ns}-join")).await;
    connections_bind_and_unbind(store, &format!("{ns}-conn")).await;
    messages_keep_order_and_the_history(store, &format!("{ns}-msg")).await;
    racing_creators_of_one_name_get_one_room(store, &format!("{ns}-race")).await;
    usage_counts_admined_rooms_and_pending_requests(store, &format!("{ns}-usage")).await;
    removal_and_bans(store, &format!("{ns}-ban")).await;
    token_generations_count_up_per_user(store, &format!("{ns}-gen")).await;
}

/// Token generations start at 0 and each bump raises one user's by one.
pub async fn token_generations_count_up_per_user(store: &dyn ChatStore, ns: &str) {
    let (a, b) = (user(ns, "a"), user(ns, "b"));
    assert_eq!(store.token_generation(&a).await.expect("read"), 0);
    assert_eq!(store.bump_token_generation(&a).await.expect("bump"), 1);
    assert_eq!(store.bump_token_generation(&a).await.expect("bump"), 2);
    assert_eq!(store.token_generation(&a).await.expect("read"), 2);
    assert_eq!(store.token_generation(&b).await.expect("read"), 0);
}

/// `remove_member` deletes a membership or a request (the user may ask again); with `ban` the
/// user's next request is refused until `unban`.
pub async fn removal_and_bans(store: &dyn ChatStore, ns: &str) {
    let (admin, member, asker) = (user(ns, "admin"), user(ns, "member"), user(ns, "asker"));
    let room = record(ns, "1", &admin);
    store.create_room(&room).await.expect("room");
    let r = &room.id;
    store.request_join(r, &member).await.expect("request");
    store.decide_join(r, &member, true).await.expect("approve");
    store.request_join(r, &asker).await.expect("request");

    assert_eq!(
        store
            .remove_member(r, &member, false)
            .await
            .expect("remove"),
        MemberState::Approved
    );
    assert_eq!(
        store
            .membership(r, &member)
            .await
            .expect("read")
            .map(|m| m.state),
        Some(MemberState::None)
    );
    assert_eq!(
        store.request_join(r, &member).await.expect("may ask again"),
        (MemberState::None, MemberState::Pending)
    );

    assert_eq!(
        store.remove_member(r, &asker, true).await.expect("ban"),
        MemberState::Pending
    );
    assert!(!store
        .members(r)
        .await
        .expect("members")
        .iter()
        .any(|(u, _)| u == &asker));
    assert_eq!(
        store.request_join(r, &asker).await,
        Err(ChatStoreError::Banned)
    );
    assert_eq!(
        store.remove_member(r, &asker, true).await.expect("again"),
        MemberState::None,
        "banning twice is harmless"
    );
    assert!(store.unban(r, &asker).await.expect("unban"));
    assert!(!store.unban(r, &asker).await.expect("unban twice"));
    assert_eq!(
        store
            .request_join(r, &asker)
            .await
            .expect("may ask after unban"),
        (MemberState::None, MemberState::Pending)
    );
    let nowhere = room_id(ns, "missing");
    assert_eq!(
        store.remove_member(&nowhere, &asker, true).await,
        Err(ChatStoreError::NoSuchRoom)
    );
    assert_eq!(
        store.unban(&nowhere, &asker).await,
        Err(ChatStoreError::NoSuchRoom)
    );
}

/// `usage_of` counts the rooms a user admins and their pending (not approved, not denied)
/// requests, which is what the quotas are checked against.
pub async fn usage_counts_admined_rooms_and_pending_requests(store: &dyn ChatStore, ns: &str) {
    let (admin, asker) = (user(ns, "admin"), user(ns, "asker"));
    assert_eq!(
        store.usage_of(&admin).await.expect("usage"),
        UserUsage::default(),
        "a user never seen holds nothing"
    );
    for n in ["1", "2", "3"] {
        store
            .create_room(&record(ns, n, &admin))
            .await
            .expect("room");
    }
    for n in ["1", "2", "3"] {
        store
            .request_join(&room_id(ns, n), &asker)
            .await
            .expect("request");
    }
    store
        .decide_join(&room_id(ns, "1"), &asker, true)
        .await
        .expect("approve");
    store
        .decide_join(&room_id(ns, "2"), &asker, false)
        .await
        .expect("deny");
    assert_eq!(
        store.usage_of(&admin).await.expect("usage"),
        UserUsage {
            rooms_admin: 3,
            pending_requests: 0
        }
    );
    assert_eq!(
        store.usage_of(&asker).await.expect("usage"),
        UserUsage {
            rooms_admin: 0,
            pending_requests: 1
        },
        "approved and denied requests are not pending"
    );
}

/// A second room with the same id, or a name differing only in case or by look-alike letters,
/// is refused, and nothing of it is stored.
pub async fn rooms_are_unique_by_id_and_by_name_ignoring_case(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let first = record(ns, "1", &admin);
    store.create_room(&first).await.expect("first room");
    let same_name = RoomRecord {
        id: room_id(ns, "2"),
        name: first.name.to_uppercase(),
        admin: admin.clone(),
    };
    assert_eq!(
        store.create_room(&same_name).await,
        Err(ChatStoreError::RoomExists)
    );
    assert_eq!(store.room(&same_name.id).await.expect("read"), None);
    // The same name in look-alike letters (Cyrillic capitals for T, E, A, M ... where ASCII
    // has them) is the same name too: the domain's `room_name_key`.
    let look_alike = RoomRecord {
        id: room_id(ns, "3"),
        name: first
            .name
            .chars()
            .map(|c| match c {
                'o' => '\u{043E}',
                'e' => '\u{0435}',
                'a' => '\u{0430}',
                other => other,
            })
            .collect(),
        admin: admin.clone(),
    };
    assert_ne!(
        look_alike.name, first.name,
        "the name has letters to disguise"
    );
    assert_eq!(
        store.create_room(&look_alike).await,
        Err(ChatStoreError::RoomExists)
    );
    assert_eq!(store.room(&look_alike.id).await.expect("read"), None);
    let same_id = RoomRecord {
        name: format!("{ns} another name"),
        ..first.clone()
    };
    assert_eq!(
        store.create_room(&same_id).await,
        Err(ChatStoreError::RoomExists)
    );
    assert_eq!(
        store.room(&first.id).await.expect("read"),
        Some(first.clone())
    );
    let listed: Vec<_> = store
        .rooms()
        .await
        .expect("rooms")
        .into_iter()
        .filter(|r| r.id.as_str().starts_with(ns))
        .collect();
    assert_eq!(listed, vec![first]);
}

/// The creator of a room is its admin and an approved member; nobody else is anything.
pub async fn the_creator_is_an_approved_admin(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let r = record(ns, "1", &admin);
    store.create_room(&r).await.expect("room");
    assert_eq!(
        store.membership(&r.id, &admin).await.expect("membership"),
        Some(Membership {
            state: MemberState::Approved,
            is_admin: true
        })
    );
    assert_eq!(
        store
            .membership(&r.id, &user(ns, "stranger"))
            .await
            .expect("membership"),
        Some(Membership {
            state: MemberState::None,
            is_admin: false
        })
    );
    assert_eq!(
        store
            .membership(&room_id(ns, "missing"), &admin)
            .await
            .expect("membership"),
        None
    );
    assert_eq!(
        store.members(&r.id).await.expect("members"),
        vec![(admin, MemberState::Approved)]
    );
}

/// None → pending (repeats stay pending) → approved (stays approved); a denial removes the
/// request so the user may ask again; deciding nothing, or in a missing room, is refused.
pub async fn join_requests_follow_pending_then_decided(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let (kim, lee) = (user(ns, "kim"), user(ns, "lee"));
    let r = record(ns, "1", &admin);
    store.create_room(&r).await.expect("room");
    let missing = room_id(ns, "missing");
    assert_eq!(
        store.request_join(&missing, &kim).await,
        Err(ChatStoreError::NoSuchRoom)
    );
    assert_eq!(
        store.decide_join(&missing, &kim, true).await,
        Err(ChatStoreError::NoSuchRoom)
    );
    assert_eq!(
        store.decide_join(&r.id, &kim, true).await,
        Err(ChatStoreError::NoPendingRequest)
    );
    use MemberState::{Approved, None as Nothing, Pending};
    assert_eq!(
        store.request_join(&r.id, &kim).await,
        Ok((Nothing, Pending))
    );
    assert_eq!(
        store.request_join(&r.id, &kim).await,
        Ok((Pending, Pending))
    );
    store.decide_join(&r.id, &kim, true).await.expect("approve");
    assert_eq!(
        store.request_join(&r.id, &kim).await,
        Ok((Approved, Approved))
    );
    assert_eq!(
        store.request_join(&r.id, &admin).await,
        Ok((Approved, Approved))
    );
    assert_eq!(
        store.decide_join(&r.id, &kim, false).await,
        Err(ChatStoreError::NoPendingRequest),
        "an approved member is not a pending request"
    );
    assert_eq!(
        store.request_join(&r.id, &lee).await,
        Ok((Nothing, Pending))
    );
    store.decide_join(&r.id, &lee, false).await.expect("deny");
    assert_eq!(
        store
            .membership(&r.id, &lee)
            .await
            .expect("membership")
            .map(|m| m.state),
        Some(Nothing)
    );
    assert_eq!(
        store.request_join(&r.id, &lee).await,
        Ok((Nothing, Pending))
    );
    let mut members = store.members(&r.id).await.expect("members");
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![(admin, Approved), (kim, Approved), (lee, Pending)];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(members, want);
}

/// A bound connection names its user (and the user's latest name); only approved members'
/// connections hear the room; an unbound connection is nobody's.
pub async fn connections_bind_and_unbind(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let (kim, lee) = (user(ns, "kim"), user(ns, "lee"));
    let r = record(ns, "1", &admin);
    store.create_room(&r).await.expect("room");
    store.request_join(&r.id, &kim).await.expect("request");
    store.decide_join(&r.id, &kim, true).await.expect("approve");
    store.request_join(&r.id, &lee).await.expect("request");
    let (ca, ck1, ck2, cl) = (conn(ns, "a"), conn(ns, "k1"), conn(ns, "k2"), conn(ns, "l"));
    store
        .bind_connection(&ca, &admin, "Ada")
        .await
        .expect("bind");
    store
        .bind_connection(&ck1, &kim, "Kim")
        .await
        .expect("bind");
    store
        .bind_connection(&ck2, &kim, "Kim B")
        .await
        .expect("bind");
    store.bind_connection(&cl, &lee, "Lee").await.expect("bind");
    assert_eq!(
        store.user_of(&ck2).await.expect("user_of"),
        Some(kim.clone())
    );
    assert_eq!(
        store.user_name(&kim).await.expect("name").as_deref(),
        Some("Kim B")
    );
    assert_eq!(
        store.user_name(&user(ns, "ghost")).await.expect("name"),
        None
    );
    let mut kims = store.connections_of_user(&kim).await.expect("conns");
    kims.sort();
    assert_eq!(kims, vec![ck1.clone(), ck2.clone()]);
    let mut hearing = store.connections_of(&r.id).await.expect("conns");
    hearing.sort();
    let mut want = vec![ca.clone(), ck1.clone(), ck2.clone()];
    want.sort();
    assert_eq!(
        hearing, want,
        "the pending member's connection hears nothing"
    );
    store.unbind_connection(&ck1).await.expect("unbind");
    store
        .unbind_connection(&conn(ns, "never-bound"))
        .await
        .expect("unbinding an unknown connection is a no-op");
    let mut everyone = store.identified_connections().await.expect("all");
    everyone.retain(|c| c.as_str().starts_with(ns));
    everyone.sort();
    let mut want = vec![ca.clone(), ck2.clone(), cl.clone()];
    want.sort();
    assert_eq!(
        everyone, want,
        "every identified connection still open, member or not"
    );
    let mut kims_rooms = store.rooms_of_member(&kim).await.expect("rooms");
    kims_rooms.retain(|r| r.as_str().starts_with(ns));
    assert_eq!(kims_rooms, vec![r.id.clone()]);
    let mut lees_rooms = store.rooms_of_member(&lee).await.expect("rooms");
    lees_rooms.retain(|r| r.as_str().starts_with(ns));
    assert_eq!(lees_rooms, vec![], "a pending request is not membership");
    let mut admins_rooms = store.rooms_of_member(&admin).await.expect("rooms");
    admins_rooms.retain(|r| r.as_str().starts_with(ns));
    assert_eq!(admins_rooms, vec![r.id.clone()]);
    assert_eq!(store.user_of(&ck1).await.expect("user_of"), None);
    assert_eq!(
        store.connections_of_user(&kim).await.expect("conns"),
        vec![ck2]
    );
}

/// Messages come back oldest first, `limit` from the end, at least the last
/// [`MESSAGE_HISTORY`] kept; a message for a missing room is refused.
pub async fn messages_keep_order_and_the_history(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let r = record(ns, "1", &admin);
    store.create_room(&r).await.expect("room");
    let missing = room_id(ns, "missing");
    assert_eq!(
        store
            .append_message(&missing, &message(&missing, &admin, "x", 1))
            .await,
        Err(ChatStoreError::NoSuchRoom)
    );
    let total = MESSAGE_HISTORY + 20;
    for i in 0..total {
        store
            .append_message(&r.id, &message(&r.id, &admin, &i.to_string(), i as u64))
            .await
            .expect("append");
    }
    let last = store
        .recent_messages(&r.id, MESSAGE_HISTORY)
        .await
        .expect("recent");
    let texts: Vec<String> = last.iter().map(|m| m.text.clone()).collect();
    let want: Vec<String> = (total - MESSAGE_HISTORY..total)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(texts, want);
    let three = store.recent_messages(&r.id, 3).await.expect("recent");
    assert_eq!(three, last[MESSAGE_HISTORY - 3..].to_vec());
    assert_eq!(
        store.recent_messages(&missing, 10).await.expect("recent"),
        vec![]
    );
}

/// Eight creators racing for one name: exactly one room, seven [`ChatStoreError::RoomExists`].
pub async fn racing_creators_of_one_name_get_one_room(store: &dyn ChatStore, ns: &str) {
    let attempts = (0..8).map(|i| RoomRecord {
        id: room_id(ns, &i.to_string()),
        name: format!("{ns} contested"),
        admin: user(ns, &i.to_string()),
    });
    let attempts: Vec<_> = attempts.collect();
    let results = join_all(attempts.iter().map(|r| store.create_room(r))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results
        .iter()
        .filter(|r| **r == Err(ChatStoreError::RoomExists))
        .count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
}
