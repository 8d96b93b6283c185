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
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
    let db = Database::open_dir(dir.path(), OpenOptions::default()).expect("open data dir");
    store_contract(&SqliteStore::new(db), "sqlite").await;
}

#[test]
fn sqlite_store_keeps_the_store_contract_without_a_tokio_runtime() {
    let db = Database::open_in_memory().expect("open in memory");
    futures::executor::block_on(store_contract(&SqliteStore::new(db), "sqlite-noruntime"));
}
