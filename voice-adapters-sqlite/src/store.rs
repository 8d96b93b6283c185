//! The voice-room store on SQLite, with the same atomic guarantees as the memory and DynamoDB
//! stores.
//!
//! A room is stored as a JSON blob of [`VoiceRoomParts`] (so the store cannot drift from the
//! domain's shape; [`VoiceRoom::from_parts`] re-checks every invariant on the way back) plus the
//! columns queries need: `chat_room_id`, `status`, `version`. Every write is one IMMEDIATE
//! transaction (the write lock is taken up front, so two connections cannot both pass a check
//! and then both write):
//! - "one active room per chat room": checked in the transaction, and also a partial UNIQUE
//!   index (`chat_room_id WHERE status = 'active'`) so the rule holds even against a bug here;
//! - compare-and-set: `UPDATE .. WHERE id = ? AND version = ?` must touch exactly one row;
//! - the connection index (`voice_room_connections`) is rewritten in the same transaction, and
//!   holds only active rooms' participants.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use voice_domain::ports::{StoreError, VoiceRoomStore};
use voice_domain::room::{RoomStatus, VoiceRoomParts};
use voice_domain::{ChatRoomId, ConnectionId, VoiceRoom, VoiceRoomId};

use crate::db::{from_sql_i64, to_sql_i64, Database, SqliteError};

/// How long an ended room is kept before the store forgets it (the AWS store's default TTL).
pub const DEFAULT_ENDED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Voice rooms in SQLite. Cheap to clone (clones share the [`Database`]).
///
/// Ended rooms are kept for [`DEFAULT_ENDED_RETENTION`] (so a late join hears
/// `VOICE_ROOM_ENDED`), then deleted by the write that ends a later room: the file does not grow
/// with every voice room ever held. A forgotten room reads as absent.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: Database,
    ended_retention: Duration,
}

impl SqliteStore {
    /// A store over an open database.
    pub fn new(db: Database) -> Self {
        Self {
            db,
            ended_retention: DEFAULT_ENDED_RETENTION,
        }
    }

    /// The same store, keeping ended rooms for `retention` instead.
    #[must_use]
    pub fn with_ended_retention(mut self, retention: Duration) -> Self {
        self.ended_retention = retention;
        self
    }

    /// The database, e.g. to build a [`SqliteChat`](crate::SqliteChat) on the same file.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every room, active or ended (for tests and invariant checks).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`]; [`StoreError::Unavailable`].
    pub async fn all(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        self.db
            .read(|c| {
                query_rooms(
                    c,
                    "SELECT parts FROM voice_rooms ORDER BY created_at_ms, id",
                    [],
                )
            })
            .await
    }
}

/// When `room` ended, in ms since the epoch (`None` while active).
fn ended_at_ms(room: &VoiceRoom) -> Option<i64> {
    match room.status() {
        RoomStatus::Active => None,
        RoomStatus::Ended { at, .. } => Some(to_sql_i64(at.as_millis())),
    }
}

fn status_of(room: &VoiceRoom) -> &'static str {
    if room.is_active() {
        "active"
    } else {
        "ended"
    }
}

fn encode(room: &VoiceRoom) -> Result<String, StoreError> {
    serde_json::to_string(room.parts()).map_err(|e| {
        // Serialising plain data cannot fail; if it ever does, say so rather than panic.
        StoreError::Unavailable(voice_domain::ports::PortFailure::permanent(format!(
            "could not encode voice room: {e}"
        )))
    })
}

fn decode(json: &str) -> Result<VoiceRoom, StoreError> {
    let parts: VoiceRoomParts = serde_json::from_str(json)
        .map_err(|e| SqliteError::Corrupt(format!("voice room JSON: {e}")))?;
    Ok(VoiceRoom::from_parts(parts)?)
}

fn query_rooms<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<VoiceRoom>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(SqliteError::from)?;
    let blobs = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(SqliteError::from)?;
    blobs.iter().map(|b| decode(b)).collect()
}

