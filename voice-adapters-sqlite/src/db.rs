//! The database handle both adapters share: opening (pragmas, migrations, the data-directory
//! lock) and running blocking SQLite calls from async code.
//!
//! # Why one writer connection behind a std `Mutex`, called through `spawn_blocking`
//! rusqlite is blocking, and with `synchronous=FULL` every commit waits for an `fsync` (from
//! tens of microseconds on an SSD to tens of milliseconds on a network volume). Running that on
//! a tokio worker would stall every WebSocket that worker serves, so each call moves to tokio's
//! blocking pool with [`tokio::task::spawn_blocking`]. Behind it sits one connection in a std
//! mutex: SQLite allows one writer at a time anyway, and a self-hosted chat server's load (human
//! typing speed, a few voice-room changes per minute) is far below what one connection serves,
//! so a pool of writers would add moving parts without adding throughput. The lock is held for
//! exactly one short closure (one transaction), never across an `.await`.
//!
//! # A second connection for reads
//! One connection made every read wait behind a commit's `fsync`. Measured (issue 13,
//! BENCHMARKS.md "One-user floods"): one user sending 100 messages/s (their whole frame
//! budget) kept it busy ~40 % of the time on a disk with 4 ms `fsync`s, and another user's p99
//! went up to 4.9× its quiet value. So a file database also opens a reader connection
//! (`query_only`) that [`Database::read`] uses: in WAL mode a reader runs while the writer
//! commits and sees every commit that has returned. Writes (and reads inside a write's
//! transaction) stay on the one writer. In memory there is one connection only.
//!
//! Without a tokio runtime (a `futures::executor::block_on` caller) the closure runs inline
//! rather than panicking. A future dropped mid-call does not cancel the closure: the
//! transaction either commits whole or rolls back whole, never half.
//!
//! # Durability: `synchronous=FULL` by default
//! The promise is "every acknowledged write survives `kill -9`". In WAL mode a commit appends
//! to the `-wal` file with `write(2)` before it returns, so once a reply is sent the data is in
//! the operating system's page cache, and a process crash (`kill -9`, a panic, the OOM killer)
//! cannot lose it: with WAL, `synchronous=NORMAL` already keeps that promise. What NORMAL
//! gives up is the last transactions on *power loss or a kernel crash*, because it only
//! `fsync`s at checkpoints. A self-hosted chat server often runs on a small VPS or a home box
//! that does get rebooted hard, its write rate is low, and users were told "sent", so the
//! default is [`Synchronous::Full`] (one `fsync` of the WAL per commit).
//! [`Synchronous::Normal`] is there for operators who prefer throughput and accept that
//! trade-off; it still survives process crashes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use voice_domain::ports::{DirectoryError, PortFailure, StoreError};

use crate::migrations::MIGRATIONS;

/// The database file's name inside a data directory.
pub const DATABASE_FILE: &str = "voice.sqlite3";

/// The lock file's name inside a data directory; held (`flock`) while a [`Database`] is open,
/// so that two server processes cannot share one data directory. The kernel releases it when
/// the process dies, even on `kill -9`.
pub const LOCK_FILE: &str = "voice.lock";

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `fsync` the WAL on every commit: acknowledged writes survive process crashes *and*
    /// power loss. The default (see the module docs).
    #[default]
    Full,
    /// `fsync` only at checkpoints: acknowledged writes survive process crashes, but the last
    /// transactions may be lost on power loss or a kernel crash. Faster.
    Normal,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// How to open a database. `Default` is what the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long a statement waits for another connection's write lock before failing with a
    /// retryable error (only relevant when several connections share a file).
    pub busy_timeout: Duration,
    /// How long [`Database::open_dir`] keeps trying to take the data directory's lock before
    /// answering [`SqliteError::Locked`]. A lock is briefly held by whoever shares its file
    /// description: a previous server process that is still exiting (a restart by a service
    /// manager), or a child forked by this process between `fork` and `exec`. Waiting a moment
    /// tells those apart from a second server that really runs on the directory.
    pub lock_wait: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            lock_wait: Duration::from_secs(2),
        }
    }
}

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The data directory could not be created.
    #[error("could not create the data directory {path}: {source}; create it or pass another --data-dir")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory exists but this process cannot create files in it (its owner or
    /// permissions are another user's, or it is on a read-only file system).
    #[error("the data directory {path} is not writable by this process ({source}); fix its owner or permissions, or pass another --data-dir")]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory can be read or entered by other local users (group or other
    /// permission bits set): its database holds the token-signing key and users' messages.
    #[error("the data directory {path} is accessible to other users (mode {mode:03o}); it holds the token key and users' messages: run `chmod 700 {path}` or pass another --data-dir")]
    OpenPermissions {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another process holds the data directory's lock.
    #[error("the data directory {path} is in use by another voice-server process; stop that process or pass another --data-dir")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The database file could not be opened or configured.
    #[error("could not open the database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file system refused WAL mode (some network file systems do).
    #[error("the database {path} cannot use WAL mode (journal_mode stayed {mode}); put --data-dir on a local disk")]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The file was written by a newer build.
    #[error("the database {path} has schema version {found}, newer than this build knows ({known}); run a newer voice-server or restore a backup")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// The file's `user_version`.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A migration failed; the transaction rolled back, the file is unchanged.
    #[error("migrating the database {path} to schema version {version} failed: {source}")]
    Migration {
        /// The file.
        path: PathBuf,
        /// The version being applied.
        version: i64,
        /// Why.
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored row cannot be turned back into a domain value.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The blocking task running the statement did not finish (the runtime is shutting down).
    #[error("the database worker stopped: {0}")]
    Worker(String),
}

impl SqliteError {
    /// Whether the same call may succeed later: the file was locked by another connection
    /// (busy timeout exceeded) or the runtime was busy shutting down. Everything else (a full
    /// disk, a read-only file, corruption) needs the operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            SqliteError::Sql(e) => matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            SqliteError::Worker(_) => true,
            _ => false,
        }
    }

    /// The port failure the domain understands. The message names no secret (SQL errors do
    /// not carry bound values).
    pub fn to_failure(&self) -> PortFailure {
        if self.is_retryable() {
            PortFailure::retryable(self.to_string())
        } else {
            PortFailure::permanent(self.to_string())
        }
    }
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        match e {
            SqliteError::Corrupt(why) => StoreError::Corrupt(voice_domain::room::CorruptRoom(why)),
            other => StoreError::Unavailable(other.to_failure()),
        }
    }
}

