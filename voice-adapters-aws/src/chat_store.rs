//! The chat domain's [`ChatStore`] on DynamoDB: the whole chat app of a `ChatMode=builtin`
//! stack (users, connections, rooms, join requests, bans, messages).
//!
//! Shaped after the original guide's `ChatConnections` / `ChatRooms` tables, and written so
//! that [`DynamoDirectory`] reading the same tables with the same [`DirectorySchema`] (voice's
//! "existing chat app" mode) gives the same answers as this store's own [`ChatDirectory`]:
//! a connection item maps `connectionId` → `userId`; a room item holds its `creatorId` (admin),
//! `members` and `pendingRequests` as string sets. Two more tables hold what the guide's app
//! never had: users (name, resume-token generation, the rooms they admin / belong to / wait
//! for, their open connections) and messages (a bounded history per room).
//!
//! Every change that spans items (a room and its name, a request and its requester's count)
//! is one `TransactWriteItems` whose conditions carry the rule, never a read followed by a
//! blind write: a read only picks which conditional write to try, and a failed condition
//! means "read again". The layout is described table by table in `docs/aws-adapters.md`.

use std::collections::{BTreeSet, HashMap};
use std::error::Error as StdError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chat_domain::{
    ChatMessage, ChatStore, ChatStoreError, JoinQuotas, MemberEntry, Page, Quota, RoomRecord,
    RoomSummary, StoredMessage, UserUsage, MESSAGE_HISTORY,
};
use tracing::{error, warn};
use voice_domain::ports::{
    ChatDirectory, DirectoryError, MemberState, Membership, PortFailure, StoreError,
};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

use crate::directory::{user_ids, ChatRoom, DirectorySchema, DynamoDirectory};
use crate::errors::sdk_failure;
use crate::store::{
    backoff, is_ccf, n, reason_code, retryable_cancellation, s, transact, Item, Transaction,
    TRANSACTION_ATTEMPTS,
};

/// Attribute names this store adds to the chat tables (the shared ones, on the connections
/// and rooms tables, come from [`DirectorySchema`]).
pub mod attr {
    /// Rooms table (S): `chatRoom` on a room item, `roomName` on a name item.
    pub const ITEM_TYPE: &str = "itemType";
    /// Rooms table, room item (N, ms since epoch): creation time, the order of `rooms()`.
    pub const CREATED_AT: &str = "createdAt";
    /// Rooms table, name item (S): the room that holds the name.
    pub const NAME_OF: &str = "nameOf";
    /// Connections table (N, epoch seconds): DynamoDB TTL; a connection cannot outlive it.
    pub const EXPIRES_AT: &str = "expiresAt";
    /// Users table: partition key (S).
    pub const USER_ID: &str = "userId";
    /// Users table (S): the current display name.
    pub const NAME: &str = "name";
    /// Users table (N): the resume-token generation (absent = 0).
    pub const TOKEN_GENERATION: &str = "tokenGeneration";
    /// Users table (SS): rooms the user is the admin of.
    pub const ADMIN_ROOMS: &str = "adminRooms";
    /// Users table (SS): rooms where the user is an approved member (admin included).
    pub const MEMBER_ROOMS: &str = "memberRooms";
    /// Users table (SS): rooms where the user's join request is pending.
    pub const PENDING_ROOMS: &str = "pendingRooms";
    /// Users table (M connection id → N epoch seconds): the user's open connections and when
    /// each expires at the latest. Always present (maybe empty) on an item this store wrote.
    pub const CONNECTIONS: &str = "connections";
    /// Messages table: partition key (S), the chat room.
    pub const ROOM_ID: &str = "roomId";
    /// Messages table: sort key (N). 0 is the room's counter item, messages count from 1.
    pub const SEQ: &str = "seq";
    /// Messages table, counter item (N): the last sequence number handed out.
    pub const LAST_SEQ: &str = "lastSeq";
    /// Messages table (S): the author.
    pub const AUTHOR: &str = "userId";
    /// Messages table (S): the author's display name when sent.
    pub const AUTHOR_NAME: &str = "name";
    /// Messages table (S): the text.
    pub const TEXT: &str = "text";
    /// Messages table (N, ms since epoch): when it was sent.
    pub const AT: &str = "at";
}

/// `itemType` of a room item.
const TYPE_ROOM: &str = "chatRoom";
/// `itemType` of a room-name item.
const TYPE_NAME: &str = "roomName";
/// Key prefix of room-name items in the rooms table; room ids never start with it.
const NAME_PREFIX: &str = "name#";
/// The longest an API Gateway WebSocket connection lives plus a margin for clock skew. A
/// connection item and the user's entry for it expire then, so that a `$disconnect` that never
/// came cannot leave a user online for ever.
///
/// "Connection duration for WebSocket APIs: 2 hours"
/// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html>); "`$disconnect`
/// is a best-effort event"
/// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-route-keys-connect-disconnect.html>).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(2 * 3600 + 600);
/// Messages kept per room unless configured otherwise: the contract's
/// [`MESSAGE_HISTORY`] twice over, so that a gap left by a failed append (a sequence number
/// handed out, no message written) never brings the kept window under the history.
const DEFAULT_MESSAGE_RETENTION: u64 = 2 * MESSAGE_HISTORY as u64;
/// BatchGetItem's limit on keys per call.
const BATCH_GET_KEYS: usize = 100;

/// The four chat tables: connections and rooms named (with their attributes) by the same
/// [`DirectorySchema`] that voice's reader uses, plus the users and messages tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTables {
    /// Connections and rooms tables and their attribute names.
    pub directory: DirectorySchema,
    /// Users table (partition key `userId`, S).
    pub users_table: String,
    /// Messages table (partition key `roomId`, S; sort key `seq`, N).
    pub messages_table: String,
}

impl ChatTables {
    /// The four tables with the default attribute names.
    pub fn new(
        connections_table: impl Into<String>,
        rooms_table: impl Into<String>,
        users_table: impl Into<String>,
        messages_table: impl Into<String>,
    ) -> Self {
        Self {
            directory: DirectorySchema::new(connections_table, rooms_table),
            users_table: users_table.into(),
            messages_table: messages_table.into(),
        }
    }
}

/// The chat on DynamoDB. Cheap to clone (the SDK client is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct DynamoChat {
    client: Client,
    tables: ChatTables,
    /// Voice's reader over the same tables: `user_of` and `membership` are its answers, so the
    /// two cannot disagree on them.
    directory: DynamoDirectory,
    retention: u64,
}

