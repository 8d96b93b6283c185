//! The SQLite chat store: the chat domain's store contract (the same suite the memory store
//! runs), plus what only this store has: retention by deletion, forgetting connections, and
//! settings.

use chat_domain::{ChatMessage, ChatStore, ChatStoreError, RoomRecord};
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
fn record(id: &str, name: &str, admin: &str) -> RoomRecord {
    RoomRecord {
        id: room(id),
        name: name.into(),
        admin: user(admin),
    }
}
fn msg(room: &str, text: &str, at: u64) -> ChatMessage {
    ChatMessage {
        room_id: room.into(),
        user_id: "ann".into(),
        name: "Ann".into(),
        text: text.into(),
        at,
    }
}

#[tokio::test]
async fn sqlite_chat_keeps_the_store_contract() {
    chat_domain::contract::run_all(&chat(), "sqlite").await;
}

#[tokio::test]
async fn sqlite_chat_keeps_the_store_contract_on_a_file() {
    let dir = private_tempdir();
    let db = Database::open(&dir.path().join("chat.sqlite3"), Default::default()).unwrap();
    chat_domain::contract::run_all(&SqliteChat::new(db), "file").await;
}

#[tokio::test]
async fn messages_beyond_the_retention_are_deleted_not_hidden() {
    let chat = chat().with_message_retention(5);
    chat.create_room(&record("a", "A", "ann"), usize::MAX)
        .await
        .unwrap();
    chat.create_room(&record("b", "B", "ann"), usize::MAX)
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
        .message_page(&room("a"), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message.text)
        .collect();
    assert_eq!(a, ["a7", "a8", "a9", "a10", "a11"]);
    assert_eq!(
        chat.message_page(&room("b"), None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.message)
            .collect::<Vec<_>>(),
        vec![msg("b", "b0", 100)],
        "retention is per room"
    );
    let stored: i64 = chat
        .database()
        .blocking(|c| c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(stored, 6, "older messages are deleted, not just hidden");
}

#[tokio::test]
async fn set_state_and_clear_connections() {
    let chat = chat();
    let r = room("r");
    chat.create_room(&record("r", "R", "ann"), usize::MAX)
        .await
        .unwrap();
    chat.bind_connection(&conn("b1"), &user("bob"), "Bob")
        .await
        .unwrap();
    chat.set_state(&r, &user("bob"), MemberState::Approved)
        .await
        .unwrap();
    assert_eq!(chat.connections_of(&r).await.unwrap(), vec![conn("b1")]);
    chat.set_state(&r, &user("bob"), MemberState::None)
        .await
        .unwrap();
    assert_eq!(
        chat.members(&r).await.unwrap(),
        vec![(user("ann"), MemberState::Approved)]
    );
    assert_eq!(
        chat.set_state(&room("nope"), &user("bob"), MemberState::Approved)
            .await,
        Err(ChatStoreError::NoSuchRoom)
    );
    chat.clear_connections();
    assert_eq!(chat.user_of(&conn("b1")).await.unwrap(), None);
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

/// A temporary data directory as the server makes one: mode 0700 (`Database::open_dir`
/// refuses a directory other local users can read, because it holds the token key).
fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}
