//! The shared voice-room store contract, run against the SQLite store: in memory, and on a
//! WAL file on disk (the configuration the server runs).

use voice_adapters_sqlite::{Database, OpenOptions, SqliteStore};
use voice_domain::contract::store_contract;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_in_memory_keeps_the_store_contract() {
    let db = Database::open_in_memory().expect("open in memory");
    store_contract(&SqliteStore::new(db), "sqlite-mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_on_disk_keeps_the_store_contract() {
    let dir = private_tempdir();
    let db = Database::open_dir(dir.path(), OpenOptions::default()).expect("open data dir");
    store_contract(&SqliteStore::new(db), "sqlite").await;
}

#[test]
fn sqlite_store_keeps_the_store_contract_without_a_tokio_runtime() {
    let db = Database::open_in_memory().expect("open in memory");
    futures::executor::block_on(store_contract(&SqliteStore::new(db), "sqlite-noruntime"));
}

/// The reconnecting state lives in the `parts` blob, which needs no schema change: a room
/// written by a build from before resume (a blob without `reconnecting_since`) reads back with
/// every participant connected, and the state a new build writes is read back as written.
#[test]
fn rooms_stored_before_resume_read_as_connected_and_the_state_round_trips() {
    use voice_domain::contract::sample_room;
    use voice_domain::ports::VoiceRoomStore;
    use voice_domain::{ConnectionId, Timestamp};

    let db = Database::open_in_memory().expect("open in memory");
    let store = SqliteStore::new(db.clone());
    let mut room = sample_room("mig", "r", "chat", "alice", "c1");
    futures::executor::block_on(store.create_if_none_active(&room)).expect("create");
    room.mark_reconnecting(
        &ConnectionId::parse("mig-c1").unwrap(),
        Timestamp::from_millis(1_700_000_001_000),
    )
    .expect("mark")
    .expect("alice was connected");
    room.bump_version();
    futures::executor::block_on(store.update(&room)).expect("update");
    assert_eq!(
        futures::executor::block_on(store.get(room.id())).expect("get"),
        Some(room.clone())
    );
    // Rewrite the row as the previous build would have written it.
    db.blocking(|c| {
        let parts: String = c.query_row("SELECT parts FROM voice_rooms", [], |r| r.get(0))?;
        assert!(parts.contains("reconnecting_since"), "{parts}");
        let mut v: serde_json::Value = serde_json::from_str(&parts).unwrap();
        for p in v["participants"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("reconnecting_since");
        }
        c.execute("UPDATE voice_rooms SET parts = ?1", [v.to_string()])?;
        Ok::<_, rusqlite::Error>(())
    })
    .expect("rewrite");
    let read = futures::executor::block_on(store.get(room.id()))
        .expect("get")
        .expect("stored");
    assert!(read.participants().iter().all(|p| !p.is_reconnecting()));
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