/// The port's error for a failed SDK call of operation `op`.
fn failed<E>(op: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> ChatStoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    move |e| ChatStoreError::Unavailable(sdk_failure(op, &e))
}

fn from_directory(e: DirectoryError) -> ChatStoreError {
    match e {
        DirectoryError::Unavailable(f) => ChatStoreError::Unavailable(f),
    }
}

fn to_directory(e: ChatStoreError) -> DirectoryError {
    match e {
        ChatStoreError::Unavailable(f) => DirectoryError::Unavailable(f),
        other => DirectoryError::Unavailable(PortFailure::permanent(other.to_string())),
    }
}

fn from_store(e: StoreError) -> ChatStoreError {
    match e {
        StoreError::Unavailable(f) => ChatStoreError::Unavailable(f),
        other => ChatStoreError::Unavailable(PortFailure::permanent(other.to_string())),
    }
}

fn build_failed(e: aws_smithy_types::error::operation::BuildError) -> ChatStoreError {
    ChatStoreError::Unavailable(PortFailure::permanent(format!(
        "could not build DynamoDB request: {e}"
    )))
}

/// A stored item that does not have the shape this store writes: logged, and a permanent
/// failure (retrying cannot fix it) rather than a wrong answer.
fn corrupt(what: String) -> ChatStoreError {
    error!(problem = %what, "chat table item does not have the expected shape");
    ChatStoreError::Unavailable(PortFailure::permanent(format!("chat tables: {what}")))
}

fn still_conflicting() -> ChatStoreError {
    ChatStoreError::Unavailable(PortFailure::retryable(
        "dynamodb:TransactWriteItems: still conflicting with concurrent transactions",
    ))
}

