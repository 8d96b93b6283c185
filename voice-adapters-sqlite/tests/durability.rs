//! What issue 7 asks for: rooms, memberships and messages are still there after the database
//! is closed and opened again; migrations run once; one data directory, one process; racing
//! starts from separate connections still yield one active voice room.

use std::path::Path;
use std::sync::{Arc, Barrier};

use chat_domain::{ChatMessage, ChatStore as _, RoomRecord};
use voice_adapters_sqlite::migrations::MIGRATIONS;
use voice_adapters_sqlite::{Database, OpenOptions, SqliteChat, SqliteError, SqliteStore};
use voice_domain::contract::sample_room;
use voice_domain::ports::{ChatDirectory, MemberState, StoreError, VoiceRoomStore};
use voice_domain::{ChatRoomId, ConnectionId, Timestamp, UserId};

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn room(s: &str) -> ChatRoomId {
    ChatRoomId::parse(s).unwrap()
}
fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}
fn message(room: &str, user: &str, text: &str, at: u64) -> ChatMessage {
    ChatMessage {
        room_id: room.into(),
        user_id: user.into(),
        name: format!("name-of-{user}"),
        text: text.into(),
        at,
    }
}

fn open(dir: &Path) -> (SqliteChat, SqliteStore) {
    let db = Database::open_dir(dir, OpenOptions::default()).expect("open data dir");
    (SqliteChat::new(db.clone()), SqliteStore::new(db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_memberships_messages_and_voice_rooms_survive_a_reopen() {
    let dir = private_tempdir();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    let lobby = room("lobby");
    let (active_id, ended_id) = {
        let (chat, store) = open(dir.path());
        chat.bind_connection(&conn("c-ann"), &ann, "Ann")
            .await
            .unwrap();
        chat.bind_connection(&conn("c-bob"), &bob, "Bob")
            .await
            .unwrap();
        chat.bind_connection(&conn("c-cat"), &cat, "Cat")
            .await
            .unwrap();
        chat.create_room(
            &RoomRecord {
                id: lobby.clone(),
                name: "Lobby".into(),
                admin: ann.clone(),
            },
            usize::MAX,
        )
        .await
        .unwrap();
        chat.create_room(
            &RoomRecord {
                id: room("other"),
                name: "Other".into(),
                admin: bob.clone(),
            },
            usize::MAX,
        )
        .await
        .unwrap();
        chat.request_join(&lobby, &bob, chat_domain::JoinQuotas::UNLIMITED)
            .await
            .unwrap();
        chat.request_join(&lobby, &cat, chat_domain::JoinQuotas::UNLIMITED)
            .await
            .unwrap();
        chat.decide_join(&lobby, &bob, true).await.unwrap();
        for i in 0..3 {
            chat.append_message(&lobby, &message("lobby", "ann", &format!("m{i}"), 10 + i))
                .await
                .unwrap();
        }
        let active = sample_room("dur", "v1", "chat-a", "ann", "c-ann");
        store.create_if_none_active(&active).await.unwrap();
        let mut ended = sample_room("dur", "v2", "chat-b", "bob", "c-bob");
        store.create_if_none_active(&ended).await.unwrap();
        let master = ended.master().clone();
        ended
            .end(&master, false, Timestamp::from_millis(5))
            .unwrap();
        ended.bump_version();
        store.update(&ended).await.unwrap();
        (active.id().clone(), ended.id().clone())
    };

    let (chat, store) = open(dir.path());
    let rooms = chat.rooms().await.unwrap();
    assert_eq!(
        rooms
            .iter()
            .map(|r| (r.id.as_str(), r.name.as_str(), r.admin.as_str()))
            .collect::<Vec<_>>(),
        vec![("lobby", "Lobby", "ann"), ("other", "Other", "bob")]
    );
    assert_eq!(
        chat.members(&lobby).await.unwrap(),
        vec![
            (ann.clone(), MemberState::Approved),
            (bob.clone(), MemberState::Approved),
            (cat.clone(), MemberState::Pending),
        ]
    );
    let m = chat.membership(&lobby, &ann).await.unwrap().unwrap();
    assert!(m.is_admin && m.state == MemberState::Approved);
    assert_eq!(chat.user_name(&bob).await.unwrap().as_deref(), Some("Bob"));
    let texts: Vec<_> = chat
        .message_page(&lobby, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.message.text, m.message.at, m.message.name))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("m0".to_string(), 10, "name-of-ann".to_string()),
            ("m1".to_string(), 11, "name-of-ann".to_string()),
            ("m2".to_string(), 12, "name-of-ann".to_string()),
        ]
    );
    // Connections died with the old handle: nobody is online, nobody hears events.
    assert_eq!(chat.user_of(&conn("c-ann")).await.unwrap(), None);
    assert!(chat.connections_of(&lobby).await.unwrap().is_empty());
    // The pending request is still pending and can be decided after the restart.
    chat.decide_join(&lobby, &cat, true).await.unwrap();
    // Voice rooms: the active one is still active (start-up recovery is the service's sweep),
    // the ended one still ended, and the one-active rule still holds.
    let active = store
        .get(&active_id)
        .await
        .unwrap()
        .expect("active room kept");
    assert!(active.is_active());
    assert!(!store.get(&ended_id).await.unwrap().unwrap().is_active());
    assert_eq!(store.list_active().await.unwrap(), vec![active.clone()]);
    assert_eq!(
        store
            .active_with_connection(&active.participants()[0].connection)
            .await
            .unwrap(),
        vec![active.clone()]
    );
    let rival = sample_room("dur", "v3", "chat-a", "bob", "c-x");
    assert_eq!(
        store.create_if_none_active(&rival).await,
        Err(StoreError::AlreadyActive {
            existing: active_id
        })
    );
}

