//! The chat directory's rules as stored: unique room names, join requests, decisions,
//! message retention, and who hears a chat room's events.

use voice_adapters_sqlite::chat::{MessageRecord, SqliteChatError};
use voice_adapters_sqlite::{Database, SqliteChat};
use voice_domain::ports::{ChatDirectory, MemberState};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn room(s: &str) -> ChatRoomId {
    ChatRoomId::parse(s).unwrap()
}
fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}
fn chat() -> SqliteChat {
    SqliteChat::new(Database::open_in_memory().unwrap())
}
fn msg(room: &str, text: &str, at: u64) -> MessageRecord {
    MessageRecord {
        room_id: room.into(),
        user_id: "ann".into(),
        name: "Ann".into(),
        text: text.into(),
        at,
    }
}

#[tokio::test]
async fn room_names_are_unique_whatever_the_case_and_ids_too() {
    let chat = chat();
    let created = chat
        .create_room(&room("r1"), "Lobby", &user("ann"))
        .await
        .unwrap();
    assert_eq!(
        (created.name.as_str(), created.admin.as_str()),
        ("Lobby", "ann")
    );
    assert!(created.created_at.as_millis() > 0);
    assert_eq!(
        chat.create_room(&room("r2"), "lOBBY", &user("bob")).await,
        Err(SqliteChatError::RoomExists)
    );
    assert_eq!(
        chat.create_room(&room("r1"), "Else", &user("bob")).await,
        Err(SqliteChatError::RoomExists)
    );
    assert_eq!(
        chat.rooms().await.unwrap().len(),
        1,
        "refused rooms are not stored"
    );
    assert_eq!(chat.room(&room("r1")).await.unwrap(), Some(created));
    assert_eq!(chat.room(&room("nope")).await.unwrap(), None);
    // The admin is an approved member, in the same transaction.
    assert_eq!(
        chat.members(&room("r1")).await.unwrap(),
        vec![(user("ann"), MemberState::Approved)]
    );
}

#[tokio::test]
async fn join_requests_are_recorded_once_and_decided_once() {
    let chat = chat();
    let r = room("r");
    chat.create_room(&r, "R", &user("ann")).await.unwrap();
    assert_eq!(
        chat.request_join(&r, &user("bob")).await.unwrap(),
        (MemberState::None, MemberState::Pending)
    );
    assert_eq!(
        chat.request_join(&r, &user("bob")).await.unwrap(),
        (MemberState::Pending, MemberState::Pending),
        "asking twice is not a new request"
    );
    assert_eq!(
        chat.request_join(&r, &user("ann")).await.unwrap(),
        (MemberState::Approved, MemberState::Approved)
    );
    assert_eq!(
        chat.request_join(&room("nope"), &user("bob")).await,
        Err(SqliteChatError::NoSuchRoom)
    );
    chat.decide_join(&r, &user("bob"), true).await.unwrap();
    assert_eq!(
        chat.decide_join(&r, &user("bob"), true).await,
        Err(SqliteChatError::NoPendingRequest),
        "an approved member has nothing pending"
    );
    assert_eq!(
        chat.decide_join(&r, &user("zed"), false).await,
        Err(SqliteChatError::NoPendingRequest)
    );
    chat.request_join(&r, &user("cat")).await.unwrap();
    chat.decide_join(&r, &user("cat"), false).await.unwrap();
    let m = chat.membership(&r, &user("cat")).await.unwrap().unwrap();
    assert_eq!(m.state, MemberState::None, "a denied request is removed");
    assert!(!m.is_admin);
    assert_eq!(
        chat.request_join(&r, &user("cat")).await.unwrap(),
        (MemberState::None, MemberState::Pending),
        "and the user may ask again"
    );
    assert_eq!(
        chat.membership(&room("nope"), &user("cat")).await.unwrap(),
        None
    );
    chat.set_state(&r, &user("bob"), MemberState::None)
        .await
        .unwrap();
    assert_eq!(
        chat.members(&r).await.unwrap(),
        vec![
            (user("ann"), MemberState::Approved),
            (user("cat"), MemberState::Pending)
        ]
    );
}

#[tokio::test]
async fn messages_keep_the_last_n_per_room_in_order() {
    let chat = chat().with_message_retention(5);
    chat.create_room(&room("a"), "A", &user("ann"))
        .await
        .unwrap();
    chat.create_room(&room("b"), "B", &user("ann"))
        .await
        .unwrap();
    for i in 0..12 {
        chat.append_message(&room("a"), &msg("a", &format!("a{i}"), i))
            .await
            .unwrap();
    }
    chat.append_message(&room("b"), &msg("b", "b0", 100))
        .await
        .unwrap();
    let a: Vec<_> = chat
        .recent_messages(&room("a"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(a, ["a7", "a8", "a9", "a10", "a11"]);
    let last2: Vec<_> = chat
        .recent_messages(&room("a"), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(last2, ["a10", "a11"]);
    assert_eq!(
        chat.recent_messages(&room("b"), 100).await.unwrap(),
        vec![msg("b", "b0", 100)]
    );
    assert_eq!(
        chat.append_message(&room("nope"), &msg("nope", "x", 1))
            .await,
        Err(SqliteChatError::NoSuchRoom)
    );
    let stored: i64 = chat
        .database()
        .blocking(|c| c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(stored, 6, "older messages are deleted, not just hidden");
}

#[tokio::test]
async fn only_approved_members_connections_hear_the_room() {
    let chat = chat();
    let r = room("r");
    chat.bind_connection(&conn("a1"), &user("ann"), "Ann")
        .await
        .unwrap();
    chat.bind_connection(&conn("a2"), &user("ann"), "Ann")
        .await
        .unwrap();
    chat.bind_connection(&conn("b1"), &user("bob"), "Bob")
        .await
        .unwrap();
    chat.bind_connection(&conn("c1"), &user("cat"), "Cat")
        .await
        .unwrap();
    chat.create_room(&r, "R", &user("ann")).await.unwrap();
    chat.request_join(&r, &user("bob")).await.unwrap();
    chat.request_join(&r, &user("cat")).await.unwrap();
    chat.decide_join(&r, &user("bob"), true).await.unwrap();
    assert_eq!(
        chat.connections_of(&r).await.unwrap(),
        vec![conn("a1"), conn("a2"), conn("b1")],
        "pending cat hears nothing"
    );
    assert_eq!(chat.user_of(&conn("b1")).await.unwrap(), Some(user("bob")));
    chat.unbind_connection(&conn("a1")).await.unwrap();
    assert_eq!(chat.user_of(&conn("a1")).await.unwrap(), None);
    assert_eq!(
        chat.connections_of_user(&user("ann")).await.unwrap(),
        vec![conn("a2")]
    );
    // Saying hello again with another name renames the user.
    chat.bind_connection(&conn("b2"), &user("bob"), "Robert")
        .await
        .unwrap();
    assert_eq!(
        chat.user_name(&user("bob")).await.unwrap().as_deref(),
        Some("Robert")
    );
    assert_eq!(chat.user_name(&user("nobody")).await.unwrap(), None);
    chat.clear_connections();
    assert!(chat.connections_of(&r).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_setting_is_stored_on_first_use_and_kept() {
    let chat = chat();
    assert_eq!(
        chat.setting_or_insert("k", "first".into()).await.unwrap(),
        "first"
    );
    assert_eq!(
        chat.setting_or_insert("k", "second".into()).await.unwrap(),
        "first"
    );
}