fn ss(v: &str) -> AttributeValue {
    AttributeValue::Ss(vec![v.to_owned()])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

fn get_str<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_num(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn set_len(item: &Item, name: &str) -> usize {
    item.get(name)
        .and_then(|v| v.as_ss().ok())
        .map_or(0, Vec::len)
}

fn parse<T: TryFrom<String>>(raw: &str, what: &str) -> Result<T, ChatStoreError>
where
    T::Error: std::fmt::Display,
{
    T::try_from(raw.to_owned()).map_err(|e| corrupt(format!("stored {what} {raw:?}: {e}")))
}

/// The unique key of a room name: the chat domain's rule (case and look-alikes folded), under
/// the name-claim prefix.
fn name_key(name: &str) -> String {
    format!("{NAME_PREFIX}{}", chat_domain::room_name_key(name))
}

/// The user's connections that have not expired, and the expired entries (name, stored value)
/// a reader may prune.
fn live_connections(item: &Item) -> (Vec<ConnectionId>, Vec<(String, AttributeValue)>) {
    let now = now_secs();
    let (mut live, mut expired) = (Vec::new(), Vec::new());
    let Some(Ok(map)) = item.get(attr::CONNECTIONS).map(AttributeValue::as_m) else {
        return (live, expired);
    };
    for (conn, expiry) in map {
        let until = expiry.as_n().ok().and_then(|v| v.parse::<u64>().ok());
        if until.is_some_and(|t| t > now) {
            match ConnectionId::parse(conn) {
                Ok(c) => live.push(c),
                Err(e) => warn!(error = %e, "skipping an unusable connection id of a user"),
            }
        } else {
            expired.push((conn.clone(), expiry.clone()));
        }
    }
    live.sort();
    (live, expired)
}

impl DynamoChat {
    /// The chat on `tables`, through a client built once at start-up, keeping
    /// [`DEFAULT_MESSAGE_RETENTION`] messages per room.
    pub fn new(client: Client, tables: ChatTables) -> Self {
        Self {
            directory: DynamoDirectory::new(client.clone(), tables.directory.clone()),
            client,
            tables,
            retention: DEFAULT_MESSAGE_RETENTION,
        }
    }

    /// Keeps the last `n` messages per room instead (at least [`MESSAGE_HISTORY`], which
    /// the contract requires).
    #[must_use]
    pub fn with_message_retention(mut self, n: u64) -> Self {
        self.retention = n.max(MESSAGE_HISTORY as u64);
        self
    }

    fn schema(&self) -> &DirectorySchema {
        &self.tables.directory
    }

    /// A strongly consistent read of one item (a rule decided on a stale read would be wrong).
    async fn get(&self, table: &str, key: Item) -> Result<Option<Item>, ChatStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(failed("dynamodb:GetItem"))?;
        Ok(out.item)
    }

    async fn user_item(&self, user: &UserId) -> Result<Option<Item>, ChatStoreError> {
        let key = Item::from([(attr::USER_ID.to_owned(), s(user.as_str()))]);
        self.get(&self.tables.users_table, key).await
    }

    /// The room item of `id` (`None` for no room, and for a name item whose key was passed).
    async fn room_item(&self, id: &ChatRoomId) -> Result<Option<Item>, ChatStoreError> {
        let key = Item::from([(self.schema().room_id_attr.clone(), s(id.as_str()))]);
        Ok(self
            .get(&self.schema().rooms_table, key)
            .await?
            .filter(|item| get_str(item, attr::ITEM_TYPE) == Some(TYPE_ROOM)))
    }

    fn parse_room(&self, id: &ChatRoomId, item: &Item) -> Result<ChatRoom, ChatStoreError> {
        self.directory.parse_room(id, item).map_err(from_directory)
    }

    fn record_of(&self, item: &Item) -> Result<RoomRecord, ChatStoreError> {
        let field = |name: &str| {
            get_str(item, name).ok_or_else(|| corrupt(format!("room item without {name}")))
        };
        Ok(RoomRecord {
            id: parse(field(&self.schema().room_id_attr)?, "room id")?,
            name: field(&self.schema().room_name_attr)?.to_owned(),
            admin: parse(field(&self.schema().room_admin_attr)?, "admin id")?,
        })
    }

    /// The user a connection item names, read consistently.
    async fn connection_user(&self, c: &ConnectionId) -> Result<Option<String>, ChatStoreError> {
        let key = Item::from([(self.schema().connection_id_attr.clone(), s(c.as_str()))]);
        let item = self.get(&self.schema().connections_table, key).await?;
        Ok(item.and_then(|i| get_str(&i, &self.schema().connection_user_attr).map(str::to_owned)))
    }

    /// An update of a user item that also creates its (empty) connections map if it has none,
    /// so that later binds can set one entry of it. `rest` is the `ADD` / `DELETE` part. Names
    /// `#conns`, `#name`, `#gen`, `#adminRooms`, `#memberRooms`, `#pendingRooms` are defined as
    /// `rest` uses them; values come from the caller.
    fn user_update(
        &self,
        user: &UserId,
        rest: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Update, ChatStoreError> {
        let mut b = Update::builder()
            .table_name(&self.tables.users_table)
            .key(attr::USER_ID, s(user.as_str()))
            .update_expression(format!(
                "SET #conns = if_not_exists(#conns, :noconns) {rest}"
            ))
            .expression_attribute_names("#conns", attr::CONNECTIONS)
            .expression_attribute_values(":noconns", AttributeValue::M(HashMap::new()));
        for (k, v) in user_names(rest) {
            b = b.expression_attribute_names(k, v);
        }
        for (k, v) in values {
            b = b.expression_attribute_values(k, v);
        }
        b.build().map_err(build_failed)
    }

    /// One update, outside a transaction.
    async fn update_one(
        &self,
        u: Update,
        returns: ReturnValue,
    ) -> Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>> {
        self.client
            .update_item()
            .table_name(u.table_name)
            .set_key(Some(u.key))
            .update_expression(u.update_expression)
            .set_condition_expression(u.condition_expression)
            .set_expression_attribute_names(u.expression_attribute_names)
            .set_expression_attribute_values(u.expression_attribute_values)
            .return_values(returns)
            .send()
            .await
    }

    /// Gives a user item its connections map (a user first seen through a join request has
    /// one already; this covers items written by hand).
    async fn ensure_connections_map(&self, user: &str) -> Result<(), ChatStoreError> {
        let user = parse::<UserId>(user, "user id")?;
        let u = self.user_update(&user, "", Vec::new())?;
        self.update_one(u, ReturnValue::None)
            .await
            .map_err(failed("dynamodb:UpdateItem"))?;
        Ok(())
    }

    /// An update of the room item of `room`, conditional on it being a room item and on
    /// `condition`. Names `#t`, `#admin`, `#members`, `#pending`, `#banned` are defined.
    fn room_update(
        &self,
        room: &ChatRoomId,
        expression: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Update, ChatStoreError> {
        let sc = self.schema();
        let mut b = Update::builder()
            .table_name(&sc.rooms_table)
            .key(&sc.room_id_attr, s(room.as_str()))
            .update_expression(expression)
            .condition_expression(format!("#t = :roomtype AND ({condition})"))
            .expression_attribute_names("#t", attr::ITEM_TYPE)
            .expression_attribute_values(":roomtype", s(TYPE_ROOM));
        let text = format!("{expression} {condition}");
        for (k, v) in [
            ("#admin", &sc.room_admin_attr),
            ("#members", &sc.room_members_attr),
            ("#pending", &sc.room_pending_attr),
            ("#banned", &sc.room_banned_attr),
        ] {
            if text.contains(k) {
                b = b.expression_attribute_names(k, v);
            }
        }
        for (k, v) in values {
            b = b.expression_attribute_values(k, v);
        }
        b.build().map_err(build_failed)
    }

    /// Runs `items` as one transaction, retrying cancellations that no condition caused
    /// (`TransactionConflict`, throttling) with jittered backoff; a failed condition is handed
    /// back (which item's) for the caller to turn into a refusal or a fresh read.
    async fn run_transaction(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Outcome, ChatStoreError> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            match transact(&self.client, items.clone()).await {
                Ok(()) => return Ok(Outcome::Done),
                Err(Transaction::Failed(f)) => return Err(ChatStoreError::Unavailable(f)),
                Err(Transaction::Cancelled(reasons)) => {
                    if let Some(i) = (0..reasons.len()).find(|i| is_ccf(reason_code(&reasons, *i)))
                    {
                        return Ok(Outcome::ConditionFailed(i));
                    }
                    retryable_cancellation(&reasons).map_err(from_store)?;
                    backoff(attempt).await;
                }
            }
        }
        Err(still_conflicting())
    }

    /// One membership change as one transaction of two updates: the room item (`room_expr`
    /// under `condition`; `:u` is the user as a one-element set, `:uid` as a string, and
    /// `values` any others the condition names) and the user item (`user_expr`; `:r` is the
    /// room as a one-element set), so that the room's sets and the user's counts never
    /// disagree.
    async fn change_membership(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        (room_expr, condition): (&str, &str),
        values: Vec<(&str, AttributeValue)>,
        user_expr: &str,
    ) -> Result<Outcome, ChatStoreError> {
        let mut all = vec![(":u", ss(user.as_str())), (":uid", s(user.as_str()))];
        all.extend(values);
        let on_room = self.room_update(room, room_expr, condition, all)?;
        let on_user = self.user_update(user, user_expr, vec![(":r", ss(room.as_str()))])?;
        self.run_transaction(vec![
            TransactWriteItem::builder().update(on_room).build(),
            TransactWriteItem::builder().update(on_user).build(),
        ])
        .await
    }

    /// Removes expired entries from a user's connections map, each only if it still holds the
    /// value read (a rebind in between keeps its entry). Best effort: readers ignore expired
    /// entries anyway, this only keeps the item small.
    async fn prune(&self, user: &UserId, expired: Vec<(String, AttributeValue)>) {
        let mut b = Update::builder()
            .table_name(&self.tables.users_table)
            .key(attr::USER_ID, s(user.as_str()))
            .expression_attribute_names("#conns", attr::CONNECTIONS);
        let (mut removes, mut conds) = (Vec::new(), Vec::new());
        for (i, (conn, value)) in expired.into_iter().take(50).enumerate() {
            removes.push(format!("#conns.#e{i}"));
            conds.push(format!("#conns.#e{i} = :e{i}"));
            b = b
                .expression_attribute_names(format!("#e{i}"), conn)
                .expression_attribute_values(format!(":e{i}"), value);
        }
        let built = b
            .update_expression(format!("REMOVE {}", removes.join(", ")))
            .condition_expression(conds.join(" AND "))
            .build();
        if let Ok(u) = built {
            if let Err(e) = self.update_one(u, ReturnValue::None).await {
                tracing::debug!(error = %sdk_failure("dynamodb:UpdateItem", &e).message, "could not prune expired connections");
            }
        }
    }

    /// Every live connection of the approved members of `room`: the room item, then the
    /// members' user items in consistent `BatchGetItem`s of 100.
    async fn room_connections(
        &self,
        room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, ChatStoreError> {
        let Some(item) = self.room_item(room).await? else {
            return Ok(Vec::new());
        };
        let r = self.parse_room(room, &item)?;
        let mut approved: BTreeSet<String> = r.members;
        approved.extend(r.admin);
        let approved: Vec<String> = approved.into_iter().collect();
        let mut out = Vec::new();
        for chunk in approved.chunks(BATCH_GET_KEYS) {
            for user in self.batch_get_users(chunk).await? {
                out.extend(live_connections(&user).0);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The user items of `users` (≤ 100: id, name and connections), read consistently,
    /// unprocessed keys retried.
    async fn batch_get_users(&self, users: &[String]) -> Result<Vec<Item>, ChatStoreError> {
        let table = &self.tables.users_table;
        let keys: Vec<Item> = users
            .iter()
            .map(|u| Item::from([(attr::USER_ID.to_owned(), s(u))]))
            .collect();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression("#uid, #name, #conns")
                .expression_attribute_names("#uid", attr::USER_ID)
                .expression_attribute_names("#name", attr::NAME)
                .expression_attribute_names("#conns", attr::CONNECTIONS)
                .build()
                .map_err(build_failed)?,
        );
        let mut found = Vec::new();
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let Some(request) = pending.take() else {
                return Ok(found);
            };
            let out = self
                .client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(failed("dynamodb:BatchGetItem"))?;
            found.extend(
                out.responses
                    .and_then(|mut r| r.remove(table))
                    .unwrap_or_default(),
            );
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .filter(|k| !k.keys.is_empty());
            if pending.is_some() {
                // DynamoDB returns unprocessed keys when throttled: back off before asking again.
                backoff(attempt).await;
            }
        }
        match pending {
            None => Ok(found),
            Some(_) => Err(ChatStoreError::Unavailable(PortFailure::retryable(
                "dynamodb:BatchGetItem: keys still unprocessed (throttled)",
            ))),
        }
    }
}

/// How a transaction ended when it did not fail.
enum Outcome {
    /// Committed.
    Done,
    /// Cancelled because the condition of item `i` failed.
    ConditionFailed(usize),
}

/// The `#name` placeholders of the users table that `expression` uses.
fn user_names(expression: &str) -> Vec<(&'static str, &'static str)> {
    [
        ("#name", attr::NAME),
        ("#gen", attr::TOKEN_GENERATION),
        ("#adminRooms", attr::ADMIN_ROOMS),
        ("#memberRooms", attr::MEMBER_ROOMS),
        ("#pendingRooms", attr::PENDING_ROOMS),
    ]
    .into_iter()
    .filter(|(k, _)| expression.contains(k))
    .collect()
}

#[async_trait]
impl ChatStore for DynamoChat {
    /// One transaction: the connection item (conditional on who held it when read) and the
    /// user's name and connections-map entry; a connection moving from another user leaves
    /// that user's map in the same step.
    async fn bind_connection(
        &self,
        connection: &ConnectionId,
        user: &UserId,
        name: &str,
    ) -> Result<(), ChatStoreError> {
        let sc = self.schema().clone();
        let expires = now_secs() + CONNECTION_LIFETIME.as_secs();
        for _ in 0..TRANSACTION_ATTEMPTS {
            let previous = self.connection_user(connection).await?;
            let mut put = Put::builder()
                .table_name(&sc.connections_table)
                .item(&sc.connection_id_attr, s(connection.as_str()))
                .item(&sc.connection_user_attr, s(user.as_str()))
                .item(attr::EXPIRES_AT, n(expires));
            put = match &previous {
                None => put
                    .condition_expression("attribute_not_exists(#c)")
                    .expression_attribute_names("#c", &sc.connection_id_attr),
                Some(p) => put
                    .condition_expression("#u = :previous")
                    .expression_attribute_names("#u", &sc.connection_user_attr)
                    .expression_attribute_values(":previous", s(p)),
            };
            let entry = |who: &str| {
                Update::builder()
                    .table_name(&self.tables.users_table)
                    .key(attr::USER_ID, s(who))
                    .condition_expression("attribute_exists(#conns)")
                    .expression_attribute_names("#conns", attr::CONNECTIONS)
                    .expression_attribute_names("#c", connection.as_str())
            };
            let mine = entry(user.as_str())
                .update_expression("SET #name = :name, #conns.#c = :expires")
                .expression_attribute_names("#name", attr::NAME)
                .expression_attribute_values(":name", s(name))
                .expression_attribute_values(":expires", n(expires))
                .build()
                .map_err(build_failed)?;
            let mut items = vec![
                TransactWriteItem::builder()
                    .put(put.build().map_err(build_failed)?)
                    .build(),
                TransactWriteItem::builder().update(mine).build(),
            ];
            if let Some(p) = previous.as_deref().filter(|p| *p != user.as_str()) {
                let theirs = entry(p)
                    .update_expression("REMOVE #conns.#c")
                    .build()
                    .map_err(build_failed)?;
                items.push(TransactWriteItem::builder().update(theirs).build());
            }
            match self.run_transaction(items).await? {
                Outcome::Done => return Ok(()),
                // The connection changed hands since the read: read again.
                Outcome::ConditionFailed(0) => {}
                Outcome::ConditionFailed(1) => self.ensure_connections_map(user.as_str()).await?,
                Outcome::ConditionFailed(_) => {
                    if let Some(p) = &previous {
                        self.ensure_connections_map(p).await?;
                    }
                }
            }
        }
        Err(still_conflicting())
    }

    /// One transaction: the connection item (only if it still names the user read) and the
    /// user's map entry. An unknown connection is a no-op.
    async fn unbind_connection(&self, connection: &ConnectionId) -> Result<(), ChatStoreError> {
        let sc = self.schema().clone();
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some(user) = self.connection_user(connection).await? else {
                return Ok(());
            };
            let delete = Delete::builder()
                .table_name(&sc.connections_table)
                .key(&sc.connection_id_attr, s(connection.as_str()))
                .condition_expression("#u = :user")
                .expression_attribute_names("#u", &sc.connection_user_attr)
                .expression_attribute_values(":user", s(&user))
                .build()
                .map_err(build_failed)?;
            let entry = Update::builder()
                .table_name(&self.tables.users_table)
                .key(attr::USER_ID, s(&user))
                .update_expression("REMOVE #conns.#c")
                .condition_expression("attribute_exists(#conns)")
                .expression_attribute_names("#conns", attr::CONNECTIONS)
                .expression_attribute_names("#c", connection.as_str())
                .build()
                .map_err(build_failed)?;
            let items = vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().update(entry).build(),
            ];
            match self.run_transaction(items).await? {
                Outcome::Done => return Ok(()),
                Outcome::ConditionFailed(0) => {}
                Outcome::ConditionFailed(_) => self.ensure_connections_map(&user).await?,
            }
        }
        Err(still_conflicting())
    }

    /// The user item's `name`, read consistently (a rename is seen at once).
    async fn user_name(&self, user: &UserId) -> Result<Option<String>, ChatStoreError> {
        Ok(self
            .user_item(user)
            .await?
            .and_then(|i| get_str(&i, attr::NAME).map(str::to_owned)))
    }

    /// The unexpired entries of the user item's connections map (consistent, unlike an index
    /// on the connections table); expired ones are pruned on the way.
    async fn connections_of_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConnectionId>, ChatStoreError> {
        let Some(item) = self.user_item(user).await? else {
            return Ok(Vec::new());
        };
        let (live, expired) = live_connections(&item);
        if !expired.is_empty() {
            self.prune(user, expired).await;
        }
        Ok(live)
    }

    /// A consistent, paged `Scan` of the connections table, expired items left out: only room
    /// creation asks this (everyone hears of a new room).
    async fn identified_connections(&self) -> Result<Vec<ConnectionId>, ChatStoreError> {
        let sc = self.schema();
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&sc.connections_table)
                .consistent_read(true)
                .projection_expression("#c")
                .filter_expression(
                    "attribute_exists(#u) AND (attribute_not_exists(#x) OR #x > :now)",
                )
                .expression_attribute_names("#c", &sc.connection_id_attr)
                .expression_attribute_names("#u", &sc.connection_user_attr)
                .expression_attribute_names("#x", attr::EXPIRES_AT)
                .expression_attribute_values(":now", n(now_secs()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(failed("dynamodb:Scan"))?;
            for item in page.items.unwrap_or_default() {
                if let Some(c) = get_str(&item, &sc.connection_id_attr) {
                    match ConnectionId::parse(c) {
                        Ok(c) => out.push(c),
                        Err(e) => {
                            warn!(error = %e, "skipping a connection item with an unusable id")
                        }
                    }
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    /// The user item's `memberRooms`, kept in the same transactions as the rooms' members.
    async fn rooms_of_member(&self, user: &UserId) -> Result<Vec<ChatRoomId>, ChatStoreError> {
        let Some(item) = self.user_item(user).await? else {
            return Ok(Vec::new());
        };
        let ids = user_ids(item.get(attr::MEMBER_ROOMS))
            .map_err(|e| corrupt(format!("user {user}: {} {e}", attr::MEMBER_ROOMS)))?;
        ids.iter().map(|r| parse(r, "room id")).collect()
    }

    /// One transaction: the room item, its name item (the name's case-insensitive key: two
    /// creators of one name cannot both pass `attribute_not_exists`), the admin's user item
    /// (conditional on its `adminRooms` set, the user's room counter kept in the same
    /// transactions as the rooms, being smaller than the quota: two racing creations cannot
    /// both pass it) and the room's message counter.
    async fn create_room(
        &self,
        room: &RoomRecord,
        max_admin_rooms: usize,
    ) -> Result<(), ChatStoreError> {
        if max_admin_rooms == 0 {
            return Err(ChatStoreError::QuotaExceeded(Quota::RoomsPerUser));
        }
        if room.id.as_str().starts_with(NAME_PREFIX) {
            warn!(chat_room_id = %room.id, "refused a chat room id with the reserved name prefix");
            return Err(ChatStoreError::Unavailable(PortFailure::permanent(
                format!("chat room ids must not start with {NAME_PREFIX}"),
            )));
        }
        let sc = self.schema();
        let id = room.id.as_str();
        let room_put = Put::builder()
            .table_name(&sc.rooms_table)
            .item(&sc.room_id_attr, s(id))
            .item(attr::ITEM_TYPE, s(TYPE_ROOM))
            .item(&sc.room_name_attr, s(&room.name))
            .item(&sc.room_admin_attr, s(room.admin.as_str()))
            .item(&sc.room_members_attr, ss(room.admin.as_str()))
            .item(attr::CREATED_AT, n(now_ms()))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", &sc.room_id_attr)
            .build()
            .map_err(build_failed)?;
        let name_put = Put::builder()
            .table_name(&sc.rooms_table)
            .item(&sc.room_id_attr, s(&name_key(&room.name)))
            .item(attr::ITEM_TYPE, s(TYPE_NAME))
            .item(attr::NAME_OF, s(id))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", &sc.room_id_attr)
            .build()
            .map_err(build_failed)?;
        let mut admin = self.user_update(
            &room.admin,
            "ADD #adminRooms :r, #memberRooms :r",
            vec![(":r", ss(id)), (":maxrooms", n(max_admin_rooms as u64))],
        )?;
        // `size` of a string set is its number of elements; an emptied set is removed, so an
        // absent one is zero rooms.
        // https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.OperatorsAndFunctions.html
        admin.condition_expression =
            Some("attribute_not_exists(#adminRooms) OR size(#adminRooms) < :maxrooms".into());
        let counter = Put::builder()
            .table_name(&self.tables.messages_table)
            .item(attr::ROOM_ID, s(id))
            .item(attr::SEQ, n(0))
            .item(attr::LAST_SEQ, n(0))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ROOM_ID)
            .build()
            .map_err(build_failed)?;
        // The quota's item first: when both the quota and the name refuse, the quota is the
        // answer (as in the other stores).
        let items = vec![
            TransactWriteItem::builder().update(admin).build(),
            TransactWriteItem::builder().put(room_put).build(),
            TransactWriteItem::builder().put(name_put).build(),
            TransactWriteItem::builder().put(counter).build(),
        ];
        match self.run_transaction(items).await? {
            Outcome::Done => Ok(()),
            Outcome::ConditionFailed(0) => Err(ChatStoreError::QuotaExceeded(Quota::RoomsPerUser)),
            Outcome::ConditionFailed(_) => Err(ChatStoreError::RoomExists),
        }
    }

    /// Set sizes on the user item, kept in the same transactions as the rooms they count.
    async fn usage_of(&self, user: &UserId) -> Result<UserUsage, ChatStoreError> {
        Ok(self
            .user_item(user)
            .await?
            .map(|i| UserUsage {
                rooms_admin: set_len(&i, attr::ADMIN_ROOMS),
                pending_requests: set_len(&i, attr::PENDING_ROOMS),
            })
            .unwrap_or_default())
    }

    /// The user item's `tokenGeneration` (absent = 0).
    async fn token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError> {
        Ok(self
            .user_item(user)
            .await?
            .and_then(|i| get_num(&i, attr::TOKEN_GENERATION))
            .unwrap_or(0))
    }

    /// `ADD tokenGeneration 1`, atomic on the item, returning the new value.
    async fn bump_token_generation(&self, user: &UserId) -> Result<u64, ChatStoreError> {
        let u = self.user_update(user, "ADD #gen :one", vec![(":one", n(1))])?;
        let out = self
            .update_one(u, ReturnValue::UpdatedNew)
            .await
            .map_err(failed("dynamodb:UpdateItem"))?;
        out.attributes
            .as_ref()
            .and_then(|a| get_num(a, attr::TOKEN_GENERATION))
            .ok_or_else(|| {
                corrupt(format!(
                    "user {user}: {} not returned",
                    attr::TOKEN_GENERATION
                ))
            })
    }

    /// A consistent, paged `Scan` of the room items, ordered by creation time then id.
    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.schema().rooms_table)
                .consistent_read(true)
                .filter_expression("#t = :roomtype")
                .expression_attribute_names("#t", attr::ITEM_TYPE)
                .expression_attribute_values(":roomtype", s(TYPE_ROOM))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(failed("dynamodb:Scan"))?;
            for item in page.items.unwrap_or_default() {
                found.push((
                    get_num(&item, attr::CREATED_AT).unwrap_or(0),
                    self.record_of(&item)?,
                ));
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(found.into_iter().map(|(_, r)| r).collect())
    }

    /// A consistent `GetItem` of the room item.
    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError> {
        self.room_item(id)
            .await?
            .map(|i| self.record_of(&i))
            .transpose()
    }

    /// The room item's admin and `members` (approved) and `pendingRequests` (pending), read
    /// exactly as voice's reader reads them.
    async fn members(
        &self,
        room: &ChatRoomId,
    ) -> Result<Vec<(UserId, MemberState)>, ChatStoreError> {
        let Some(item) = self.room_item(room).await? else {
            return Ok(Vec::new());
        };
        let r = self.parse_room(room, &item)?;
        let mut everyone: BTreeSet<&String> = r.members.iter().chain(&r.pending).collect();
        everyone.extend(&r.admin);
        everyone
            .into_iter()
            .map(|u| Ok((parse(u, "member id")?, r.membership_of(u).state)))
            .collect()
    }

    /// A consistent read picks the answer; a new request is one transaction (room's
    /// `pendingRequests` + requester's `pendingRooms`) conditional on the user being neither
    /// banned, admin, member nor pending, so a ban in between refuses it, and on both sets
    /// being smaller than their quotas, so two racing requests cannot both take the last place.
    async fn request_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        quotas: JoinQuotas,
    ) -> Result<(MemberState, MemberState), ChatStoreError> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some(item) = self.room_item(room).await? else {
                return Err(ChatStoreError::NoSuchRoom);
            };
            let banned = user_ids(item.get(&self.schema().room_banned_attr))
                .map_err(|e| corrupt(format!("room {room}: bans {e}")))?;
            if banned.contains(user.as_str()) {
                return Err(ChatStoreError::Banned);
            }
            let parsed = self.parse_room(room, &item)?;
            let before = parsed.membership_of(user.as_str()).state;
            if before != MemberState::None {
                return Ok((before, before));
            }
            if parsed.pending.len() >= quotas.per_room {
                return Err(ChatStoreError::QuotaExceeded(Quota::PendingPerRoom));
            }
            if quotas.per_user == 0 {
                return Err(ChatStoreError::QuotaExceeded(Quota::PendingPerUser));
            }
            let on_room = self.room_update(
                room,
                "ADD #pending :u",
                "#admin <> :uid AND NOT contains(#banned, :uid) AND NOT contains(#members, :uid) \
                 AND NOT contains(#pending, :uid) \
                 AND (attribute_not_exists(#pending) OR size(#pending) < :maxroom)",
                vec![
                    (":u", ss(user.as_str())),
                    (":uid", s(user.as_str())),
                    (":maxroom", n(quotas.per_room as u64)),
                ],
            )?;
            let mut on_user = self.user_update(
                user,
                "ADD #pendingRooms :r",
                vec![
                    (":r", ss(room.as_str())),
                    (":maxuser", n(quotas.per_user as u64)),
                ],
            )?;
            on_user.condition_expression = Some(
                "attribute_not_exists(#pendingRooms) OR size(#pendingRooms) < :maxuser".into(),
            );
            let change = self.run_transaction(vec![
                TransactWriteItem::builder().update(on_room).build(),
                TransactWriteItem::builder().update(on_user).build(),
            ]);
            match change.await? {
                Outcome::Done => return Ok((MemberState::None, MemberState::Pending)),
                Outcome::ConditionFailed(1) => {
                    return Err(ChatStoreError::QuotaExceeded(Quota::PendingPerUser))
                }
                // Banned, approved, asked, deleted or filled up in between: read again.
                Outcome::ConditionFailed(_) => {}
            }
        }
        Err(still_conflicting())
    }

    /// One transaction conditional on the request being pending: it leaves
    /// `pendingRequests`/`pendingRooms` and, approved, joins `members`/`memberRooms`.
    async fn decide_join(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<(), ChatStoreError> {
        let (room_expr, user_expr) = if approve {
            (
                "DELETE #pending :u ADD #members :u",
                "DELETE #pendingRooms :r ADD #memberRooms :r",
            )
        } else {
            ("DELETE #pending :u", "DELETE #pendingRooms :r")
        };
        let change = self.change_membership(
            room,
            user,
            (room_expr, "contains(#pending, :uid)"),
            Vec::new(),
            user_expr,
        );
        match change.await? {
            Outcome::Done => Ok(()),
            Outcome::ConditionFailed(_) => match self.room_item(room).await? {
                Some(_) => Err(ChatStoreError::NoPendingRequest),
                None => Err(ChatStoreError::NoSuchRoom),
            },
        }
    }

    /// A consistent read gives the state before; one transaction, conditional on that state
    /// still holding, removes the membership or request on both items and, with `ban`, adds the
    /// user to `bannedUsers`, conditional also on the user being in it already or the set
    /// being smaller than `max_bans`, so two racing bans cannot both take the last place.
    async fn remove_member(
        &self,
        room: &ChatRoomId,
        user: &UserId,
        ban: bool,
        max_bans: usize,
    ) -> Result<MemberState, ChatStoreError> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some(item) = self.room_item(room).await? else {
                return Err(ChatStoreError::NoSuchRoom);
            };
            let m = self.parse_room(room, &item)?.membership_of(user.as_str());
            if m.state == MemberState::None && !ban {
                return Ok(MemberState::None);
            }
            if ban {
                let banned = user_ids(item.get(&self.schema().room_banned_attr))
                    .map_err(|e| corrupt(format!("room {room}: bans {e}")))?;
                if !banned.contains(user.as_str()) && banned.len() >= max_bans {
                    return Err(ChatStoreError::QuotaExceeded(Quota::BansPerRoom));
                }
            }
            let still = match (m.state, m.is_admin) {
                (MemberState::Approved, true) => "#admin = :uid",
                (MemberState::Approved, false) => "contains(#members, :uid)",
                (MemberState::Pending, _) => {
                    "contains(#pending, :uid) AND NOT contains(#members, :uid)"
                }
                (MemberState::None, _) => {
                    "#admin <> :uid AND NOT contains(#members, :uid) AND NOT contains(#pending, :uid)"
                }
            };
            let (expr, condition, values) = if ban {
                (
                    "DELETE #members :u, #pending :u ADD #banned :u",
                    format!(
                        "({still}) AND (contains(#banned, :uid) OR attribute_not_exists(#banned) \
                         OR size(#banned) < :maxbans)"
                    ),
                    vec![(":maxbans", n(max_bans as u64))],
                )
            } else {
                (
                    "DELETE #members :u, #pending :u",
                    still.to_owned(),
                    Vec::new(),
                )
            };
            let change = self.change_membership(
                room,
                user,
                (expr, &condition),
                values,
                "DELETE #memberRooms :r, #pendingRooms :r",
            );
            match change.await? {
                Outcome::Done => return Ok(m.state),
                Outcome::ConditionFailed(_) => {}
            }
        }
        Err(still_conflicting())
    }

    /// `DELETE bannedUsers :u` on the room item, returning the old set to tell whether the user
    /// was in it.
    async fn unban(&self, room: &ChatRoomId, user: &UserId) -> Result<bool, ChatStoreError> {
        let u = self.room_update(
            room,
            "DELETE #banned :u",
            "attribute_exists(#t)",
            vec![(":u", ss(user.as_str()))],
        )?;
        match self.update_one(u, ReturnValue::UpdatedOld).await {
            Ok(out) => Ok(out
                .attributes
                .as_ref()
                .and_then(|a| a.get(&self.schema().room_banned_attr))
                .and_then(|v| v.as_ss().ok())
                .is_some_and(|set| set.iter().any(|b| b == user.as_str()))),
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Err(ChatStoreError::NoSuchRoom)
            }
            Err(e) => Err(failed("dynamodb:UpdateItem")(e)),
        }
    }

    /// The room's counter item hands out the next sequence number (`ADD lastSeq 1`, which
    /// fails for a room never created), the message is put under it, and the message that
    /// fell out of the retention window is deleted.
    async fn append_message(
        &self,
        room: &ChatRoomId,
        message: &ChatMessage,
    ) -> Result<(), ChatStoreError> {
        let table = &self.tables.messages_table;
        let counter = Update::builder()
            .table_name(table)
            .key(attr::ROOM_ID, s(room.as_str()))
            .key(attr::SEQ, n(0))
            .update_expression("ADD #last :one")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#last", attr::LAST_SEQ)
            .expression_attribute_names("#id", attr::ROOM_ID)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(build_failed)?;
        let seq = match self.update_one(counter, ReturnValue::UpdatedNew).await {
            Ok(out) => out
                .attributes
                .as_ref()
                .and_then(|a| get_num(a, attr::LAST_SEQ))
                .ok_or_else(|| corrupt(format!("room {room}: message counter not returned")))?,
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                return Err(ChatStoreError::NoSuchRoom)
            }
            Err(e) => return Err(failed("dynamodb:UpdateItem")(e)),
        };
        self.client
            .put_item()
            .table_name(table)
            .item(attr::ROOM_ID, s(room.as_str()))
            .item(attr::SEQ, n(seq))
            .item(attr::AUTHOR, s(&message.user_id))
            .item(attr::AUTHOR_NAME, s(&message.name))
            .item(attr::TEXT, s(&message.text))
            .item(attr::AT, n(message.at))
            .send()
            .await
            .map_err(failed("dynamodb:PutItem"))?;
        if seq > self.retention {
            let res = self
                .client
                .delete_item()
                .table_name(table)
                .key(attr::ROOM_ID, s(room.as_str()))
                .key(attr::SEQ, n(seq - self.retention))
                .send()
                .await;
            if let Err(e) = res {
                // The message is stored; an old one kept too long is only a little space.
                warn!(chat_room_id = %room, error = %sdk_failure("dynamodb:DeleteItem", &e).message, "could not delete a message beyond the retention");
            }
        }
        Ok(())
    }

    /// One `Query` on the room's messages older than `before`, newest first
    /// (`ScanIndexForward = false`) with `Limit`, consistent, then put oldest first. (A second
    /// page is read only if DynamoDB stops at its 1 MB page size, which `limit` messages of
    /// at most 2 000 characters never reach.)
    async fn message_page(
        &self,
        room: &ChatRoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ChatStoreError> {
        let mut out = Vec::new();
        let mut start = None;
        let (condition, bound) = match before {
            Some(b) => (
                "#r = :r AND #seq BETWEEN :first AND :last",
                b.saturating_sub(1),
            ),
            None => ("#r = :r AND #seq >= :first", u64::MAX),
        };
        if bound == 0 {
            return Ok(out);
        }
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let mut q = self
                .client
                .query()
                .table_name(&self.tables.messages_table)
                .consistent_read(true)
                .key_condition_expression(condition)
                .expression_attribute_names("#r", attr::ROOM_ID)
                .expression_attribute_names("#seq", attr::SEQ)
                .expression_attribute_values(":r", s(room.as_str()))
                .expression_attribute_values(":first", n(1));
            if before.is_some() {
                q = q.expression_attribute_values(":last", n(bound));
            }
            let page = q
                .scan_index_forward(false)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(failed("dynamodb:Query"))?;
            for item in page.items.unwrap_or_default() {
                let field = |name: &str| {
                    get_str(&item, name)
                        .map(str::to_owned)
                        .ok_or_else(|| corrupt(format!("message in {room} without {name}")))
                };
                out.push(StoredMessage {
                    seq: get_num(&item, attr::SEQ).ok_or_else(|| {
                        corrupt(format!("message in {room} without {}", attr::SEQ))
                    })?,
                    message: ChatMessage {
                        room_id: room.to_string(),
                        user_id: field(attr::AUTHOR)?,
                        name: field(attr::AUTHOR_NAME)?,
                        text: field(attr::TEXT)?,
                        at: get_num(&item, attr::AT).ok_or_else(|| {
                            corrupt(format!("message in {room} without {}", attr::AT))
                        })?,
                    },
                });
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }

    /// One consistent `Scan` page of the rooms table (`Limit` = `limit`, from
    /// `ExclusiveStartKey` = the position, which is the room-table key the previous page
    /// stopped at), room items kept by a filter, each with its member count and the viewer's
    /// state read from the item itself. The order is DynamoDB's scan order (stable, not by
    /// creation). `Limit` counts items evaluated before the filter, name items included, so a
    /// page may hold fewer rooms than `limit` (even none) while more follow.
    /// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Scan.html#Scan.Limit>
    async fn room_page(
        &self,
        viewer: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoomSummary>, ChatStoreError> {
        let sc = self.schema();
        let start = match after {
            None => None,
            Some(a) if a.is_empty() || a.len() > 1024 => return Err(ChatStoreError::BadCursor),
            Some(a) => Some(Item::from([(sc.room_id_attr.clone(), s(a))])),
        };
        let page = self
            .client
            .scan()
            .table_name(&sc.rooms_table)
            .consistent_read(true)
            .filter_expression("#t = :roomtype")
            .expression_attribute_names("#t", attr::ITEM_TYPE)
            .expression_attribute_values(":roomtype", s(TYPE_ROOM))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(failed("dynamodb:Scan"))?;
        let mut items = Vec::new();
        for item in page.items.unwrap_or_default() {
            let record = self.record_of(&item)?;
            let parsed = self.parse_room(&record.id, &item)?;
            let mut approved: BTreeSet<&String> = parsed.members.iter().collect();
            approved.extend(&parsed.admin);
            items.push(RoomSummary {
                member_count: approved.len(),
                my_state: parsed.membership_of(viewer.as_str()).state,
                record,
            });
        }
        let next = page
            .last_evaluated_key
            .as_ref()
            .and_then(|k| get_str(k, &sc.room_id_attr))
            .map(str::to_owned);
        Ok(Page { items, next })
    }

    /// The room item (one consistent `GetItem`), then the page's users in one consistent
    /// `BatchGetItem` (names and connections): two reads per page, never one per member.
    async fn member_page(
        &self,
        room: &ChatRoomId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Page<MemberEntry>, ChatStoreError> {
        let Some(item) = self.room_item(room).await? else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let r = self.parse_room(room, &item)?;
        let mut everyone: BTreeSet<&String> = r.members.iter().chain(&r.pending).collect();
        everyone.extend(&r.admin);
        let limit = limit.clamp(1, BATCH_GET_KEYS);
        let mut rest = everyone
            .into_iter()
            .filter(|u| after.is_none_or(|a| u.as_str() > a.as_str()));
        let ids: Vec<String> = rest.by_ref().take(limit).cloned().collect();
        let more = rest.next().is_some();
        let users: HashMap<String, Item> = self
            .batch_get_users(&ids)
            .await?
            .into_iter()
            .filter_map(|i| {
                get_str(&i, attr::USER_ID)
                    .map(str::to_owned)
                    .map(|u| (u, i))
            })
            .collect();
        let mut items = Vec::with_capacity(ids.len());
        for id in &ids {
            let user_item = users.get(id);
            items.push(MemberEntry {
                user: parse(id, "member id")?,
                state: r.membership_of(id).state,
                name: user_item.and_then(|i| get_str(i, attr::NAME).map(str::to_owned)),
                online: user_item.is_some_and(|i| !live_connections(i).0.is_empty()),
            });
        }
        let next = ids.last().filter(|_| more).cloned();
        Ok(Page { items, next })
    }
}

/// Voice's view of this chat: `user_of` and `membership` are [`DynamoDirectory`]'s answers on
/// the same tables; `connections_of` reads the members' user items instead of scanning the
/// connections table (consistent, and one read per 100 members).
#[async_trait]
impl ChatDirectory for DynamoChat {
    async fn user_of(&self, connection: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        self.directory.user_of(connection).await
    }

    async fn membership(
        &self,
        chat_room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        if chat_room.as_str().starts_with(NAME_PREFIX) {
            return Ok(None);
        }
        self.directory.membership(chat_room, user).await
    }

    async fn connections_of(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Vec<ConnectionId>, DirectoryError> {
        self.room_connections(chat_room).await.map_err(to_directory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keyed_without_case() {
        assert_eq!(name_key("Team ÄB"), name_key("team äb"));
        assert!(name_key("x").starts_with(NAME_PREFIX));
    }

    #[test]
    fn expired_connections_are_not_live() {
        let now = now_secs();
        let item = Item::from([(
            attr::CONNECTIONS.to_owned(),
            AttributeValue::M(HashMap::from([
                ("live=".to_owned(), n(now + 60)),
                ("old=".to_owned(), n(now.saturating_sub(1))),
            ])),
        )]);
        let (live, expired) = live_connections(&item);
        assert_eq!(live, vec![ConnectionId::parse("live=").unwrap()]);
        assert_eq!(expired.len(), 1);
        assert_eq!(live_connections(&Item::new()).0, vec![]);
    }

    #[test]
    fn user_updates_name_only_what_they_use() {
        assert_eq!(
            user_names("ADD #adminRooms :r, #memberRooms :r"),
            vec![
                ("#adminRooms", attr::ADMIN_ROOMS),
                ("#memberRooms", attr::MEMBER_ROOMS)
            ]
        );
        assert!(user_names("").is_empty());
    }
}