#[test]
fn migrations_run_once_and_reopening_is_idempotent() {
    let dir = private_tempdir();
    let path = dir.path().join("db.sqlite3");
    let known = i64::try_from(MIGRATIONS.len()).unwrap();
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.schema_version().unwrap(), known);
    db.blocking(|c| {
        c.execute(
            "INSERT INTO settings (key, value) VALUES ('probe', 'kept')",
            [],
        )
    })
    .unwrap();
    drop(db);
    for _ in 0..3 {
        // Re-running migration 1 on a migrated file would fail ("table already exists"), and
        // would not keep the row: both show the migration was skipped.
        let db = Database::open(&path, OpenOptions::default()).expect("reopen");
        assert_eq!(db.schema_version().unwrap(), known);
        let kept: String = db
            .blocking(|c| {
                c.query_row("SELECT value FROM settings WHERE key = 'probe'", [], |r| {
                    r.get(0)
                })
            })
            .unwrap();
        assert_eq!(kept, "kept");
        let mode: String = db
            .blocking(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = db
            .blocking(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL by default");
    }
}

#[test]
fn a_database_from_a_newer_build_is_refused_untouched() {
    let dir = private_tempdir();
    let path = dir.path().join("db.sqlite3");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    let future = i64::try_from(MIGRATIONS.len()).unwrap() + 1;
    db.blocking(|c| c.pragma_update(None, "user_version", future))
        .unwrap();
    drop(db);
    match Database::open(&path, OpenOptions::default()) {
        Err(SqliteError::TooNew { found, .. }) => assert_eq!(found, future),
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn a_lock_released_within_lock_wait_is_taken_and_one_held_longer_is_refused() {
    use std::time::{Duration, Instant};
    let dir = private_tempdir();
    let data = dir.path().join("data");
    let first = Database::open_dir(&data, OpenOptions::default()).unwrap();
    // A predecessor that lets go after 200 ms (a server still exiting): the open waits for it.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(first);
    });
    let started = Instant::now();
    let second = Database::open_dir(&data, OpenOptions::default())
        .expect("the lock is free again within lock_wait");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it did wait"
    );
    releaser.join().unwrap();
    // One that keeps it: refused once lock_wait is over, not before, and not forever.
    let short = OpenOptions {
        lock_wait: Duration::from_millis(300),
        ..OpenOptions::default()
    };
    let started = Instant::now();
    match Database::open_dir(&data, short) {
        Err(SqliteError::Locked { path }) => assert_eq!(path, data),
        other => panic!("expected Locked, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    drop(second);
}

#[test]
fn a_data_directory_is_used_by_one_process_at_a_time() {
    let dir = private_tempdir();
    let data = dir.path().join("nested").join("data");
    let first = Database::open_dir(&data, OpenOptions::default()).expect("creates the dir");
    match Database::open_dir(&data, OpenOptions::default()) {
        Err(SqliteError::Locked { path }) => assert_eq!(path, data),
        other => panic!("a second open must be refused, got {other:?}"),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the data dir holds messages: owner only"
        );
    }
    drop(first);
    Database::open_dir(&data, OpenOptions::default()).expect("free again once closed");
}

#[test]
fn racing_starts_from_separate_connections_yield_one_active_room() {
    let dir = private_tempdir();
    let path = dir.path().join("race.sqlite3");
    Database::open(&path, OpenOptions::default()).unwrap();
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Each thread its own connection: the database, not our mutex, must serialise.
                let store =
                    SqliteStore::new(Database::open(&path, OpenOptions::default()).unwrap());
                let room = sample_room(
                    "thr",
                    &format!("r{i}"),
                    "one-chat",
                    &format!("u{i}"),
                    &format!("c{i}"),
                );
                barrier.wait();
                let result = futures::executor::block_on(store.create_if_none_active(&room));
                (room.id().clone(), result)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one start wins: {results:?}");
    for (_, r) in &results {
        match r {
            Ok(()) => {}
            Err(StoreError::AlreadyActive { existing }) => assert_eq!(existing, &winners[0]),
            Err(e) => panic!("a loser must get AlreadyActive, got {e:?}"),
        }
    }
    let store = SqliteStore::new(Database::open(&path, OpenOptions::default()).unwrap());
    let active = futures::executor::block_on(store.list_active()).unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id(), &winners[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_starts_through_spawn_blocking_on_one_handle_yield_one_active_room() {
    let store = SqliteStore::new(Database::open_in_memory().unwrap());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let room = sample_room(
                    "tok",
                    &format!("r{i}"),
                    "chat",
                    &format!("u{i}"),
                    &format!("c{i}"),
                );
                store
                    .create_if_none_active(&room)
                    .await
                    .map(|()| room.id().clone())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        if let Ok(id) = t.await.unwrap() {
            winners.push(id);
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(store.list_active().await.unwrap().len(), 1);
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