impl From<SqliteError> for DirectoryError {
    fn from(e: SqliteError) -> Self {
        DirectoryError::Unavailable(e.to_failure())
    }
}

struct Shared {
    conn: Mutex<Connection>,
    /// A second connection to the same file for [`Database::read`] (`query_only`), so that a
    /// read never waits for a commit's `fsync` (WAL lets readers run during a write). `None`
    /// in memory, where a second connection would be a second database.
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// Held for the life of the handle; dropping it releases the data-directory lock.
    _lock: Option<File>,
}

/// An open, migrated database. Cheap to clone; clones share one writer connection (and one
/// reader), so a [`SqliteStore`](crate::SqliteStore) and a [`SqliteChat`](crate::SqliteChat)
/// built from the same handle see each other's writes immediately.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) `dir/voice.sqlite3`, after creating `dir` (mode 0700 on Unix:
    /// it holds users' messages) and taking its lock file. This is what the server calls.
    ///
    /// # Errors
    /// [`SqliteError::CreateDir`], [`SqliteError::NotWritable`] when `dir` exists but its lock
    /// file cannot be created, [`SqliteError::Locked`] when another process uses `dir`, or any
    /// error of [`Database::open`].
    pub fn open_dir(dir: &Path, options: OpenOptions) -> Result<Self, SqliteError> {
        create_private_dir(dir).map_err(|source| SqliteError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| SqliteError::NotWritable {
                path: dir.to_owned(),
                source,
            })?;
        let deadline = std::time::Instant::now() + options.lock_wait;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SqliteError::Locked {
                        path: dir.to_owned(),
                    })
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(SqliteError::CreateDir {
                        path: dir.to_owned(),
                        source,
                    })
                }
            }
        }
        refuse_shared_dir(dir)?;
        let db_file = dir.join(DATABASE_FILE);
        private_files(&db_file).map_err(|source| SqliteError::NotWritable {
            path: dir.to_owned(),
            source,
        })?;
        Self::open_with_lock(&db_file, options, Some(lock))
    }

    /// Opens (creating if needed) the database file at `path` without a directory lock: for
    /// tests that open one file from several connections on purpose.
    ///
    /// # Errors
    /// [`SqliteError::Open`] if the file cannot be opened or put in WAL mode,
    /// [`SqliteError::TooNew`], [`SqliteError::Migration`].
    pub fn open(path: &Path, options: OpenOptions) -> Result<Self, SqliteError> {
        Self::open_with_lock(path, options, None)
    }

    fn open_with_lock(
        path: &Path,
        options: OpenOptions,
        lock: Option<File>,
    ) -> Result<Self, SqliteError> {
        let open_err = |source| SqliteError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        configure(&conn, options).map_err(open_err)?;
        migrate(&mut conn, path)?;
        let reader = Connection::open(path).map_err(open_err)?;
        reader
            .busy_timeout(options.busy_timeout)
            .map_err(open_err)?;
        configure(&reader, options).map_err(open_err)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(open_err)?;
        tracing::info!(path = %path.display(), schema_version = MIGRATIONS.len(), "database open");
        Ok(Self::wrap(conn, Some(reader), Some(path.to_owned()), lock))
    }

    /// A private in-memory database (nothing survives the handle): for tests and for running
    /// the SQLite adapters without a disk.
    ///
    /// # Errors
    /// [`SqliteError::Open`], [`SqliteError::Migration`].
    pub fn open_in_memory() -> Result<Self, SqliteError> {
        let path = PathBuf::from(":memory:");
        let mut conn = Connection::open_in_memory().map_err(|source| SqliteError::Open {
            path: path.clone(),
            source,
        })?;
        configure(&conn, OpenOptions::default()).map_err(|source| SqliteError::Open {
            path: path.clone(),
            source,
        })?;
        migrate(&mut conn, &path)?;
        Ok(Self::wrap(conn, None, None, None))
    }

    fn wrap(
        conn: Connection,
        reader: Option<Connection>,
        path: Option<PathBuf>,
        lock: Option<File>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                reader: reader.map(Mutex::new),
                path,
                _lock: lock,
            }),
        }
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// The schema version of the open file (`PRAGMA user_version`).
    ///
    /// # Errors
    /// [`SqliteError::Sql`].
    pub fn schema_version(&self) -> Result<i64, SqliteError> {
        self.blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
    }

    /// Runs `f` on the connection, here and now (blocking the calling thread). For start-up
    /// code and tests; async code uses [`Database::run`].
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn blocking<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E> {
        let mut conn = lock(&self.shared.conn);
        f(&mut conn)
    }

    /// Runs `f` on the connection from async code, on tokio's blocking pool (inline when there
    /// is no tokio runtime). See the module docs for why.
    ///
    /// # Errors
    /// Whatever `f` returns, or [`SqliteError::Worker`] (converted) if the blocking task could
    /// not finish.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let work = move || {
            let mut conn = lock(&shared.conn);
            f(&mut conn)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.spawn_blocking(work).await {
                Ok(result) => result,
                Err(join) => {
                    tracing::error!(error = %join, "database task did not finish");
                    Err(E::from(SqliteError::Worker(join.to_string())))
                }
            },
            Err(_) => work(),
        }
    }
}

