//! `Backends::open` and the binary on data directories that cannot be used: each is refused
//! with `ServeError::Storage` (the binary: exit code 1 and one error message) naming the path
//! and what to do, never a panic; and a usable one is created private and locked.

mod server_process;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::json;
use server_process::{base_command, command, Conn, ServerProcess};
use voice_adapters_sqlite::{Database, OpenOptions, SqliteError};
use voice_server::{Backends, ServeError, Storage};

/// Creates `dir` mode 0700, as the server requires of a data directory it did not create.
fn private_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn sqlite(dir: &Path) -> Storage {
    Storage::Sqlite {
        data_dir: dir.to_owned(),
    }
}

async fn open_err(dir: &Path) -> ServeError {
    match Backends::open(&sqlite(dir)).await {
        Ok(_) => panic!("{} should be refused", dir.display()),
        Err(e) => e,
    }
}

/// Runs the binary on `dir` to its exit and checks it refused to start the way an operator
/// can act on: exit code 1 (an error, not 101, a panic), a message naming `named` and `what`.
fn assert_refused(out: &Output, named: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused with an error, not a panic: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&named.display().to_string()),
        "the message names {}: {stderr}",
        named.display()
    );
    assert!(stderr.contains(what), "the message says {what:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_use_by_another_process_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("voice-data");
    let mut first = ServerProcess::start(&dir, &[]).await;

    match open_err(&dir).await {
        ServeError::Storage(SqliteError::Locked { path }) => assert_eq!(path, dir),
        other => panic!("expected Storage(Locked), got {other:?}"),
    }
    let message = open_err(&dir).await.to_string();
    assert!(
        message.contains(&dir.display().to_string()) && message.contains("--data-dir"),
        "{message}"
    );

    let second = command(&dir, &[]).output().expect("run a second server");
    assert_refused(
        &second,
        &dir,
        "in use by another voice-server process; stop that process or pass another --data-dir",
    );

    // The first one is unharmed.
    let mut c = Conn::connect(&first.ws_url()).await;
    c.ok("hello", json!({"name": "Ada"})).await;
    c.ok("createRoom", json!({"name": "Still here"})).await;

    // The lock dies with its process, even on kill -9.
    first.kill9();
    let backends = Backends::open(&sqlite(&dir))
        .await
        .expect("the dead process's lock is gone");
    let rooms = backends.chat.rooms().await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "Still here");
    // In one process too: a second open while the first handle lives is refused.
    match open_err(&dir).await {
        ServeError::Storage(SqliteError::Locked { path }) => assert_eq!(path, dir),
        other => panic!("expected Storage(Locked), got {other:?}"),
    }
    drop(backends);
    Backends::open(&sqlite(&dir))
        .await
        .expect("dropping the backends releases the lock");
}

