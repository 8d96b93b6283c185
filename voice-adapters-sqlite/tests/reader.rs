//! Reads on a file run on their own connection (issue 13): a read does not wait for a write
//! that holds the writer connection (in production: a commit waiting for its `fsync`, which one
//! user's message flood kept busy ~40 % of the time), and it sees every write that returned.

use std::sync::mpsc;
use std::time::Duration;

use voice_adapters_sqlite::{Database, OpenOptions, SqliteError};

fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

fn count(c: &mut rusqlite::Connection) -> Result<i64, SqliteError> {
    Ok(c.query_row("SELECT COUNT(*) FROM settings", [], |r| r.get(0))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_runs_while_a_write_holds_the_writer_and_sees_what_was_written() {
    let dir = private_tempdir();
    let db = Database::open_dir(dir.path(), OpenOptions::default()).unwrap();
    db.run(|c| {
        c.execute("INSERT INTO settings (key, value) VALUES ('a', '1')", [])?;
        Ok::<_, SqliteError>(())
    })
    .await
    .unwrap();

    // A write that holds the writer connection until told to finish.
    let (release, held) = mpsc::channel::<()>();
    let (started, writing) = mpsc::channel::<()>();
    let writer = tokio::spawn({
        let db = db.clone();
        async move {
            db.run(move |c| {
                let tx = c.transaction()?;
                tx.execute("INSERT INTO settings (key, value) VALUES ('b', '2')", [])?;
                started.send(()).unwrap();
                held.recv().unwrap();
                tx.commit()?;
                Ok::<_, SqliteError>(())
            })
            .await
        }
    });
    tokio::task::spawn_blocking(move || writing.recv().unwrap())
        .await
        .unwrap();

    // The read answers while the write is still open (a guard against a hang, not a timing
    // assertion: behind the writer it would never answer), with the committed rows only.
    let during = tokio::time::timeout(Duration::from_secs(60), db.read(count))
        .await
        .expect("a read waited for the writer connection")
        .unwrap();
    assert_eq!(during, 1, "the open write is not visible");

    release.send(()).unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!(
        db.read(count).await.unwrap(),
        2,
        "a returned write is visible"
    );

    let refused = db
        .read(|c| {
            c.execute("DELETE FROM settings", [])?;
            Ok::<_, SqliteError>(())
        })
        .await;
    assert!(refused.is_err(), "the reader connection does not write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_reads_share_the_one_connection() {
    let db = Database::open_in_memory().unwrap();
    db.run(|c| {
        c.execute("INSERT INTO settings (key, value) VALUES ('a', '1')", [])?;
        Ok::<_, SqliteError>(())
    })
    .await
    .unwrap();
    assert_eq!(db.read(count).await.unwrap(), 1);
}
