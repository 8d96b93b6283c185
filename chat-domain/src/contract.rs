//! The contract every [`ChatStore`] must keep, as one suite each adapter's tests run (memory,
//! SQLite), so the stores cannot drift apart and the rules can trust any of them.
//!
//! Enabled with the `contract-tests` feature. Runtime-agnostic: the caller drives the future.
//! Every check uses ids and names under `ns`, so one store can serve several runs.

use futures_util::future::join_all;
use voice_domain::ports::{MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::model::{ChatMessage, RoomRecord, MESSAGE_HISTORY};
use crate::ports::{ChatStore, ChatStoreError, JoinQuotas, Quota, UserUsage};

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
    room_pages_visit_every_room_once(store, &format!("{ns}-pages")).await;
    member_pages_in_id_order_with_names_and_presence(store, &format!("{ns}-mpages")).await;
    quotas_hold_with_the_write_even_when_racing(store, &format!("{ns}-quota")).await;
    bans_are_capped_per_room_even_when_racing(store, &format!("{ns}-banq")).await;
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
    store.create_room(&room, usize::MAX).await.expect("room");
    let r = &room.id;
    store
        .request_join(r, &member, JoinQuotas::UNLIMITED)
        .await
        .expect("request");
    store.decide_join(r, &member, true).await.expect("approve");
    store
        .request_join(r, &asker, JoinQuotas::UNLIMITED)
        .await
        .expect("request");

    assert_eq!(
        store
            .remove_member(r, &member, false, usize::MAX)
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
        store
            .request_join(r, &member, JoinQuotas::UNLIMITED)
            .await
            .expect("may ask again"),
        (MemberState::None, MemberState::Pending)
    );

    assert_eq!(
        store
            .remove_member(r, &asker, true, usize::MAX)
            .await
            .expect("ban"),
        MemberState::Pending
    );
    assert!(!store
        .members(r)
        .await
        .expect("members")
        .iter()
        .any(|(u, _)| u == &asker));
    assert_eq!(
        store.request_join(r, &asker, JoinQuotas::UNLIMITED).await,
        Err(ChatStoreError::Banned)
    );
    assert_eq!(
        store
            .remove_member(r, &asker, true, usize::MAX)
            .await
            .expect("again"),
        MemberState::None,
        "banning twice is harmless"
    );
    assert!(store.unban(r, &asker).await.expect("unban"));
    assert!(!store.unban(r, &asker).await.expect("unban twice"));
    assert_eq!(
        store
            .request_join(r, &asker, JoinQuotas::UNLIMITED)
            .await
            .expect("may ask after unban"),
        (MemberState::None, MemberState::Pending)
    );
    let nowhere = room_id(ns, "missing");
    assert_eq!(
        store
            .remove_member(&nowhere, &asker, true, usize::MAX)
            .await,
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
            .create_room(&record(ns, n, &admin), usize::MAX)
            .await
            .expect("room");
    }
    for n in ["1", "2", "3"] {
        store
            .request_join(&room_id(ns, n), &asker, JoinQuotas::UNLIMITED)
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
    store
        .create_room(&first, usize::MAX)
        .await
        .expect("first room");
    let same_name = RoomRecord {
        id: room_id(ns, "2"),
        name: first.name.to_uppercase(),
        admin: admin.clone(),
    };
    assert_eq!(
        store.create_room(&same_name, usize::MAX).await,
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
        store.create_room(&look_alike, usize::MAX).await,
        Err(ChatStoreError::RoomExists)
    );
    assert_eq!(store.room(&look_alike.id).await.expect("read"), None);
    // ASCII look-alikes too: "rn" for "m", "I" or "1" for "l", "0" for "O".
    let modern = RoomRecord {
        id: room_id(ns, "4"),
        name: format!("{ns} Modern Hall 0ne"),
        admin: admin.clone(),
    };
    store.create_room(&modern, usize::MAX).await.expect("room");
    for (i, disguised) in [
        format!("{ns} rnodern Hall One"),
        format!("{ns} Modern HaII 0ne"),
        format!("{ns} Modern Ha11 one"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = RoomRecord {
            id: room_id(ns, &format!("5{i}")),
            name: disguised,
            admin: admin.clone(),
        };
        assert_eq!(
            store.create_room(&r, usize::MAX).await,
            Err(ChatStoreError::RoomExists),
            "{:?} poses as {:?}",
            r.name,
            modern.name
        );
    }
    let same_id = RoomRecord {
        name: format!("{ns} another name"),
        ..first.clone()
    };
    assert_eq!(
        store.create_room(&same_id, usize::MAX).await,
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
    assert_eq!(listed, vec![first, modern]);
}

/// The creator of a room is its admin and an approved member; nobody else is anything.
pub async fn the_creator_is_an_approved_admin(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let r = record(ns, "1", &admin);
    store.create_room(&r, usize::MAX).await.expect("room");
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
    store.create_room(&r, usize::MAX).await.expect("room");
    let missing = room_id(ns, "missing");
    assert_eq!(
        store
            .request_join(&missing, &kim, JoinQuotas::UNLIMITED)
            .await,
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
        store.request_join(&r.id, &kim, JoinQuotas::UNLIMITED).await,
        Ok((Nothing, Pending))
    );
    assert_eq!(
        store.request_join(&r.id, &kim, JoinQuotas::UNLIMITED).await,
        Ok((Pending, Pending))
    );
    store.decide_join(&r.id, &kim, true).await.expect("approve");
    assert_eq!(
        store.request_join(&r.id, &kim, JoinQuotas::UNLIMITED).await,
        Ok((Approved, Approved))
    );
    assert_eq!(
        store
            .request_join(&r.id, &admin, JoinQuotas::UNLIMITED)
            .await,
        Ok((Approved, Approved))
    );
    assert_eq!(
        store.decide_join(&r.id, &kim, false).await,
        Err(ChatStoreError::NoPendingRequest),
        "an approved member is not a pending request"
    );
    assert_eq!(
        store.request_join(&r.id, &lee, JoinQuotas::UNLIMITED).await,
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
        store.request_join(&r.id, &lee, JoinQuotas::UNLIMITED).await,
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
    store.create_room(&r, usize::MAX).await.expect("room");
    store
        .request_join(&r.id, &kim, JoinQuotas::UNLIMITED)
        .await
        .expect("request");
    store.decide_join(&r.id, &kim, true).await.expect("approve");
    store
        .request_join(&r.id, &lee, JoinQuotas::UNLIMITED)
        .await
        .expect("request");
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
    store.create_room(&r, usize::MAX).await.expect("room");
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
        .message_page(&r.id, None, MESSAGE_HISTORY)
        .await
        .expect("recent");
    let texts: Vec<String> = last.iter().map(|m| m.message.text.clone()).collect();
    let want: Vec<String> = (total - MESSAGE_HISTORY..total)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(texts, want);
    assert!(
        last.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers grow with time"
    );
    let three = store.message_page(&r.id, None, 3).await.expect("recent");
    assert_eq!(three, last[MESSAGE_HISTORY - 3..].to_vec());
    // Paging back: the three before the oldest of those, exactly the ones before them.
    let before = store
        .message_page(&r.id, Some(three[0].seq), 3)
        .await
        .expect("older");
    assert_eq!(
        before,
        last[MESSAGE_HISTORY - 6..MESSAGE_HISTORY - 3].to_vec()
    );
    // Whatever a store keeps beyond the history pages back contiguously.
    let kept_older = store
        .message_page(&r.id, Some(last[0].seq), MESSAGE_HISTORY)
        .await
        .expect("older");
    let older_texts: Vec<String> = kept_older.iter().map(|m| m.message.text.clone()).collect();
    let end = total - MESSAGE_HISTORY;
    let want_older: Vec<String> = (end - kept_older.len()..end)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(older_texts, want_older);
    assert_eq!(
        store
            .message_page(&r.id, Some(1), 10)
            .await
            .expect("none older"),
        vec![]
    );
    assert_eq!(
        store
            .message_page(&missing, None, 10)
            .await
            .expect("recent"),
        vec![]
    );
}

/// Paging through every room with small pages visits each room exactly once, each page at most
/// `limit` long, with the right member count and the viewer's state; a position the store
/// never gave out is [`ChatStoreError::BadCursor`]. (The store may hold other runs' rooms.)
pub async fn room_pages_visit_every_room_once(store: &dyn ChatStore, ns: &str) {
    let (admin, viewer, other) = (user(ns, "admin"), user(ns, "viewer"), user(ns, "other"));
    let mine: Vec<RoomRecord> = (0..7).map(|i| record(ns, &i.to_string(), &admin)).collect();
    for r in &mine {
        store.create_room(r, usize::MAX).await.expect("room");
    }
    let q = JoinQuotas::UNLIMITED;
    store
        .request_join(&mine[1].id, &viewer, q)
        .await
        .expect("ask");
    store
        .request_join(&mine[2].id, &viewer, q)
        .await
        .expect("ask");
    store
        .decide_join(&mine[2].id, &viewer, true)
        .await
        .expect("approve");
    store
        .request_join(&mine[2].id, &other, q)
        .await
        .expect("ask");
    store
        .request_join(&mine[3].id, &other, q)
        .await
        .expect("ask");
    store
        .decide_join(&mine[3].id, &other, true)
        .await
        .expect("approve");

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100_000 {
        let page = store
            .room_page(&viewer, after.as_deref(), 3)
            .await
            .expect("page");
        assert!(page.items.len() <= 3, "a page longer than asked");
        seen.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut ids: Vec<&ChatRoomId> = seen.iter().map(|r| &r.record.id).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a room listed twice");
    for (i, r) in mine.iter().enumerate() {
        let got = seen
            .iter()
            .find(|s| s.record.id == r.id)
            .unwrap_or_else(|| panic!("room {i} never listed"));
        assert_eq!(&got.record, r);
        let (count, state) = match i {
            1 => (1, MemberState::Pending),
            2 => (2, MemberState::Approved),
            3 => (2, MemberState::None),
            _ => (1, MemberState::None),
        };
        assert_eq!((got.member_count, got.my_state), (count, state), "room {i}");
    }
    let admins_view = store.room_page(&admin, None, 100).await.expect("page");
    assert!(admins_view.items.len() <= 100);
    assert_eq!(
        store.room_page(&viewer, Some(""), 3).await.map(|p| p.items),
        Err(ChatStoreError::BadCursor)
    );
}

/// Members come in user-id order, `limit` at a time, with names and presence, each once.
pub async fn member_pages_in_id_order_with_names_and_presence(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let r = record(ns, "1", &admin);
    store.create_room(&r, usize::MAX).await.expect("room");
    let q = JoinQuotas::UNLIMITED;
    let mut want = vec![(admin.clone(), MemberState::Approved)];
    for i in 0..8 {
        let u = user(ns, &format!("m{i}"));
        store.request_join(&r.id, &u, q).await.expect("ask");
        if i % 3 != 0 {
            store.decide_join(&r.id, &u, true).await.expect("approve");
            want.push((u, MemberState::Approved));
        } else {
            want.push((u, MemberState::Pending));
        }
    }
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let named = user(ns, "m1");
    store
        .bind_connection(&conn(ns, "1"), &named, "Named One")
        .await
        .expect("bind");
    let mut got = Vec::new();
    let mut after: Option<UserId> = None;
    for _ in 0..100 {
        let page = store
            .member_page(&r.id, after.as_ref(), 4)
            .await
            .expect("page");
        assert!(page.items.len() <= 4);
        got.extend(page.items);
        match page.next {
            Some(n) => after = Some(UserId::parse(n).expect("the position is a user id")),
            None => break,
        }
    }
    assert_eq!(
        got.iter()
            .map(|m| (m.user.clone(), m.state))
            .collect::<Vec<_>>(),
        want
    );
    for m in &got {
        if m.user == named {
            assert_eq!((m.name.as_deref(), m.online), (Some("Named One"), true));
        } else {
            assert!(!m.online, "{} is not connected", m.user);
        }
    }
    store
        .unbind_connection(&conn(ns, "1"))
        .await
        .expect("unbind");
    assert!(store
        .member_page(&room_id(ns, "missing"), None, 4)
        .await
        .expect("page")
        .items
        .is_empty());
}

/// The quotas are the store's to keep, in the same atomic step as the write: sequential
/// writes stop at the quota with nothing stored, and racing writes never pass it either.
pub async fn quotas_hold_with_the_write_even_when_racing(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    for i in 0..2 {
        store
            .create_room(&record(ns, &format!("seq{i}"), &admin), 2)
            .await
            .expect("under the quota");
    }
    let third = record(ns, "seq2", &admin);
    assert_eq!(
        store.create_room(&third, 2).await,
        Err(ChatStoreError::QuotaExceeded(Quota::RoomsPerUser))
    );
    assert_eq!(
        store.room(&third.id).await.expect("read"),
        None,
        "nothing stored"
    );

    // Eight racing creations by one user with room for three.
    let racer = user(ns, "racer");
    let attempts: Vec<RoomRecord> = (0..8)
        .map(|i| record(ns, &format!("race{i}"), &racer))
        .collect();
    let results = join_all(attempts.iter().map(|r| store.create_room(r, 3))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 3, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(ChatStoreError::QuotaExceeded(Quota::RoomsPerUser))));
    assert_eq!(store.usage_of(&racer).await.expect("usage").rooms_admin, 3);

    // Eight racing requests to one room with room for three waiting.
    let room = &attempts[results.iter().position(Result::is_ok).expect("one won")];
    let per_room = JoinQuotas {
        per_room: 3,
        per_user: usize::MAX,
    };
    let askers: Vec<UserId> = (0..8).map(|i| user(ns, &format!("ask{i}"))).collect();
    let results = join_all(
        askers
            .iter()
            .map(|u| store.request_join(&room.id, u, per_room)),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(ChatStoreError::QuotaExceeded(Quota::PendingPerRoom))));
    // A repeat is never refused for the quota.
    let asked = &askers[results.iter().position(Result::is_ok).expect("one asked")];
    assert_eq!(
        store.request_join(&room.id, asked, per_room).await,
        Ok((MemberState::Pending, MemberState::Pending))
    );

    // One user racing requests to eight rooms with room for two of theirs.
    let rooms: Vec<RoomRecord> = (0..8)
        .map(|i| record(ns, &format!("wide{i}"), &user(ns, &format!("owner{i}"))))
        .collect();
    for r in &rooms {
        store.create_room(r, usize::MAX).await.expect("room");
    }
    let eager = user(ns, "eager");
    let per_user = JoinQuotas {
        per_room: usize::MAX,
        per_user: 2,
    };
    let results = join_all(
        rooms
            .iter()
            .map(|r| store.request_join(&r.id, &eager, per_user)),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        2,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(ChatStoreError::QuotaExceeded(Quota::PendingPerUser))));
    assert_eq!(
        store
            .usage_of(&eager)
            .await
            .expect("usage")
            .pending_requests,
        2
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
    let results = join_all(attempts.iter().map(|r| store.create_room(r, usize::MAX))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results
        .iter()
        .filter(|r| **r == Err(ChatStoreError::RoomExists))
        .count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
}

/// A room holds at most `max_bans` bans, counted in the same atomic step as the insert: eight
/// bans racing for the last place give one ban and seven [`Quota::BansPerRoom`] refusals that
/// change nothing (a refused ban of a member leaves the member in). A re-ban and a removal
/// without ban are never refused; `unban` frees a place; another room's bans do not count.
pub async fn bans_are_capped_per_room_even_when_racing(store: &dyn ChatStore, ns: &str) {
    let admin = user(ns, "admin");
    let room = record(ns, "1", &admin);
    store.create_room(&room, usize::MAX).await.expect("room");
    let r = &room.id;
    let member = user(ns, "member");
    store
        .request_join(r, &member, JoinQuotas::UNLIMITED)
        .await
        .expect("request");
    store.decide_join(r, &member, true).await.expect("approve");
    let max = 3;
    let (first, second) = (user(ns, "b1"), user(ns, "b2"));
    for u in [&first, &second] {
        assert_eq!(
            store.remove_member(r, u, true, max).await,
            Ok(MemberState::None)
        );
    }

    // One place left; eight bans (the member's among them) race for it.
    let mut racers: Vec<UserId> = (0..7).map(|i| user(ns, &format!("race{i}"))).collect();
    racers.push(member.clone());
    let results = join_all(racers.iter().map(|u| store.remove_member(r, u, true, max))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(ChatStoreError::QuotaExceeded(Quota::BansPerRoom))));
    let winner = &racers[results.iter().position(Result::is_ok).expect("one won")];
    for (u, res) in racers.iter().zip(&results) {
        if res.is_err() {
            assert_eq!(
                store.unban(r, u).await,
                Ok(false),
                "a refused ban stores nothing"
            );
        }
    }
    if winner != &member {
        assert_eq!(
            store
                .membership(r, &member)
                .await
                .expect("read")
                .map(|m| m.state),
            Some(MemberState::Approved),
            "a refused ban leaves the member in"
        );
        // At the limit: removing without a ban still works.
        assert_eq!(
            store.remove_member(r, &member, false, max).await,
            Ok(MemberState::Approved)
        );
    }
    // At the limit: a re-ban is never refused, a new one is.
    assert_eq!(
        store.remove_member(r, &first, true, max).await,
        Ok(MemberState::None)
    );
    let late = user(ns, "late");
    assert_eq!(
        store.remove_member(r, &late, true, max).await,
        Err(ChatStoreError::QuotaExceeded(Quota::BansPerRoom))
    );
    assert_eq!(
        store.request_join(r, &late, JoinQuotas::UNLIMITED).await,
        Ok((MemberState::None, MemberState::Pending)),
        "the refused ban did not ban"
    );
    // Another room's bans are its own.
    let other = record(ns, "2", &admin);
    store.create_room(&other, usize::MAX).await.expect("room");
    assert_eq!(
        store.remove_member(&other.id, &late, true, max).await,
        Ok(MemberState::None)
    );
    // An unban frees a place, and only one.
    assert!(store.unban(r, &second).await.expect("unban"));
    assert_eq!(
        store.remove_member(r, &late, true, max).await,
        Ok(MemberState::Pending)
    );
    assert_eq!(
        store.remove_member(r, &second, true, max).await,
        Err(ChatStoreError::QuotaExceeded(Quota::BansPerRoom))
    );
}
