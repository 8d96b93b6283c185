//! The self-hosted chat directory on SQLite (in progress).

use crate::db::Database;

/// The chat directory in SQLite. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteChat {
    db: Database,
}

impl SqliteChat {
    /// A directory over an open database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }
}
