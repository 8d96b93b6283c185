//! The self-hosted chat directory on SQLite: users, chat rooms (id, name, admin, created_at),
//! memberships (approved / pending), join-request decisions and recent messages survive a
//! restart; which connection belongs to which user does not.
//!
//! # Connections live in memory
//! A connection is a socket of *this* process: after a restart (or `kill -9`) none of them
//! exists any more. Keeping them in a table would cost an `fsync` per connect and disconnect
//! and need a "clear at start-up" step that a crash could skip; a map in memory is empty at
//! start-up by construction. That is also what makes start-up recovery work: every participant
//! of a voice room left active by the previous process has a connection the directory does not
//! know, so the server marks them reconnecting
//! ([`VoiceService::restarted`](voice_domain::VoiceService::restarted)); they resume from new
//! connections within the grace, or the sweep ends the room.
//!
//! # Shape
//! [`SqliteChat`] implements the chat domain's [`ChatStore`] port directly (and so the voice
//! domain's [`ChatDirectory`], which voice reads): no mirror types, no translation layer. It
//! runs the chat store contract suite (`tests/chat.rs`) like the memory store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_domain::{
    ChatMessage, ChatStore, ChatStoreError, JoinQuotas, MemberEntry, Page, Quota, RoomRecord,
    RoomSummary, StoredMessage, UserUsage,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use voice_domain::ports::{ChatDirectory, DirectoryError, MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::db::{from_sql_i64, to_sql_i64, Database, SqliteError};

/// Messages kept per chat room by default; older ones are deleted as new ones arrive.
pub const DEFAULT_MESSAGE_RETENTION: usize = 500;

/// The chat port's error, convertible from the database's failures inside a transaction
/// closure (a local newtype: neither the port's error nor rusqlite's is this crate's own).
struct Failed(ChatStoreError);

impl From<SqliteError> for Failed {
    fn from(e: SqliteError) -> Self {
        tracing::warn!(error = %e, "sqlite chat store failed");
        Failed(ChatStoreError::Unavailable(e.to_failure()))
    }
}

impl From<rusqlite::Error> for Failed {
    fn from(e: rusqlite::Error) -> Self {
        SqliteError::from(e).into()
    }
}

impl From<ChatStoreError> for Failed {
    fn from(e: ChatStoreError) -> Self {
        Failed(e)
    }
}

fn refused(e: ChatStoreError) -> Failed {
    Failed(e)
}

/// The chat directory in SQLite, connections in memory. Cheap to clone; clones share both.
#[derive(Clone, Debug)]
pub struct SqliteChat {
    db: Database,
    connections: Arc<Mutex<HashMap<ConnectionId, UserId>>>,
    retention: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The key that makes room names unique: the chat domain's rule (case and look-alikes folded).
fn name_key(name: &str) -> String {
    chat_domain::room_name_key(name)
}

fn parse_id<T: TryFrom<String>>(s: String, what: &str) -> Result<T, SqliteError>
where
    T::Error: std::fmt::Display,
{
    T::try_from(s).map_err(|e| SqliteError::Corrupt(format!("stored {what}: {e}")))
}

fn parse_state(s: &str) -> Result<MemberState, SqliteError> {
    match s {
        "approved" => Ok(MemberState::Approved),
        "pending" => Ok(MemberState::Pending),
        other => Err(SqliteError::Corrupt(format!("membership state {other:?}"))),
    }
}

fn state_of(
    conn: &Connection,
    room: &ChatRoomId,
    user: &UserId,
) -> Result<MemberState, SqliteError> {
    let state: Option<String> = conn
        .query_row(
            "SELECT state FROM memberships WHERE chat_room_id = ?1 AND user_id = ?2",
            [room.as_str(), user.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    state.map_or(Ok(MemberState::None), |s| parse_state(&s))
}

fn room_exists(conn: &Connection, room: &ChatRoomId) -> Result<bool, SqliteError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM chat_rooms WHERE id = ?1)",
        [room.as_str()],
        |r| r.get(0),
    )?)
}

