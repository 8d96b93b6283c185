//! [`ChatDirectory`] over the existing chat app's tables (`CONNECTIONS_TABLE`, `ROOMS_TABLE`).
//!
//! The chat app owns these tables and their layout; the original guide never spelled it out.
//! [`DirectorySchema`] names the table and attribute names we assume, each overridable, so that
//! the adapter fits a chat app that named things differently without a code change. Voice only
//! reads these tables.
//!
//! Assumed layout (defaults):
//! - connections: `connectionId` (partition key, S) → `userId` (S).
//! - rooms: `roomId` (partition key, S), `creatorId` (S, the admin), `members` (approved user
//!   ids), `pendingRequests` (user ids awaiting approval). A user-id collection may be a string
//!   set, a list of strings, a list of maps with a `userId` string, or a map keyed by user id.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use tracing::warn;
use voice_domain::ports::{ChatDirectory, DirectoryError, MemberState, Membership, PortFailure};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::errors::sdk_failure;

/// How many by-user `Query` calls [`DynamoDirectory`] runs at once to find a chat room's
/// connections.
pub const QUERY_CONCURRENCY: usize = 16;

/// DynamoDB's limit on the number of values in one `IN (...)` comparison.
const MAX_IN_VALUES: usize = 100;

/// Table and attribute names of the chat app, with the defaults documented in
/// `docs/aws-adapters.md`. Fields are public so that a deployment overrides only what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySchema {
    /// `CONNECTIONS_TABLE`.
    pub connections_table: String,
    /// Partition key of the connections table (default `connectionId`).
    pub connection_id_attr: String,
    /// The user a connection belongs to (default `userId`).
    pub connection_user_attr: String,
    /// A global secondary index of the connections table whose partition key is
    /// `connection_user_attr`. When set, `connections_of` queries it once per approved member
    /// instead of scanning the whole table (default none: the original table has no index).
    pub connections_by_user_index: Option<String>,
    /// `ROOMS_TABLE`.
    pub rooms_table: String,
    /// Partition key of the rooms table (default `roomId`).
    pub room_id_attr: String,
    /// The room's creator, who is its admin (default `creatorId`).
    pub room_admin_attr: String,
    /// Approved members (default `members`).
    pub room_members_attr: String,
    /// Users who asked to join and wait for approval (default `pendingRequests`).
    pub room_pending_attr: String,
    /// The room's display name (default `roomName`). Only the built-in chat store
    /// ([`DynamoChat`](crate::DynamoChat)) reads and writes it; voice never needs it.
    pub room_name_attr: String,
    /// Users banned from the room (default `bannedUsers`, a string set). Only the built-in chat
    /// store reads and writes it.
    pub room_banned_attr: String,
}

impl DirectorySchema {
    /// The default attribute names on the two given tables.
    pub fn new(connections_table: impl Into<String>, rooms_table: impl Into<String>) -> Self {
        Self {
            connections_table: connections_table.into(),
            connection_id_attr: "connectionId".into(),
            connection_user_attr: "userId".into(),
            connections_by_user_index: None,
            rooms_table: rooms_table.into(),
            room_id_attr: "roomId".into(),
            room_admin_attr: "creatorId".into(),
            room_members_attr: "members".into(),
            room_pending_attr: "pendingRequests".into(),
            room_name_attr: "roomName".into(),
            room_banned_attr: "bannedUsers".into(),
        }
    }
}

/// The chat app's directory, read from its DynamoDB tables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoDirectory {
    client: Client,
    schema: DirectorySchema,
}

/// A chat room as far as voice needs it (also what the built-in chat store reads back, so that
/// both read a room item the same way).
pub(crate) struct ChatRoom {
    /// The admin's user id, if the item has one.
    pub(crate) admin: Option<String>,
    /// Approved members (the admin may or may not be listed).
    pub(crate) members: BTreeSet<String>,
    /// Users waiting for approval.
    pub(crate) pending: BTreeSet<String>,
}

impl ChatRoom {
    /// What `user` is in this room: the admin is always approved, then members, then pending.
    pub(crate) fn membership_of(&self, user: &str) -> Membership {
        let is_admin = self.admin.as_deref() == Some(user);
        let state = if is_admin || self.members.contains(user) {
            MemberState::Approved
        } else if self.pending.contains(user) {
            MemberState::Pending
        } else {
            MemberState::None
        };
        Membership { state, is_admin }
    }
}

impl DynamoDirectory {
    /// A directory over the chat app's tables, through a client built once at start-up.
    pub fn new(client: Client, schema: DirectorySchema) -> Self {
        Self { client, schema }
    }

