//! Ended voice rooms are forgotten after the retention period, not kept forever, and a database
//! written before that rule (schema v1) learns when its ended rooms ended.

use std::time::Duration;

use rusqlite::Connection;
use voice_adapters_sqlite::migrations::MIGRATIONS;
use voice_adapters_sqlite::{Database, OpenOptions, SqliteStore};
use voice_domain::contract::sample_room;
use voice_domain::ports::VoiceRoomStore;
use voice_domain::{Timestamp, VoiceRoom};

const DAY_MS: u64 = 24 * 3600 * 1000;
/// `sample_room`'s start time.
const T0: u64 = 1_700_000_000_000;

/// `room` ended by its master at `at`, as the service would store it.
fn ended(room: &VoiceRoom, at: u64) -> VoiceRoom {
    let mut r = room.clone();
    let master = r.master().clone();
    r.end(&master, false, Timestamp::from_millis(at)).unwrap();
    r.bump_version();
    r
}

#[tokio::test]
async fn ended_rooms_are_kept_for_the_retention_then_forgotten_and_active_ones_never() {
    let store = SqliteStore::new(Database::open_in_memory().unwrap());
    let a = sample_room("ret", "a", "chat-a", "u", "k");
    let b = sample_room("ret", "b", "chat-b", "u", "k");
    let c = sample_room("ret", "c", "chat-c", "u", "k");
    let live = sample_room("ret", "live", "chat-live", "u", "k");
    for r in [&a, &b, &c, &live] {
        store.create_if_none_active(r).await.unwrap();
    }
    store.update(&ended(&a, T0 + 1000)).await.unwrap();
    // Six days later another room ends: `a` is still within the 7 days.
    store.update(&ended(&b, T0 + 6 * DAY_MS)).await.unwrap();
    assert!(store.get(a.id()).await.unwrap().is_some());
    // Eight days after `a` ended, ending `c` forgets `a` but keeps `b` (two days old).
    store.update(&ended(&c, T0 + 8 * DAY_MS)).await.unwrap();
    assert!(store.get(a.id()).await.unwrap().is_none(), "a is forgotten");
    assert!(store
        .get(b.id())
        .await
        .unwrap()
        .is_some_and(|r| !r.is_active()));
    assert!(store.get(c.id()).await.unwrap().is_some());
    // A room that started long before and is still active is never touched.
    assert!(store
        .get(live.id())
        .await
        .unwrap()
        .is_some_and(|r| r.is_active()));
    assert_eq!(store.list_active().await.unwrap().len(), 1);
    // The chat room of a forgotten room can start a new voice room, as after any end.
    store
        .create_if_none_active(&sample_room("ret", "a2", "chat-a", "u", "k"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_retention_is_configurable() {
    let store = SqliteStore::new(Database::open_in_memory().unwrap())
        .with_ended_retention(Duration::from_secs(60));
    let a = sample_room("cfg", "a", "chat-a", "u", "k");
    let b = sample_room("cfg", "b", "chat-b", "u", "k");
    store.create_if_none_active(&a).await.unwrap();
    store.create_if_none_active(&b).await.unwrap();
    store.update(&ended(&a, T0)).await.unwrap();
    store.update(&ended(&b, T0 + 61_000)).await.unwrap();
    assert!(store.get(a.id()).await.unwrap().is_none());
    assert!(store.get(b.id()).await.unwrap().is_some());
}

#[tokio::test]
async fn a_v1_database_learns_when_its_ended_rooms_ended() {
    let dir = private_tempdir();
    let path = dir.path().join("v1.sqlite3");
    // A file as the first release wrote it: schema v1, one ended room, one active room.
    let old_end = T0 + 5000;
    let gone = ended(&sample_room("v1", "old", "chat-old", "u", "k"), old_end);
    let active = sample_room("v1", "on", "chat-on", "u", "k");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        for r in [&gone, &active] {
            conn.execute(
                "INSERT INTO voice_rooms (id, chat_room_id, status, version, created_at_ms, parts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    r.id().as_str(),
                    r.chat_room().as_str(),
                    if r.is_active() { "active" } else { "ended" },
                    r.version() as i64,
                    r.created_at().as_millis() as i64,
                    serde_json::to_string(r.parts()).unwrap(),
                ],
            )
            .unwrap();
        }
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let ends: Vec<(String, Option<i64>)> = db
        .blocking(|c| {
            let mut st =
                c.prepare("SELECT id, ended_at_ms FROM voice_rooms ORDER BY created_at_ms, id")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    assert!(
        ends.contains(&(gone.id().to_string(), Some(old_end as i64))),
        "the end time read from the room itself: {ends:?}"
    );
    assert!(ends.contains(&(active.id().to_string(), None)), "{ends:?}");
    // And the retention applies to it: a room ending 8 days later forgets it.
    let store = SqliteStore::new(db);
    let later = sample_room("v1", "later", "chat-later", "u", "k");
    store.create_if_none_active(&later).await.unwrap();
    store
        .update(&ended(&later, old_end + 8 * DAY_MS))
        .await
        .unwrap();
    assert!(store.get(gone.id()).await.unwrap().is_none());
    assert!(store.get(active.id()).await.unwrap().is_some());
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