fn read_room(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn to_room(raw: (String, String, String)) -> Result<RoomRecord, SqliteError> {
    let (id, name, admin) = raw;
    Ok(RoomRecord {
        id: parse_id(id, "chat room id")?,
        name,
        admin: parse_id(admin, "admin user id")?,
    })
}

impl SqliteChat {
    /// A directory over an open database, keeping [`DEFAULT_MESSAGE_RETENTION`] messages per
    /// room. No connection is known yet.
    pub fn new(db: Database) -> Self {
        Self {
            db,
            connections: Arc::default(),
            retention: DEFAULT_MESSAGE_RETENTION,
        }
    }

    /// Keeps the last `n` messages per room instead (at least 1).
    #[must_use]
    pub fn with_message_retention(mut self, n: usize) -> Self {
        self.retention = n.max(1);
        self
    }

    /// The database, e.g. to build a [`SqliteStore`](crate::SqliteStore) on the same file.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<ConnectionId, UserId>> {
        // Every change to the map is a single insert or remove: a poisoned map is consistent.
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every connection (they are all closed: e.g. the server stopped accepting).
    pub fn clear_connections(&self) {
        self.conns().clear();
    }

    /// Sets a membership directly: `None` removes it (tests set up rooms with it).
    ///
    /// # Errors
    /// [`ChatStoreError::NoSuchRoom`]; [`ChatStoreError::Unavailable`].
    pub async fn set_state(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        state: MemberState,
    ) -> Result<(), ChatStoreError> {
        let (room, user) = (room.clone(), user.clone());
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !room_exists(&tx, &room)? {
                    return Err(refused(ChatStoreError::NoSuchRoom));
                }
                let word = match state {
                    MemberState::Approved => Some("approved"),
                    MemberState::Pending => Some("pending"),
                    MemberState::None => None,
                };
                match word {
                    Some(w) => tx.execute(
                        "INSERT INTO memberships (chat_room_id, user_id, state, since_ms)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (chat_room_id, user_id) DO UPDATE SET state = excluded.state",
                        params![room.as_str(), user.as_str(), w, now_ms()],
                    )?,
                    None => tx.execute(
                        "DELETE FROM memberships WHERE chat_room_id = ?1 AND user_id = ?2",
                        [room.as_str(), user.as_str()],
                    )?,
                };
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// A named server setting, stored on first use: returns the stored value, or stores and
    /// returns `fresh` if there is none. The server keeps its token-signing key here when the
    /// operator gives none, so that resume tokens (stable user identity) survive a restart.
    /// The data directory is created mode 0700 for this reason.
    ///
    /// # Errors
    /// [`SqliteError`] when the database cannot answer.
    pub async fn setting_or_insert(&self, key: &str, fresh: String) -> Result<String, SqliteError> {
        let key = key.to_owned();
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
                    [key.as_str(), fresh.as_str()],
                )?;
                let value: String = tx.query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    [key.as_str()],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok(value)
            })
            .await
    }
}