    /// The schema in use.
    pub fn schema(&self) -> &DirectorySchema {
        &self.schema
    }

    pub(crate) async fn chat_room(
        &self,
        id: &ChatRoomId,
    ) -> Result<Option<ChatRoom>, DirectoryError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.schema.rooms_table)
            .key(
                &self.schema.room_id_attr,
                AttributeValue::S(id.as_str().to_owned()),
            )
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DirectoryError::Unavailable(sdk_failure("dynamodb:GetItem", &e)))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        self.parse_room(id, &item).map(Some)
    }

    /// Reads a room item as [`ChatRoom`]: the admin, the approved and the pending users, in any
    /// of the collection shapes [`user_ids`] accepts.
    pub(crate) fn parse_room(
        &self,
        id: &ChatRoomId,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<ChatRoom, DirectoryError> {
        let admin = match item
            .get(&self.schema.room_admin_attr)
            .map(AttributeValue::as_s)
        {
            Some(Ok(a)) => Some(a.clone()),
            _ => {
                warn!(chat_room_id = %id, attribute = %self.schema.room_admin_attr, "chat room has no admin attribute of type S");
                None
            }
        };
        let members = user_ids(item.get(&self.schema.room_members_attr))
            .map_err(|e| self.malformed(id, &self.schema.room_members_attr, e))?;
        let pending = user_ids(item.get(&self.schema.room_pending_attr))
            .map_err(|e| self.malformed(id, &self.schema.room_pending_attr, e))?;
        Ok(ChatRoom {
            admin,
            members,
            pending,
        })
    }

    pub(crate) fn malformed(&self, id: &ChatRoomId, attribute: &str, what: &str) -> DirectoryError {
        warn!(chat_room_id = %id, attribute, what, "chat room item does not have the expected shape");
        DirectoryError::Unavailable(PortFailure::permanent(format!(
            "chat room {id}: attribute {attribute} {what}; see DirectorySchema in docs/aws-adapters.md"
        )))
    }

    /// Connections of `users` by scanning the connections table (no index configured).
    async fn scan_connections(
        &self,
        users: &BTreeSet<String>,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        let mut found = Vec::new();
        let mut start = None;
        let use_in = users.len() <= MAX_IN_VALUES;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(&self.schema.connections_table)
                .projection_expression("#c, #u")
                .expression_attribute_names("#c", &self.schema.connection_id_attr)
                .expression_attribute_names("#u", &self.schema.connection_user_attr)
                .set_exclusive_start_key(start.take());
            if use_in {
                let placeholders: Vec<String> =
                    (0..users.len()).map(|i| format!(":u{i}")).collect();
                req = req.filter_expression(format!("#u IN ({})", placeholders.join(", ")));
                for (p, u) in placeholders.iter().zip(users) {
                    req = req.expression_attribute_values(p, AttributeValue::S(u.clone()));
                }
            }
            let out = req
                .send()
                .await
                .map_err(|e| DirectoryError::Unavailable(sdk_failure("dynamodb:Scan", &e)))?;
            for item in out.items.unwrap_or_default() {
                let user = item
                    .get(&self.schema.connection_user_attr)
                    .and_then(|v| v.as_s().ok());
                if user.is_some_and(|u| users.contains(u)) {
                    found.extend(self.connection_of_item(&item));
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(found),
            }
        }
    }

    /// Connections of `users` through the user-id index, one query per user.
    /// Every connection of `users` through the by-user index: one `Query` per user, up to
    /// [`QUERY_CONCURRENCY`] at a time. One after another, a chat room of 1 000 members would
    /// cost 1 000 round trips (seconds) before an event could go out; in parallel it is a few
    /// dozen round-trip times, and the bound keeps one event from using a burst of the table's
    /// throughput.
    async fn query_connections(
        &self,
        index: &str,
        users: &BTreeSet<String>,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        use futures::{StreamExt as _, TryStreamExt as _};
        // Futures built up front: a closure inside the stream would make the future returned
        // by the `#[async_trait]` method not `Send` for every lifetime.
        let queries: Vec<_> = users
            .iter()
            .map(|user| self.query_user_connections(index, user))
            .collect();
        let per_user: Vec<Vec<ConnectionId>> = futures::stream::iter(queries)
            .buffer_unordered(QUERY_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(per_user.into_iter().flatten().collect())
    }

    /// The connections of one user through the by-user index, every page.
    async fn query_user_connections(
        &self,
        index: &str,
        user: &str,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.schema.connections_table)
                .index_name(index)
                .key_condition_expression("#u = :u")
                .expression_attribute_names("#u", &self.schema.connection_user_attr)
                .expression_attribute_values(":u", AttributeValue::S(user.to_owned()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| DirectoryError::Unavailable(sdk_failure("dynamodb:Query", &e)))?;
            for item in out.items.unwrap_or_default() {
                found.extend(self.connection_of_item(&item));
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(found)
    }

    fn connection_of_item(&self, item: &HashMap<String, AttributeValue>) -> Option<ConnectionId> {
        let raw = item.get(&self.schema.connection_id_attr)?.as_s().ok()?;
        match ConnectionId::parse(raw) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, "skipping a connection item with an unusable connection id");
                None
            }
        }
    }
}

