//! Durable storage (issue 7): the SQLite chat state and voice-room store, opened from the data
//! directory, and the glue that makes [`SqliteChat`] the server's [`ChatState`].
//!
//! `voice-adapters-sqlite` shaped `SqliteChat`'s methods after [`ChatState`], so each method
//! here only converts types and refusals.

use async_trait::async_trait;
use voice_adapters_sqlite::chat::{ChatRoomRecord, MessageRecord, SqliteChatError};
use voice_adapters_sqlite::SqliteChat;
use voice_domain::ports::MemberState;
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::chat::{ChatMessage, ChatState, ChatStoreError, RoomRecord, MESSAGE_HISTORY};

/// Messages kept per room on disk: more than `getMessages` shows ([`MESSAGE_HISTORY`]), so a
/// longer history can be offered later without having lost it.
pub const STORED_MESSAGES_PER_ROOM: usize = 5 * MESSAGE_HISTORY;

/// The settings key of the token-signing key generated when `--token-secret` is not given.
pub const TOKEN_KEY_SETTING: &str = "token_secret";

fn err(e: SqliteChatError) -> ChatStoreError {
    match e {
        SqliteChatError::RoomExists => ChatStoreError::RoomExists,
        SqliteChatError::NoSuchRoom => ChatStoreError::NoSuchRoom,
        SqliteChatError::NoPendingRequest => ChatStoreError::NoPendingRequest,
        SqliteChatError::Unavailable(f) => ChatStoreError::Unavailable(f),
    }
}

fn room(r: ChatRoomRecord) -> RoomRecord {
    RoomRecord {
        id: r.id,
        name: r.name,
        admin: r.admin,
    }
}

fn message(m: MessageRecord) -> ChatMessage {
    ChatMessage {
        room_id: m.room_id,
        user_id: m.user_id,
        name: m.name,
        text: m.text,
        at: m.at,
    }
}

#[async_trait]
impl ChatState for SqliteChat {
    async fn bind_connection(
        &self,
        connection: &ConnectionId,
        user: &UserId,
        name: &str,
    ) -> Result<(), ChatStoreError> {
        SqliteChat::bind_connection(self, connection, user, name)
            .await
            .map_err(err)
    }

    async fn unbind_connection(&self, connection: &ConnectionId) -> Result<(), ChatStoreError> {
        SqliteChat::unbind_connection(self, connection)
            .await
            .map_err(err)
    }

    async fn user_name(&self, user: &UserId) -> Result<Option<String>, ChatStoreError> {
        SqliteChat::user_name(self, user).await.map_err(err)
    }

    async fn connections_of_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConnectionId>, ChatStoreError> {
        SqliteChat::connections_of_user(self, user)
            .await
            .map_err(err)
    }

    async fn create_room(&self, r: &RoomRecord) -> Result<(), ChatStoreError> {
        SqliteChat::create_room(self, &r.id, &r.name, &r.admin)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError> {
        Ok(SqliteChat::rooms(self)
            .await
            .map_err(err)?
            .into_iter()
            .map(room)
            .collect())
    }

    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError> {
        Ok(SqliteChat::room(self, id).await.map_err(err)?.map(room))
    }

    async fn members(&self, r: &ChatRoomId) -> Result<Vec<(UserId, MemberState)>, ChatStoreError> {
        SqliteChat::members(self, r).await.map_err(err)
    }

    async fn request_join(
        &self,
        r: &ChatRoomId,
        user: &UserId,
    ) -> Result<(MemberState, MemberState), ChatStoreError> {
        SqliteChat::request_join(self, r, user).await.map_err(err)
    }

    async fn decide_join(
        &self,
        r: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<(), ChatStoreError> {
        SqliteChat::decide_join(self, r, user, approve)
            .await
            .map_err(err)
    }

    async fn append_message(&self, r: &ChatRoomId, m: &ChatMessage) -> Result<(), ChatStoreError> {
        let record = MessageRecord {
            room_id: m.room_id.clone(),
            user_id: m.user_id.clone(),
            name: m.name.clone(),
            text: m.text.clone(),
            at: m.at,
        };
        SqliteChat::append_message(self, r, &record)
            .await
            .map_err(err)
    }

    async fn recent_messages(
        &self,
        r: &ChatRoomId,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, ChatStoreError> {
        Ok(SqliteChat::recent_messages(self, r, limit)
            .await
            .map_err(err)?
            .into_iter()
            .map(message)
            .collect())
    }
}