/// Users and their names, rooms, memberships and messages in SQLite (each write one
/// transaction, so a crash leaves all of it or none); connections in memory.
#[async_trait]
impl ChatStore for SqliteChat {
    async fn bind_connection(
        &self,
        connection: &ConnectionId,
        user: &UserId,
        name: &str,
    ) -> Result<(), ChatStoreError> {
        let (u, n) = (user.clone(), name.to_owned());
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO users (id, name, created_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                    params![u.as_str(), n, now_ms()],
                )?;
                Ok::<_, Failed>(())
            })
            .await
            .map_err(|f| f.0)?;
        self.conns().insert(connection.clone(), user.clone());
        Ok(())
    }

    async fn unbind_connection(&self, connection: &ConnectionId) -> Result<(), ChatStoreError> {
        self.conns().remove(connection);
        Ok(())
    }

    async fn user_name(&self, user: &UserId) -> Result<Option<String>, ChatStoreError> {
        let u = user.clone();
        self.db
            .read(move |c| {
                Ok(
                    c.query_row("SELECT name FROM users WHERE id = ?1", [u.as_str()], |r| {
                        r.get(0)
                    })
                    .optional()?,
                )
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn connections_of_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConnectionId>, ChatStoreError> {
        let mut out: Vec<_> = self
            .conns()
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(c, _)| c.clone())
            .collect();
        out.sort();
        Ok(out)
    }

    async fn identified_connections(&self) -> Result<Vec<ConnectionId>, ChatStoreError> {
        let mut out: Vec<_> = self.conns().keys().cloned().collect();
        out.sort();
        Ok(out)
    }

    async fn rooms_of_member(&self, user: &UserId) -> Result<Vec<ChatRoomId>, ChatStoreError> {
        let user = user.clone();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT chat_room_id FROM memberships
                     WHERE user_id = ?1 AND state = 'approved' ORDER BY chat_room_id",
                )?;
                let raw = stmt
                    .query_map([user.as_str()], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                raw.into_iter()
                    .map(|id| parse_id(id, "chat room id").map_err(Failed::from))
                    .collect()
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// One IMMEDIATE transaction (the write lock taken before the first read): the admin's
    /// room count, the name check and the inserts, so racing creators cannot both pass either.
    async fn create_room(
        &self,
        room: &RoomRecord,
        max_admin_rooms: usize,
    ) -> Result<(), ChatStoreError> {
        let room = room.clone();
        let max = i64::try_from(max_admin_rooms).unwrap_or(i64::MAX);
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let admined: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM chat_rooms WHERE admin_user_id = ?1",
                    [room.admin.as_str()],
                    |r| r.get(0),
                )?;
                if admined >= max {
                    return Err(refused(ChatStoreError::QuotaExceeded(Quota::RoomsPerUser)));
                }
                let taken: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM chat_rooms WHERE id = ?1 OR name_key = ?2)",
                    params![room.id.as_str(), name_key(&room.name)],
                    |r| r.get(0),
                )?;
                if taken {
                    return Err(refused(ChatStoreError::RoomExists));
                }

                let now = now_ms();
                tx.execute(
                    "INSERT INTO chat_rooms (id, name, name_key, admin_user_id, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        room.id.as_str(),
                        room.name,
                        name_key(&room.name),
                        room.admin.as_str(),
                        now
                    ],
                )?;
                tx.execute(
                    "INSERT INTO memberships (chat_room_id, user_id, state, since_ms)
                     VALUES (?1, ?2, 'approved', ?3)",
                    params![room.id.as_str(), room.admin.as_str(), now],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn usage_of(&self, user: &UserId) -> Result<UserUsage, ChatStoreError> {
        let user = user.clone();
        self.db
            .read(move |c| {
                let (rooms, pending): (i64, i64) = c.query_row(
                    "SELECT (SELECT COUNT(*) FROM chat_rooms WHERE admin_user_id = ?1),
                            (SELECT COUNT(*) FROM memberships WHERE user_id = ?1 AND state = 'pending')",
                    [user.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Ok(UserUsage {
                    rooms_admin: usize::try_from(rooms).unwrap_or(usize::MAX),
                    pending_requests: usize::try_from(pending).unwrap_or(usize::MAX),
                })
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError> {
        let user = user.clone();
        self.db
            .read(move |c| {
                let g: Option<i64> = c
                    .query_row(
                        "SELECT generation FROM token_generations WHERE user_id = ?1",
                        [user.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(u64::try_from(g.unwrap_or(0)).unwrap_or(0))
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn bump_token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError> {
        let user = user.clone();
        self.db
            .run(move |c| {
                let g: i64 = c.query_row(
                    "INSERT INTO token_generations (user_id, generation) VALUES (?1, 1)
                     ON CONFLICT (user_id) DO UPDATE SET generation = generation + 1
                     RETURNING generation",
                    [user.as_str()],
                    |r| r.get(0),
                )?;
                Ok(u64::try_from(g).unwrap_or(0))
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError> {
        self.db
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, name, admin_user_id FROM chat_rooms ORDER BY created_at_ms, id",
                )?;
                let raw = stmt
                    .query_map([], read_room)?
                    .collect::<Result<Vec<_>, _>>()?;
                raw.into_iter()
                    .map(|r| to_room(r).map_err(Failed::from))
                    .collect()
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError> {
        let id = id.clone();
        self.db
            .read(move |c| {
                let raw = c
                    .query_row(
                        "SELECT id, name, admin_user_id FROM chat_rooms WHERE id = ?1",
                        [id.as_str()],
                        read_room,
                    )
                    .optional()?;
                raw.map(to_room).transpose().map_err(Failed::from)
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn members(
        &self,
        room: &ChatRoomId,
    ) -> Result<Vec<(UserId, MemberState)>, ChatStoreError> {
        let room = room.clone();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT user_id, state FROM memberships WHERE chat_room_id = ?1 ORDER BY user_id",
                )?;
                let raw = stmt
                    .query_map([room.as_str()], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                raw.into_iter()
                    .map(|(u, s)| Ok((parse_id(u, "member user id")?, parse_state(&s)?)))
                    .collect::<Result<Vec<_>, SqliteError>>()
                    .map_err(Failed::from)
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// One IMMEDIATE transaction: ban, state, both quota counts and the insert, so two racing
    /// requests cannot both take the last free place.
    async fn request_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        quotas: JoinQuotas,
    ) -> Result<(MemberState, MemberState), ChatStoreError> {
        let (room, user) = (room.clone(), user.clone());
        let per_room = i64::try_from(quotas.per_room).unwrap_or(i64::MAX);
        let per_user = i64::try_from(quotas.per_user).unwrap_or(i64::MAX);
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !room_exists(&tx, &room)? {
                    return Err(refused(ChatStoreError::NoSuchRoom));
                }
                let banned: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM bans WHERE chat_room_id = ?1 AND user_id = ?2)",
                    [room.as_str(), user.as_str()],
                    |r| r.get(0),
                )?;
                if banned {
                    return Err(refused(ChatStoreError::Banned));
                }
                let before = state_of(&tx, &room, &user)?;
                if before != MemberState::None {
                    return Ok((before, before));
                }
                let (in_room, of_user): (i64, i64) = tx.query_row(
                    "SELECT (SELECT COUNT(*) FROM memberships
                             WHERE chat_room_id = ?1 AND state = 'pending'),
                            (SELECT COUNT(*) FROM memberships
                             WHERE user_id = ?2 AND state = 'pending')",
                    [room.as_str(), user.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if in_room >= per_room {
                    return Err(refused(ChatStoreError::QuotaExceeded(
                        Quota::PendingPerRoom,
                    )));
                }
                if of_user >= per_user {
                    return Err(refused(ChatStoreError::QuotaExceeded(
                        Quota::PendingPerUser,
                    )));
                }
                tx.execute(
                    "INSERT INTO memberships (chat_room_id, user_id, state, since_ms)
                     VALUES (?1, ?2, 'pending', ?3)",
                    params![room.as_str(), user.as_str(), now_ms()],
                )?;
                tx.commit()?;
                Ok((before, MemberState::Pending))
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn decide_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<(), ChatStoreError> {
        let (room, user) = (room.clone(), user.clone());
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !room_exists(&tx, &room)? {
                    return Err(refused(ChatStoreError::NoSuchRoom));
                }
                if state_of(&tx, &room, &user)? != MemberState::Pending {
                    return Err(refused(ChatStoreError::NoPendingRequest));
                }
                if approve {
                    tx.execute(
                        "UPDATE memberships SET state = 'approved', since_ms = ?3
                         WHERE chat_room_id = ?1 AND user_id = ?2",
                        params![room.as_str(), user.as_str(), now_ms()],
                    )?;
                } else {
                    tx.execute(
                        "DELETE FROM memberships WHERE chat_room_id = ?1 AND user_id = ?2",
                        [room.as_str(), user.as_str()],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// One IMMEDIATE transaction: the room's ban count, the removal and the ban, so two racing
    /// bans cannot both take the last free place (the count reads the `bans` primary key).
    async fn remove_member(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        ban: bool,
        max_bans: usize,
    ) -> Result<MemberState, ChatStoreError> {
        let (room, user) = (room.clone(), user.clone());
        let max_bans = i64::try_from(max_bans).unwrap_or(i64::MAX);
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !room_exists(&tx, &room)? {
                    return Err(refused(ChatStoreError::NoSuchRoom));
                }
                if ban {
                    let (already, held): (bool, i64) = tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM bans WHERE chat_room_id = ?1 AND user_id = ?2),
                                (SELECT COUNT(*) FROM bans WHERE chat_room_id = ?1)",
                        [room.as_str(), user.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    if !already && held >= max_bans {
                        return Err(refused(ChatStoreError::QuotaExceeded(Quota::BansPerRoom)));
                    }
                }
                let before = state_of(&tx, &room, &user)?;
                tx.execute(
                    "DELETE FROM memberships WHERE chat_room_id = ?1 AND user_id = ?2",
                    [room.as_str(), user.as_str()],
                )?;
                if ban {
                    tx.execute(
                        "INSERT INTO bans (chat_room_id, user_id, since_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (chat_room_id, user_id) DO NOTHING",
                        params![room.as_str(), user.as_str(), now_ms()],
                    )?;
                }
                tx.commit()?;
                Ok(before)
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    async fn unban(&self, room: &ChatRoomId, user: &UserId) -> Result<bool, ChatStoreError> {
        let (room, user) = (room.clone(), user.clone());
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !room_exists(&tx, &room)? {
                    return Err(refused(ChatStoreError::NoSuchRoom));
                }
                let n = tx.execute(
                    "DELETE FROM bans WHERE chat_room_id = ?1 AND user_id = ?2",
                    [room.as_str(), user.as_str()],
                )?;
                tx.commit()?;
                Ok(n > 0)
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// Appends a message and deletes the room's messages beyond the retention, in one
    /// transaction.
    async fn append_message(
        &self,
        room: &ChatRoomId,
        message: &ChatMessage,
    ) -> Result<(), ChatStoreError> {
        let (room, m, keep) = (room.clone(), message.clone(), self.retention);
        self.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !room_exists(&tx, &room)? {
                    return Err(refused(ChatStoreError::NoSuchRoom));
                }
                tx.execute(
                    "INSERT INTO messages (chat_room_id, user_id, name, text, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![room.as_str(), m.user_id, m.name, m.text, to_sql_i64(m.at)],
                )?;
                tx.execute(
                    "DELETE FROM messages WHERE chat_room_id = ?1 AND seq <= (
                         SELECT seq FROM messages WHERE chat_room_id = ?1
                         ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                    params![room.as_str(), i64::try_from(keep).unwrap_or(i64::MAX)],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// One SELECT on `messages_by_room`: the newest `limit` before `before`, put oldest first.
    async fn message_page(
        &self,
        room: &ChatRoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ChatStoreError> {
        let room = room.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.map(to_sql_i64);
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, chat_room_id, user_id, name, text, at_ms FROM (
                         SELECT * FROM messages
                         WHERE chat_room_id = ?1 AND (?2 IS NULL OR seq < ?2)
                         ORDER BY seq DESC LIMIT ?3)
                     ORDER BY seq",
                )?;
                let raw = stmt
                    .query_map(params![room.as_str(), before, limit], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, i64>(5)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                raw.into_iter()
                    .map(|(seq, room_id, user_id, name, text, at)| {
                        Ok(StoredMessage {
                            seq: from_sql_i64(seq, "message seq")?,
                            message: ChatMessage {
                                room_id,
                                user_id,
                                name,
                                text,
                                at: from_sql_i64(at, "message time")?,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, SqliteError>>()
                    .map_err(Failed::from)
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// One SELECT: a keyset page on `(created_at_ms, id)` (the position is
    /// `<created_at_ms>.<id>` of the page's last room), each room's approved count and the
    /// viewer's state from correlated lookups on the memberships primary key. One row more than
    /// `limit` is read to know whether another page follows.
    async fn room_page(
        &self,
        viewer: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoomSummary>, ChatStoreError> {
        let after = after
            .map(|a| {
                let (at, id) = a.split_once('.').ok_or(ChatStoreError::BadCursor)?;
                let at: i64 = at.parse().map_err(|_| ChatStoreError::BadCursor)?;
                Ok::<_, ChatStoreError>((at, id.to_owned()))
            })
            .transpose()?;
        let (after_at, after_id) = after.unzip();
        let viewer = viewer.clone();
        let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT r.id, r.name, r.admin_user_id, r.created_at_ms,
                            (SELECT COUNT(*) FROM memberships m
                             WHERE m.chat_room_id = r.id AND m.state = 'approved'),
                            (SELECT m.state FROM memberships m
                             WHERE m.chat_room_id = r.id AND m.user_id = ?1)
                     FROM chat_rooms r
                     WHERE ?2 IS NULL OR (r.created_at_ms, r.id) > (?2, ?3)
                     ORDER BY r.created_at_ms, r.id LIMIT ?4",
                )?;
                let raw = stmt
                    .query_map(params![viewer.as_str(), after_at, after_id, want], |r| {
                        Ok((
                            (
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                            ),
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<String>>(5)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let more = raw.len() > limit;
                let mut items = Vec::with_capacity(limit);
                let mut next = None;
                for (room, at, count, state) in raw.into_iter().take(limit) {
                    let record = to_room(room)?;
                    next = Some(format!("{at}.{}", record.id));
                    items.push(RoomSummary {
                        record,
                        member_count: usize::try_from(count).unwrap_or(0),
                        my_state: state.map_or(Ok(MemberState::None), |s| parse_state(&s))?,
                    });
                }
                Ok(Page {
                    items,
                    next: next.filter(|_| more),
                })
            })
            .await
            .map_err(|f: Failed| f.0)
    }

    /// One SELECT on the memberships primary key joined with `users` for names; presence from
    /// the in-memory connection map.
    async fn member_page(
        &self,
        room: &ChatRoomId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Page<MemberEntry>, ChatStoreError> {
        let (room, after) = (room.clone(), after.cloned());
        let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let raw = self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT m.user_id, m.state, u.name FROM memberships m
                     LEFT JOIN users u ON u.id = m.user_id
                     WHERE m.chat_room_id = ?1 AND (?2 IS NULL OR m.user_id > ?2)
                     ORDER BY m.user_id LIMIT ?3",
                )?;
                let raw = stmt
                    .query_map(
                        params![room.as_str(), after.as_ref().map(UserId::as_str), want],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, Option<String>>(2)?,
                            ))
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                raw.into_iter()
                    .map(|(u, s, name)| {
                        Ok((
                            parse_id::<UserId>(u, "member user id")?,
                            parse_state(&s)?,
                            name,
                        ))
                    })
                    .collect::<Result<Vec<_>, SqliteError>>()
                    .map_err(Failed::from)
            })
            .await
            .map_err(|f: Failed| f.0)?;
        let more = raw.len() > limit;
        let online: HashSet<UserId> = self.conns().values().cloned().collect();
        let items: Vec<MemberEntry> = raw
            .into_iter()
            .take(limit)
            .map(|(user, state, name)| MemberEntry {
                online: online.contains(&user),
                user,
                state,
                name,
            })
            .collect();
        let next = items.last().filter(|_| more).map(|m| m.user.to_string());
        Ok(Page { items, next })
    }
}

#[async_trait]
impl ChatDirectory for SqliteChat {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        Ok(self.conns().get(connection).cloned())
    }

    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        let (room, user) = (chat_room.clone(), user.clone());
        self.db
            .read(move |c| {
                let admin: Option<String> = c
                    .query_row(
                        "SELECT admin_user_id FROM chat_rooms WHERE id = ?1",
                        [room.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(SqliteError::from)?;
                let Some(admin) = admin else {
                    return Ok(None);
                };
                Ok(Some(Membership {
                    state: state_of(c, &room, &user)?,
                    is_admin: admin == user.as_str(),
                }))
            })
            .await
    }

    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        let room = chat_room.clone();
        let approved: HashSet<String> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT user_id FROM memberships WHERE chat_room_id = ?1 AND state = 'approved'",
                    )
                    .map_err(SqliteError::from)?;
                let ids = stmt
                    .query_map([room.as_str()], |r| r.get(0))
                    .and_then(Iterator::collect::<Result<HashSet<String>, _>>)
                    .map_err(SqliteError::from)?;
                Ok::<_, DirectoryError>(ids)
            })
            .await?;
        let conns = self.conns();
        let mut out: Vec<ConnectionId> = conns
            .iter()
            .filter(|(_, u)| approved.contains(u.as_str()))
            .map(|(c, _)| c.clone())
            .collect();
        out.sort();
        Ok(out)
    }
}