/// User ids from a string set, a list of strings or of `{userId: S}` maps, or a map keyed by
/// user id. A missing attribute is an empty collection.
pub(crate) fn user_ids(v: Option<&AttributeValue>) -> Result<BTreeSet<String>, &'static str> {
    let Some(v) = v else {
        return Ok(BTreeSet::new());
    };
    match v {
        AttributeValue::Ss(ids) => Ok(ids.iter().cloned().collect()),
        AttributeValue::M(m) => Ok(m.keys().cloned().collect()),
        AttributeValue::L(items) => items
            .iter()
            .map(|item| match item {
                AttributeValue::S(u) => Ok(u.clone()),
                AttributeValue::M(m) => m
                    .get("userId")
                    .and_then(|u| u.as_s().ok())
                    .cloned()
                    .ok_or("is a list of maps without a userId string"),
                _ => Err("is a list holding something other than strings or maps"),
            })
            .collect(),
        AttributeValue::Null(_) => Ok(BTreeSet::new()),
        _ => Err("is not a string set, list or map"),
    }
}

#[async_trait]
impl ChatDirectory for DynamoDirectory {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.schema.connections_table)
            .key(
                &self.schema.connection_id_attr,
                AttributeValue::S(connection.as_str().to_owned()),
            )
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DirectoryError::Unavailable(sdk_failure("dynamodb:GetItem", &e)))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let raw = item
            .get(&self.schema.connection_user_attr)
            .and_then(|v| v.as_s().ok());
        match raw.map(UserId::parse) {
            Some(Ok(user)) => Ok(Some(user)),
            Some(Err(e)) => {
                warn!(connection_id = %connection, error = %e, "connection item holds an unusable user id");
                Ok(None)
            }
            None => {
                warn!(connection_id = %connection, attribute = %self.schema.connection_user_attr, "connection item has no user id");
                Ok(None)
            }
        }
    }

    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        let Some(room) = self.chat_room(chat_room).await? else {
            return Ok(None);
        };
        Ok(Some(room.membership_of(user.as_str())))
    }

    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        let Some(room) = self.chat_room(chat_room).await? else {
            return Ok(Vec::new());
        };
        let mut approved = room.members;
        approved.extend(room.admin);
        if approved.is_empty() {
            return Ok(Vec::new());
        }
        let mut conns = match &self.schema.connections_by_user_index {
            Some(index) => self.query_connections(index, &approved).await?,
            None => self.scan_connections(&approved).await?,
        };
        conns.sort();
        conns.dedup();
        Ok(conns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn user_ids_accepts_the_usual_shapes() {
        let want: BTreeSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        assert_eq!(
            user_ids(Some(&AttributeValue::Ss(vec!["a".into(), "b".into()]))).unwrap(),
            want
        );
        assert_eq!(
            user_ids(Some(&AttributeValue::L(vec![s("a"), s("b")]))).unwrap(),
            want
        );
        let maps = AttributeValue::L(vec![
            AttributeValue::M(HashMap::from([("userId".into(), s("a"))])),
            AttributeValue::M(HashMap::from([
                ("userId".into(), s("b")),
                ("name".into(), s("B")),
            ])),
        ]);
        assert_eq!(user_ids(Some(&maps)).unwrap(), want);
        let keyed = AttributeValue::M(HashMap::from([("a".into(), s("x")), ("b".into(), s("y"))]));
        assert_eq!(user_ids(Some(&keyed)).unwrap(), want);
        assert!(user_ids(None).unwrap().is_empty());
    }

    #[test]
    fn user_ids_refuses_other_shapes() {
        assert!(user_ids(Some(&s("a,b"))).is_err());
        assert!(user_ids(Some(&AttributeValue::L(vec![AttributeValue::Bool(true)]))).is_err());
        assert!(user_ids(Some(&AttributeValue::L(vec![AttributeValue::M(
            HashMap::new()
        )])))
        .is_err());
    }
}
