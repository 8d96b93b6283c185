//! The storage the server runs on: SQLite in the data directory, or memory. Opened before
//! anything is served, so a locked or unreadable data dir stops start-up with a clear error.

use std::sync::Arc;

use chat_domain::ChatStore;
use tracing::info;
use voice_adapters_memory::{MemoryChat, MemoryStore};
use voice_adapters_sqlite::{Database, OpenOptions, SqliteChat, SqliteStore};
use voice_adapters_std::HmacKey;
use voice_domain::ports::Secret;

use crate::adapters::ports::ServerStore;
use crate::config::Storage;
use crate::ServeError;

/// Messages kept per room on disk: more than `getMessages` shows
/// ([`chat_domain::MESSAGE_HISTORY`]), so a longer history can be offered later without having
/// lost it.
pub const STORED_MESSAGES_PER_ROOM: usize = 5 * chat_domain::MESSAGE_HISTORY;

/// The settings key of the token-signing key generated when `--token-secret` is not given.
pub const TOKEN_KEY_SETTING: &str = "token_secret";

/// The storage the server runs on. `Default` is everything in memory; [`Backends::open`]
/// gives the one `config.storage` names (SQLite in the data directory by default). A durable
/// chat state plugs in here without touching the protocol code.
#[derive(Clone)]
pub struct Backends {
    /// Users, chat rooms, memberships and messages; also the voice domain's chat directory.
    pub chat: Arc<dyn ChatStore>,
    /// Voice rooms.
    pub store: ServerStore,
    /// A token-signing key kept by the storage, used when `--token-secret` is not given, so
    /// that resume tokens (and users' identities) survive a restart.
    pub token_secret: Option<Secret>,
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            chat: Arc::new(MemoryChat::new()),
            store: ServerStore::Memory(MemoryStore::new()),
            token_secret: None,
        }
    }
}

impl Backends {
    /// Opens the storage `storage` names: in memory, or the SQLite database in the data
    /// directory (created if missing, locked against a second process, migrated), whose chat
    /// state and voice rooms share one file.
    ///
    /// # Errors
    /// [`ServeError::Storage`] naming the directory and what to do.
    pub async fn open(storage: &Storage) -> Result<Self, ServeError> {
        let data_dir = match storage {
            Storage::InMemory => return Ok(Self::default()),
            Storage::Sqlite { data_dir } => data_dir.clone(),
        };
        let db = tokio::task::spawn_blocking(move || {
            Database::open_dir(&data_dir, OpenOptions::default())
        })
        .await
        .map_err(|e| ServeError::Task(e.to_string()))??;
        let chat = SqliteChat::new(db.clone()).with_message_retention(STORED_MESSAGES_PER_ROOM);
        let key = chat
            .setting_or_insert(
                TOKEN_KEY_SETTING,
                HmacKey::random_secret().expose().to_owned(),
            )
            .await
            .map_err(|e| ServeError::StoredKey(e.to_string()))?;
        info!(path = ?db.path(), "state is kept in SQLite");
        Ok(Self {
            chat: Arc::new(chat),
            store: ServerStore::Sqlite(SqliteStore::new(db)),
            token_secret: Some(Secret::new(key)),
        })
    }
}