impl Database {
    /// As [`Database::run`], for a closure that only reads: on a file it runs on the reader
    /// connection, beside (not behind) a write that is committing. It sees every write whose
    /// call has returned (WAL: a read begins at the latest commit). In memory it is `run`.
    ///
    /// # Errors
    /// As [`Database::run`]; a write in `f` fails (`query_only`).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        if self.shared.reader.is_none() {
            return self.run(f).await;
        }
        let shared = Arc::clone(&self.shared);
        let work = move || match &shared.reader {
            Some(reader) => f(&mut lock(reader)),
            None => f(&mut lock(&shared.conn)),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.spawn_blocking(work).await {
                Ok(result) => result,
                Err(join) => {
                    tracing::error!(error = %join, "database task did not finish");
                    Err(E::from(SqliteError::Worker(join.to_string())))
                }
            },
            Err(_) => work(),
        }
    }
}

/// Locks the connection. A panic inside a closure unwinds through rusqlite's `Transaction`,
/// whose drop rolls back, so a poisoned connection holds no half-done write: recover it.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection, options: OpenOptions) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", options.synchronous.pragma_value())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Applies every migration newer than the file's `user_version`, in order, in one IMMEDIATE
/// transaction (so two processes opening a fresh file cannot both migrate it), and sets the
/// version in the same transaction: a crash mid-way leaves the file at the old version.
/// Every error names `path` (a read-only or busy file fails here first).
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    migrate_inner(conn, path).map_err(|e| match e {
        SqliteError::Sql(source) => SqliteError::Open {
            path: path.to_owned(),
            source,
        },
        other => other,
    })
}

fn migrate_inner(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(SqliteError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    if found == known {
        return Ok(());
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS.iter())
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql)
            .map_err(|source| SqliteError::Migration {
                path: path.to_owned(),
                version,
                source,
            })?;
        tracing::info!(version, "applied database migration");
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// File options that create files readable and writable by their owner only (0600).
fn private_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut o = File::options();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o
}

/// Refuses a data directory with any group or other permission bit (Unix).
fn refuse_shared_dir(dir: &Path) -> Result<(), SqliteError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)
            .map_err(|source| SqliteError::CreateDir {
                path: dir.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SqliteError::OpenPermissions {
                path: dir.to_owned(),
                mode,
            });
        }
    }
    let _ = dir;
    Ok(())
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives its `-wal` and `-shm`
/// files the database file's permissions), and narrows an existing database, WAL or SHM file
/// that an older version left 0644.
fn private_files(db_file: &Path) -> std::io::Result<()> {
    drop(
        private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(db_file)?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut names = vec![db_file.to_owned()];
        for suffix in ["-wal", "-shm"] {
            let mut n = db_file.as_os_str().to_owned();
            n.push(suffix);
            names.push(PathBuf::from(n));
        }
        for f in names {
            match std::fs::metadata(&f) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Milliseconds as SQLite's signed 64-bit integer (saturating; no timestamp reaches 2^63 ms).
pub(crate) fn to_sql_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored non-negative integer back to `u64`.
pub(crate) fn from_sql_i64(v: i64, what: &str) -> Result<u64, SqliteError> {
    u64::try_from(v).map_err(|_| SqliteError::Corrupt(format!("negative {what}: {v}")))
}
