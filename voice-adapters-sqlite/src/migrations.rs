//! The schema, as an ordered list of migrations. Entry `i` takes a file from `user_version = i`
//! to `i + 1`. Append only: never edit a migration that has shipped, add the next one.

/// Every migration, oldest first. `MIGRATIONS.len()` is the schema version this build writes.
pub const MIGRATIONS: &[&str] = &[
    V1_INITIAL,
    V2_ENDED_AT,
    V3_QUOTAS,
    V4_BANS,
    V5_TOKEN_GENERATIONS,
    V6_ROOM_PAGES,
];

/// Voice rooms (a JSON blob of `VoiceRoomParts` plus the columns the store queries by), the
/// chat directory (users, chat rooms, memberships, recent messages).
///
/// - `voice_rooms_one_active_per_chat`: the partial UNIQUE index that makes "one active voice
///   room per chat room" a database constraint, not just a check in a transaction.
/// - `voice_room_connections`: the connection index of *active* rooms' participants, rewritten
///   with each update, for `active_with_connection`.
/// - `chat_rooms.name_key`: the lower-cased name, UNIQUE, so two rooms cannot share a name
///   whatever the case.
/// - User ids in `chat_rooms`/`memberships` are not foreign keys to `users`: identity belongs to
///   the chat app, and `users` only remembers display names.
/// - `settings`: server settings that must survive restarts (the token-signing key when the
///   operator gives none).
/// - Connections of the chat directory are not stored: they die with the process (see
///   `chat.rs`).
const V1_INITIAL: &str = r#"
CREATE TABLE voice_rooms (
    id            TEXT PRIMARY KEY NOT NULL,
    chat_room_id  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'ended')),
    version       INTEGER NOT NULL CHECK (version >= 1),
    created_at_ms INTEGER NOT NULL,
    parts         TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX voice_rooms_one_active_per_chat
    ON voice_rooms (chat_room_id) WHERE status = 'active';

CREATE TABLE voice_room_connections (
    connection_id TEXT NOT NULL,
    voice_room_id TEXT NOT NULL REFERENCES voice_rooms (id) ON DELETE CASCADE,
    PRIMARY KEY (connection_id, voice_room_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX voice_room_connections_by_room ON voice_room_connections (voice_room_id);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE chat_rooms (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL UNIQUE,
    admin_user_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    chat_room_id TEXT NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('approved', 'pending')),
    since_ms     INTEGER NOT NULL,
    PRIMARY KEY (chat_room_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_room_id TEXT NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    text         TEXT NOT NULL,
    at_ms        INTEGER NOT NULL
) STRICT;
CREATE INDEX messages_by_room ON messages (chat_room_id, seq);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
"#;

/// When each ended voice room ended, so that ended rooms can be forgotten after a retention
/// period (as DynamoDB's TTL does for the AWS store) instead of piling up in the file forever.
/// Rooms ended before this migration take the end time recorded in their `parts` (or, if that
/// cannot be read, their start).
const V2_ENDED_AT: &str = r#"
ALTER TABLE voice_rooms ADD COLUMN ended_at_ms INTEGER;
UPDATE voice_rooms
   SET ended_at_ms = COALESCE(json_extract(parts, '$.status.at'), created_at_ms)
 WHERE status = 'ended';
CREATE INDEX voice_rooms_ended_at ON voice_rooms (ended_at_ms) WHERE status = 'ended';
"#;

/// The room quota counts a user's rooms on every `createRoom` (`ChatStore::usage_of`): an index
/// on the admin keeps that one lookup instead of a scan of every room. (Pending requests are
/// counted through `memberships_by_user`.)
const V3_QUOTAS: &str = r#"
CREATE INDEX chat_rooms_by_admin ON chat_rooms (admin_user_id);
"#;

/// Bans: who a chat room's admin has banned (`banMember`), so they may not ask to join again
/// (until `unbanMember`). Deleted with the room.
const V4_BANS: &str = r#"
CREATE TABLE bans (
    chat_room_id TEXT NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    since_ms     INTEGER NOT NULL,
    PRIMARY KEY (chat_room_id, user_id)
) STRICT, WITHOUT ROWID;
"#;

/// Each user's resume-token generation: `signOutEverywhere` raises it, and tokens issued under
/// an older one are refused. No row means generation 0.
const V5_TOKEN_GENERATIONS: &str = r#"
CREATE TABLE token_generations (
    user_id    TEXT PRIMARY KEY NOT NULL,
    generation INTEGER NOT NULL CHECK (generation >= 0)
) STRICT, WITHOUT ROWID;
"#;

/// `listRooms` reads one page at a time in creation order (`ChatStore::room_page`, keyset
/// paging on `(created_at_ms, id)`): this index makes each page a range read of the index
/// instead of a scan and sort of every room.
const V6_ROOM_PAGES: &str = r#"
CREATE INDEX chat_rooms_by_creation ON chat_rooms (created_at_ms, id);
"#;