fn index_connections(conn: &Connection, room: &VoiceRoom) -> Result<(), SqliteError> {
    conn.execute(
        "DELETE FROM voice_room_connections WHERE voice_room_id = ?1",
        [room.id().as_str()],
    )?;
    if room.is_active() {
        let mut insert = conn.prepare_cached(
            "INSERT OR IGNORE INTO voice_room_connections (connection_id, voice_room_id) VALUES (?1, ?2)",
        )?;
        for p in room.participants() {
            insert.execute([p.connection.as_str(), room.id().as_str()])?;
        }
    }
    Ok(())
}

fn active_id_in(conn: &Connection, chat: &ChatRoomId) -> Result<Option<VoiceRoomId>, StoreError> {
    let id: Option<String> = conn
        .query_row(
            "SELECT id FROM voice_rooms WHERE chat_room_id = ?1 AND status = 'active'",
            [chat.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(SqliteError::from)?;
    id.map(|s| {
        VoiceRoomId::parse(&s).map_err(|e| SqliteError::Corrupt(format!("voice room id: {e}")))
    })
    .transpose()
    .map_err(StoreError::from)
}

/// The active rooms' ids of `chats` in one SELECT: the ids go in as one JSON array (one
/// cached statement whatever the page's length), and the partial index
/// `voice_rooms_one_active_per_chat` answers each without reading a room's blob.
fn active_ids_in(
    conn: &Connection,
    chats: &[ChatRoomId],
) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
    let ids: Vec<&str> = chats.iter().map(ChatRoomId::as_str).collect();
    let ids = serde_json::Value::from(ids).to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT chat_room_id, id FROM voice_rooms
             WHERE status = 'active' AND chat_room_id IN (SELECT value FROM json_each(?1))",
        )
        .map_err(SqliteError::from)?;
    let rows = stmt
        .query_map([ids], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(SqliteError::from)?;
    rows.into_iter()
        .map(|(chat, id)| {
            let chat = ChatRoomId::parse(&chat)
                .map_err(|e| SqliteError::Corrupt(format!("chat room id: {e}")))?;
            let id = VoiceRoomId::parse(&id)
                .map_err(|e| SqliteError::Corrupt(format!("voice room id: {e}")))?;
            Ok((chat, id))
        })
        .collect::<Result<HashMap<_, _>, SqliteError>>()
        .map_err(StoreError::from)
}

fn create(conn: &mut Connection, room: &VoiceRoom, json: &str) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(SqliteError::from)?;
    if let Some(existing) = active_id_in(&tx, room.chat_room())? {
        return Err(StoreError::AlreadyActive { existing });
    }
    let exists: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM voice_rooms WHERE id = ?1)",
            [room.id().as_str()],
            |r| r.get(0),
        )
        .map_err(SqliteError::from)?;
    if exists {
        // Same answer as the memory store: an id that is taken is someone else's write.
        return Err(StoreError::VersionConflict);
    }
    tx.execute(
        "INSERT INTO voice_rooms (id, chat_room_id, status, version, created_at_ms, parts, ended_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            room.id().as_str(),
            room.chat_room().as_str(),
            status_of(room),
            to_sql_i64(room.version()),
            to_sql_i64(room.created_at().as_millis()),
            json,
            ended_at_ms(room),
        ],
    )
    .map_err(SqliteError::from)?;
    index_connections(&tx, room)?;
    tx.commit().map_err(SqliteError::from)?;
    Ok(())
}