/// Whether this process may write where the permission bits say it may not (root, or
/// CAP_DAC_OVERRIDE): then only a process of another user can show the refusal.
fn privileged(read_only_dir: &Path) -> bool {
    let probe = read_only_dir.join("probe");
    let wrote = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    wrote
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_that_is_not_writable_is_refused_naming_it() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;

    let tmp = tempfile::tempdir().unwrap();
    // Traversable by anyone (the probe below may run as another user), writable by its owner.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("read-only");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let what = "is not writable by this process";

    if privileged(&dir) {
        // Root writes anywhere: run the binary as `nobody`, for whom the bits hold.
        let mut cmd = command(&dir, &[]);
        cmd.uid(65534).gid(65534);
        let out = cmd.output().expect("run the server as nobody");
        assert_refused(&out, &dir, what);
        eprintln!("running as root: checked the refusal with the binary run as uid 65534");
    } else {
        match open_err(&dir).await {
            ServeError::Storage(SqliteError::NotWritable { path, .. }) => assert_eq!(path, dir),
            other => panic!("expected Storage(NotWritable), got {other:?}"),
        }
        assert_refused(&command(&dir, &[]).output().unwrap(), &dir, what);
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_path_that_is_a_file_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("voice-data");
    std::fs::write(&file, b"not a directory").unwrap();
    for dir in [file.clone(), file.join("below")] {
        match open_err(&dir).await {
            ServeError::Storage(SqliteError::CreateDir { path, .. }) => assert_eq!(path, dir),
            other => panic!("expected Storage(CreateDir), got {other:?}"),
        }
        let message = open_err(&dir).await.to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert_refused(
            &command(&dir, &[]).output().unwrap(),
            &dir,
            "pass another --data-dir",
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_that_is_not_a_database_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("voice-data");
    private_dir(&dir);
    let file = dir.join("voice.sqlite3");
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&file, &garbage).unwrap();
    match open_err(&dir).await {
        ServeError::Storage(SqliteError::Open { path, .. }) => assert_eq!(path, file),
        other => panic!("expected Storage(Open), got {other:?}"),
    }
    assert_refused(
        &command(&dir, &[]).output().unwrap(),
        &file,
        "not a database",
    );
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "left untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("voice-data");
    drop(
        Backends::open(&sqlite(&dir))
            .await
            .expect("a fresh dir opens"),
    );
    let file = dir.join("voice.sqlite3");
    Database::open(&file, OpenOptions::default())
        .unwrap()
        .blocking(|c| {
            c.pragma_update(None, "user_version", 999)?;
            Ok::<_, SqliteError>(())
        })
        .unwrap();
    let err = open_err(&dir).await;
    assert!(
        matches!(
            err,
            ServeError::Storage(SqliteError::TooNew { found: 999, .. })
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&file.display().to_string()) && message.contains("newer"),
        "{message}"
    );
    assert_refused(
        &command(&dir, &[]).output().unwrap(),
        &file,
        "run a newer voice-server or restore a backup",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_data_dir_is_created_private_and_reopened_with_its_state() {
    use std::os::unix::fs::PermissionsExt as _;

    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("nested").join("voice-data");
    let backends = Backends::open(&sqlite(&dir)).await.expect("created");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "it holds users' messages");
    assert!(dir.join("voice.sqlite3").is_file());
    // The database holds the token key: it, its WAL and SHM and the lock are the owner's only.
    for name in ["voice.sqlite3", "voice.sqlite3-wal", "voice.sqlite3-shm"] {
        let f = dir.join(name);
        assert!(f.is_file(), "{name} exists while the database is open");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is private, not {mode:o}");
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{:?} is {mode:o}", entry.file_name());
    }
    let key = backends
        .token_secret
        .as_ref()
        .expect("a token key is kept")
        .expose()
        .to_owned();
    drop(backends);
    let again = Backends::open(&sqlite(&dir)).await.expect("reopened");
    assert_eq!(
        again.token_secret.as_ref().map(|s| s.expose().to_owned()),
        Some(key),
        "the same token key after a reopen"
    );
    assert!(Backends::open(&Storage::InMemory)
        .await
        .unwrap()
        .token_secret
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_chooses_the_data_dir_or_memory() {
    let tmp = tempfile::tempdir().unwrap();
    // VOICE_DATA_DIR stands in for --data-dir (the flag is left out here).
    let from_env = tmp.path().join("from-env");
    let mut by_env = base_command(&[]);
    by_env.env("VOICE_DATA_DIR", &from_env);
    let mut server = ServerProcess::start_command(by_env).await;
    assert!(from_env.join("voice.sqlite3").is_file());
    assert_eq!(server.log_events("state is kept in SQLite").len(), 1);
    server.terminate();

    // VOICE_IN_MEMORY, in the spellings operators use for booleans.
    for (value, in_memory) in [
        ("1", true),
        ("true", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("off", false),
    ] {
        let dir = tmp.path().join(format!("in-memory-{value}"));
        let mut cmd = command(&dir, &[]);
        cmd.env("VOICE_IN_MEMORY", value);
        let mut server = ServerProcess::start_command(cmd).await;
        assert_eq!(
            !dir.exists(),
            in_memory,
            "VOICE_IN_MEMORY={value}: data dir created = {}",
            dir.exists()
        );
        assert_eq!(
            server.log_events("state is kept in SQLite").is_empty(),
            in_memory,
            "VOICE_IN_MEMORY={value}"
        );
        assert!(server.terminate().success());
    }
}

/// Issue 13 finding 7: an existing data directory other local users can enter would let them
/// read the token key (and forge anyone's resume token); it is refused, naming the fix. Older
/// database files left 0644 inside a private directory are narrowed to 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_open_to_other_users_is_refused_and_old_files_are_narrowed() {
    use std::os::unix::fs::PermissionsExt as _;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("voice-data");
    drop(
        Backends::open(&sqlite(&dir))
            .await
            .expect("a fresh dir opens"),
    );
    let db_file = dir.join("voice.sqlite3");
    for mode in [0o755, 0o750, 0o701] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        match open_err(&dir).await {
            ServeError::Storage(SqliteError::OpenPermissions { path, mode: m }) => {
                assert_eq!((path, m), (dir.clone(), mode));
            }
            other => panic!("expected Storage(OpenPermissions), got {other:?}"),
        }
    }
    assert_refused(&command(&dir, &[]).output().unwrap(), &dir, "chmod 700");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&db_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(
        Backends::open(&sqlite(&dir))
            .await
            .expect("a private dir opens"),
    );
    let mode = std::fs::metadata(&db_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the old 0644 database was narrowed");
}

/// Secrets on the command line are readable by every local user in /proc/<pid>/cmdline: the
/// binary refuses them and says where to put them instead; the file option works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_on_the_command_line_are_refused_and_secret_files_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    for (option, env) in [
        ("--token-secret", "VOICE_TOKEN_SECRET"),
        ("--turn-secret", "VOICE_TURN_SECRET"),
    ] {
        let out = base_command(&["--in-memory", option, "0123456789abcdef0123"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(env) && stderr.contains(&format!("{option}-file")),
            "the refusal points to {env} and {option}-file: {stderr}"
        );
        assert!(!stderr.contains("0123456789abcdef0123"), "{stderr}");
    }
    let key = tmp.path().join("token.key");
    std::fs::write(&key, "a-token-key-from-a-file-0123\n").unwrap();
    let key_arg = key.display().to_string();
    let mut server = ServerProcess::start_command(base_command(&[
        "--in-memory",
        "--token-secret-file",
        &key_arg,
    ]))
    .await;
    let mut c = Conn::connect(&server.ws_url()).await;
    c.ok("hello", json!({"name": "Ada"})).await;
    assert!(server.terminate().success());
}