fn update(
    conn: &mut Connection,
    room: &VoiceRoom,
    json: &str,
    retention: Duration,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(SqliteError::from)?;
    let stored: Option<(i64, String)> = tx
        .query_row(
            "SELECT version, chat_room_id FROM voice_rooms WHERE id = ?1",
            [room.id().as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(SqliteError::from)?;
    let Some((version, chat_room)) = stored else {
        return Err(StoreError::NotFound);
    };
    let version = from_sql_i64(version, "voice room version")?;
    if version.checked_add(1) != Some(room.version()) {
        return Err(StoreError::VersionConflict);
    }
    if chat_room != room.chat_room().as_str() {
        // A room never moves between chat rooms; a caller that says otherwise has a stale or
        // foreign copy.
        return Err(StoreError::VersionConflict);
    }
    let changed = tx
        .execute(
            "UPDATE voice_rooms SET status = ?1, version = ?2, parts = ?3, ended_at_ms = ?6
             WHERE id = ?4 AND version = ?5",
            params![
                status_of(room),
                to_sql_i64(room.version()),
                json,
                room.id().as_str(),
                to_sql_i64(version),
                ended_at_ms(room),
            ],
        )
        .map_err(|e| match e.sqlite_error_code() {
            // An ended room coming back to life while another is active would break the
            // one-active rule; the partial UNIQUE index refuses it.
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::VersionConflict,
            _ => SqliteError::from(e).into(),
        })?;
    if changed != 1 {
        return Err(StoreError::VersionConflict);
    }
    index_connections(&tx, room)?;
    if let Some(ended) = ended_at_ms(room) {
        // Ending a room is when older ends are forgotten: in the same transaction, measured by
        // the domain's clock (the store has none), never this room itself.
        let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM voice_rooms
              WHERE status = 'ended' AND ended_at_ms < ?1 AND id <> ?2",
            params![ended.saturating_sub(retention), room.id().as_str()],
        )
        .map_err(SqliteError::from)?;
    }
    tx.commit().map_err(SqliteError::from)?;
    Ok(())
}

#[async_trait]
impl VoiceRoomStore for SqliteStore {
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let json = encode(room)?;
        let room = room.clone();
        let result = self.db.run(move |c| create(c, &room, &json)).await;
        if let Err(StoreError::Unavailable(f)) = &result {
            tracing::warn!(error = %f, "sqlite store: create failed");
        }
        result
    }

    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        let id = id.clone();
        self.db
            .read(move |c| {
                let rooms = query_rooms(
                    c,
                    "SELECT parts FROM voice_rooms WHERE id = ?1",
                    [id.as_str()],
                )?;
                Ok(rooms.into_iter().next())
            })
            .await
    }

    async fn active_in_chat_room(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError> {
        let chat = chat_room.clone();
        self.db
            .read(move |c| {
                let rooms = query_rooms(
                    c,
                    "SELECT parts FROM voice_rooms WHERE chat_room_id = ?1 AND status = 'active'",
                    [chat.as_str()],
                )?;
                Ok(rooms.into_iter().next())
            })
            .await
    }

    async fn active_ids_in_chat_rooms(
        &self,
        chat_rooms: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        if chat_rooms.is_empty() {
            return Ok(HashMap::new());
        }
        let chats = chat_rooms.to_vec();
        self.db.read(move |c| active_ids_in(c, &chats)).await
    }

    async fn active_with_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<VoiceRoom>, StoreError> {
        let conn_id = connection.clone();
        self.db
            .read(move |c| {
                query_rooms(
                    c,
                    "SELECT r.parts FROM voice_room_connections x
                     JOIN voice_rooms r ON r.id = x.voice_room_id
                     WHERE x.connection_id = ?1 AND r.status = 'active'
                     ORDER BY r.id",
                    [conn_id.as_str()],
                )
            })
            .await
    }

    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        let json = encode(room)?;
        let room = room.clone();
        let retention = self.ended_retention;
        let result = self
            .db
            .run(move |c| update(c, &room, &json, retention))
            .await;
        if let Err(StoreError::Unavailable(f)) = &result {
            tracing::warn!(error = %f, "sqlite store: update failed");
        }
        result
    }

    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        self.db
            .read(|c| {
                query_rooms(
                    c,
                    "SELECT parts FROM voice_rooms WHERE status = 'active' ORDER BY created_at_ms, id",
                    [],
                )
            })
            .await
    }
}
