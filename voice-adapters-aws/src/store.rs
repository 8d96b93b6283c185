//! [`VoiceRoomStore`] on DynamoDB (table `VOICE_ROOMS_TABLE`, partition key `voiceRoomId`).
//!
//! Two kinds of item share the table (`itemType` tells them apart):
//! - a **room** item per voice room, keyed by its id, holding its whole state, a `version`
//!   number for compare-and-set, and the original design's fields (`chatRoomId`,
//!   `masterUserId`, `activeParticipants`, `status`, `signalingChannelARN`);
//! - a **lock** item per chat room with an active voice room, keyed `lock#chat#<chatRoomId>`,
//!   naming that room in `activeVoiceRoomId`.
//!
//! Why a lock item: "at most one active voice room per chat room" must hold when two members
//! press Start at the same moment. DynamoDB has no unique secondary index, so the room item and
//! the lock item are written in one `TransactWriteItems` with `attribute_not_exists` on the
//! lock; whoever loses is told the winner's id. Ending a room deletes the lock in the same
//! transaction as the room's final write, so the chat room is free exactly when the room is
//! ended. The layout is described attribute by attribute in `docs/aws-adapters.md`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use tracing::{error, warn};
use voice_domain::ports::{PortFailure, StoreError, VoiceRoomStore};
use voice_domain::room::{CorruptRoom, EndReason, Participant, RoomStatus, VoiceRoomParts};
use voice_domain::screen::{ScreenShare, ScreenSharePolicy};
use voice_domain::{
    Capacity, ChannelArn, ChannelName, ChatRoomId, ConnectionId, SignalingChannel, Timestamp,
    UserId, VoiceRoom, VoiceRoomId,
};

use crate::errors::sdk_failure;

/// Attribute names of the voice-rooms table. Only this module knows them (architecture
/// invariant: only voice-adapters-aws knows DynamoDB attribute names).
pub mod attr {
    /// Partition key (S): the room id, or `lock#chat#<chatRoomId>` for a lock item.
    pub const ID: &str = "voiceRoomId";
    /// (S) `voiceRoom` or `chatLock`.
    pub const ITEM_TYPE: &str = "itemType";
    /// (S) The chat room.
    pub const CHAT_ROOM: &str = "chatRoomId";
    /// (S) `active` | `ended`.
    pub const STATUS: &str = "status";
    /// (S) The current master.
    pub const MASTER: &str = "masterUserId";
    /// (L of S) Participant user ids in join order (the original's field).
    pub const ACTIVE_PARTICIPANTS: &str = "activeParticipants";
    /// (M user id → S channel ARN) One channel per participant (the original had one ARN).
    pub const CHANNEL_ARNS: &str = "signalingChannelARN";
    /// (L of M) Participants in join order: `userId`, `connectionId`, `channelName`,
    /// `channelArn` (S), `joinedAt` (N, ms), `muted` (BOOL), and `reconnectingSince` (N, ms)
    /// while its connection is gone and it may resume (absent while connected, and in items
    /// written before resume existed, which therefore read as connected), and `lastSeen` (N, ms)
    /// once a keepalive of its connection was recorded (liveness; absent before, and in items
    /// written before liveness existed, which therefore read as heard at the join).
    pub const PARTICIPANTS: &str = "participants";
    /// (N) Max participants.
    pub const CAPACITY: &str = "capacity";
    /// (N) Compare-and-set version.
    pub const VERSION: &str = "version";
    /// (N, ms since epoch) Start time.
    pub const CREATED_AT: &str = "createdAt";
    /// (N, ms since epoch) End time, once ended.
    pub const ENDED_AT: &str = "endedAt";
    /// (S) `endedByMaster` | `endedByAdmin` | `lastParticipantLeft` | `abandoned`, once ended.
    pub const END_REASON: &str = "endReason";
    /// (S) Who ended it, for the two "ended by" reasons.
    pub const ENDED_BY: &str = "endedBy";
    /// (L of S) Users a moderator muted (sorted); absent when nobody is, and in items written
    /// before server mute existed.
    pub const SERVER_MUTED: &str = "serverMuted";
    /// (SS) Participants' connection ids, for `active_with_connection`; absent when empty.
    pub const CONNECTION_IDS: &str = "connectionIds";
    /// (N, epoch seconds) DynamoDB TTL attribute, set when the room ends.
    pub const EXPIRES_AT: &str = "expiresAt";
    /// (S) On a lock item: the chat room's active voice room.
    pub const LOCK_HOLDER: &str = "activeVoiceRoomId";
    /// (S, JSON) The running recording, or the last one once stopped: `{"id", "by",
    /// "startedAt", "stopped": {"at", "reason": {"kind", ...}}}` (the domain's serde shape).
    /// Absent when the room was never recorded.
    pub const RECORDING: &str = "recording";
    /// (S) Who may share a screen: `hosts`; absent means `anyone` (also in items written
    /// before screen sharing was a rule of the domain).
    pub const SCREEN_SHARE_POLICY: &str = "screenSharePolicy";
    /// (M) The running screen share: `{"by": S user id, "since": N ms since epoch}`; absent
    /// when nobody shares.
    pub const SCREEN_SHARE: &str = "screenShare";
}

/// `itemType` of a room item.
const TYPE_ROOM: &str = "voiceRoom";
/// `itemType` of a lock item.
const TYPE_LOCK: &str = "chatLock";
/// Key prefix of lock items. Room ids never start with it (refused on create).
pub const LOCK_PREFIX: &str = "lock#chat#";
/// How long an ended room stays before DynamoDB's TTL removes it, unless configured otherwise.
pub const DEFAULT_ENDED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts at a transaction that DynamoDB cancels because another transaction touched the same
/// item at the same moment (`TransactionConflict`), or whose lock vanished between the failed
/// write and the read of the winner.
pub(crate) const TRANSACTION_ATTEMPTS: u32 = 8;

/// BatchGetItem's limit on keys per call.
const BATCH_GET_KEYS: usize = 100;

/// The key of the lock item of a chat room.
pub fn lock_key(chat_room: &ChatRoomId) -> String {
    format!("{LOCK_PREFIX}{chat_room}")
}

/// Voice rooms in DynamoDB. Cheap to clone (the SDK client is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    ended_retention: Duration,
}

impl DynamoStore {
    /// A store on `table` (`VOICE_ROOMS_TABLE`), through a client built once at start-up.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            ended_retention: DEFAULT_ENDED_RETENTION,
        }
    }

    /// How long ended rooms are kept before TTL deletes them (default seven days).
    pub fn with_ended_retention(mut self, retention: Duration) -> Self {
        self.ended_retention = retention;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A strongly consistent read of one item: compare-and-set needs the latest version.
    async fn get_item(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ID, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_failure("dynamodb:GetItem", &e)))?;
        Ok(out.item)
    }

    /// Who holds the lock of `chat_room`, read consistently.
    async fn lock_holder(&self, chat_room: &ChatRoomId) -> Result<Option<VoiceRoomId>, StoreError> {
        match self.get_item(&lock_key(chat_room)).await? {
            Some(item) => holder_of(&item).map(Some),
            None => Ok(None),
        }
    }

    /// The lock holders of `chat_rooms` (at most [`BATCH_GET_KEYS`]) in one consistent
    /// `BatchGetItem`, unprocessed keys asked again after a backoff (DynamoDB returns them when
    /// throttled), [`TRANSACTION_ATTEMPTS`] calls at most: the answer is whole or an error.
    async fn batch_lock_holders(
        &self,
        chat_rooms: &[ChatRoomId],
        out: &mut HashMap<ChatRoomId, VoiceRoomId>,
    ) -> Result<(), StoreError> {
        let keys: Vec<Item> = chat_rooms
            .iter()
            .map(|c| Item::from([(attr::ID.to_owned(), s(&lock_key(c)))]))
            .collect();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression("#id, #holder")
                .expression_attribute_names("#id", attr::ID)
                .expression_attribute_names("#holder", attr::LOCK_HOLDER)
                .build()
                .map_err(build_failure)?,
        );
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let Some(request) = pending.take() else {
                return Ok(());
            };
            let res = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_failure("dynamodb:BatchGetItem", &e)))?;
            for item in res
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                // The chat room from the key the lock is found under (what was asked for).
                let key = get_s(&item, attr::ID)?;
                let chat = key
                    .strip_prefix(LOCK_PREFIX)
                    .and_then(|c| ChatRoomId::parse(c).ok())
                    .ok_or_else(|| corrupt(format!("not a lock key: {key}")))?;
                out.insert(chat, holder_of(&item)?);
            }
            pending = res
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys.is_empty());
            if pending.is_some() {
                backoff(attempt).await;
            }
        }
        match pending {
            None => Ok(()),
            Some(_) => Err(StoreError::Unavailable(PortFailure::retryable(
                "dynamodb:BatchGetItem: keys still unprocessed (throttled)",
            ))),
        }
    }

    /// Every room item matching `filter` (on top of `itemType = voiceRoom`), page by page.
    /// A Scan: its cost grows with the table, which holds one item per room for the retention
    /// period; see `docs/aws-adapters.md`. Corrupt items are logged and skipped so that one bad
    /// item cannot stop the sweep or every disconnect.
    async fn scan_rooms(
        &self,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<VoiceRoom>, StoreError> {
        let mut rooms = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression(format!("#type = :room AND ({filter})"))
                .expression_attribute_names("#type", attr::ITEM_TYPE)
                .expression_attribute_names("#status", attr::STATUS)
                .expression_attribute_values(":room", s(TYPE_ROOM))
                .set_exclusive_start_key(start.take());
            if filter.contains("#conns") {
                req = req.expression_attribute_names("#conns", attr::CONNECTION_IDS);
            }
            for (k, v) in &values {
                req = req.expression_attribute_values(*k, v.clone());
            }
            let out = req
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_failure("dynamodb:Scan", &e)))?;
            for item in out.items.unwrap_or_default() {
                match room_from_item(&item) {
                    Ok(room) => rooms.push(room),
                    Err(e) => error!(
                        table = %self.table,
                        voice_room_id = item.get(attr::ID).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("?"),
                        error = %e,
                        "skipping corrupt voice room item"
                    ),
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(rooms),
            }
        }
    }

    /// After a conditional write on a room failed: `NotFound` if there is no such room,
    /// `VersionConflict` if there is (someone else wrote a newer version).
    async fn conflict_or_not_found(&self, id: &VoiceRoomId) -> StoreError {
        match self.get_item(id.as_str()).await {
            Ok(Some(item)) if is_type(&item, TYPE_ROOM) => StoreError::VersionConflict,
            Ok(_) => StoreError::NotFound,
            Err(e) => e,
        }
    }

    /// The room `Put` of `update`: replaces the item only if it is a room at the version the
    /// caller read.
    fn cas_put(&self, room: &VoiceRoom, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("#type = :room AND #version = :expected")
            .expression_attribute_names("#type", attr::ITEM_TYPE)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":room", s(TYPE_ROOM))
            .expression_attribute_values(":expected", n(room.version().saturating_sub(1)))
            .build()
            .map_err(build_failure)
    }

    async fn put_only(&self, room: &VoiceRoom, put: Put) -> Result<(), StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se))
                if matches!(se.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Err(self.conflict_or_not_found(room.id()).await)
            }
            Err(e) => Err(StoreError::Unavailable(sdk_failure("dynamodb:PutItem", &e))),
        }
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Transaction> {
        transact(&self.client, items).await
    }
}

/// One `TransactWriteItems` call (shared with the chat store), its cancellation reasons kept.
pub(crate) async fn transact(
    client: &Client,
    items: Vec<TransactWriteItem>,
) -> Result<(), Transaction> {
    match client
        .transact_write_items()
        .set_transact_items(Some(items))
        // Idempotent: the SDK resends the same token when it retries this call (timeout,
        // 5xx), so a transaction that committed before its response was lost is not applied
        // twice nor reported as conflicting with its own lock (valid for 10 minutes).
        .client_request_token(uuid::Uuid::new_v4().to_string())
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(se)) => match se.err() {
            TransactWriteItemsError::TransactionCanceledException(c) => {
                Err(Transaction::Cancelled(c.cancellation_reasons().to_vec()))
            }
            _ => Err(Transaction::Failed(sdk_failure(
                "dynamodb:TransactWriteItems",
                &SdkError::ServiceError(se),
            ))),
        },
        Err(e) => Err(Transaction::Failed(sdk_failure(
            "dynamodb:TransactWriteItems",
            &e,
        ))),
    }
}

/// How a `TransactWriteItems` went wrong.
pub(crate) enum Transaction {
    /// DynamoDB cancelled it; one reason per item, in order (may be empty on a conflict).
    Cancelled(Vec<CancellationReason>),
    /// The call itself failed.
    Failed(PortFailure),
}

pub(crate) fn reason_code(reasons: &[CancellationReason], i: usize) -> Option<&str> {
    reasons.get(i).and_then(|r| r.code())
}

pub(crate) fn is_ccf(code: Option<&str>) -> bool {
    code == Some("ConditionalCheckFailed")
}

/// After a cancellation that no condition of ours caused: `Ok` if trying again may work (a
/// concurrent transaction on the same item, throttling), else the permanent failure naming the
/// reasons (an item too large, a validation error: trying again cannot help).
pub(crate) fn retryable_cancellation(reasons: &[CancellationReason]) -> Result<(), StoreError> {
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(CancellationReason::code)
        .filter(|c| *c != "None")
        .collect();
    let transient = |c: &&str| {
        matches!(
            *c,
            "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
        )
    };
    if codes.iter().all(transient) {
        Ok(())
    } else {
        Err(StoreError::Unavailable(PortFailure::permanent(format!(
            "dynamodb:TransactWriteItems cancelled: {}",
            codes.join(", ")
        ))))
    }
}

/// Short random pause between transaction attempts, so that retries of conflicting
/// transactions do not collide again in lock step.
pub(crate) async fn backoff(attempt: u32) {
    let jitter = u64::try_from(uuid::Uuid::new_v4().as_u128() % 20).unwrap_or(0);
    let ms = 10 * u64::from(attempt + 1) + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn build_failure(e: aws_smithy_types::error::operation::BuildError) -> StoreError {
    StoreError::Unavailable(PortFailure::permanent(format!(
        "could not build DynamoDB request: {e}"
    )))
}

#[async_trait]
impl VoiceRoomStore for DynamoStore {
    #[tracing::instrument(skip(self, room), fields(voice_room_id = %room.id(), chat_room_id = %room.chat_room()))]
    async fn create_if_none_active(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        if room.id().as_str().starts_with(LOCK_PREFIX) {
            warn!("refused a voice room id with the reserved lock prefix");
            return Err(StoreError::Unavailable(PortFailure::permanent(format!(
                "voice room ids must not start with {LOCK_PREFIX}"
            ))));
        }
        let item = room_to_item(room, self.ended_retention);
        let room_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .build()
            .map_err(build_failure)?;
        if !room.is_active() {
            // An ended room takes no lock (nothing calls this with one, but it is well defined).
            return self.put_only(room, room_put).await;
        }
        let lock_put = Put::builder()
            .table_name(&self.table)
            .item(attr::ID, s(&lock_key(room.chat_room())))
            .item(attr::ITEM_TYPE, s(TYPE_LOCK))
            .item(attr::CHAT_ROOM, s(room.chat_room().as_str()))
            .item(attr::LOCK_HOLDER, s(room.id().as_str()))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_failure)?;
        let items = vec![
            TransactWriteItem::builder().put(lock_put).build(),
            TransactWriteItem::builder().put(room_put).build(),
        ];
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let reasons = match self.transact(items.clone()).await {
                Ok(()) => return Ok(()),
                Err(Transaction::Failed(f)) => return Err(StoreError::Unavailable(f)),
                Err(Transaction::Cancelled(reasons)) => reasons,
            };
            if is_ccf(reason_code(&reasons, 0)) {
                let returned = reasons
                    .first()
                    .and_then(|r| r.item())
                    .map(holder_of)
                    .transpose()?;
                let holder = match returned {
                    Some(h) => Some(h),
                    None => self.lock_holder(room.chat_room()).await?,
                };
                match holder {
                    Some(existing) => return Err(StoreError::AlreadyActive { existing }),
                    // The winner ended between our write and our read: try again.
                    None => continue,
                }
            }
            if is_ccf(reason_code(&reasons, 1)) {
                // The room id is taken (ids are uuids, so this is a retried create).
                return Err(StoreError::VersionConflict);
            }
            retryable_cancellation(&reasons)?;
            backoff(attempt).await;
        }
        Err(StoreError::Unavailable(PortFailure::retryable(
            "dynamodb:TransactWriteItems: still conflicting with concurrent transactions",
        )))
    }

    async fn get(&self, id: &VoiceRoomId) -> Result<Option<VoiceRoom>, StoreError> {
        match self.get_item(id.as_str()).await? {
            Some(item) if is_type(&item, TYPE_ROOM) => Ok(Some(room_from_item(&item)?)),
            // Absent, or a lock item whose key someone passed as a room id.
            _ => Ok(None),
        }
    }

    async fn active_in_chat_room(
        &self,
        chat_room: &ChatRoomId,
    ) -> Result<Option<VoiceRoom>, StoreError> {
        let Some(holder) = self.lock_holder(chat_room).await? else {
            return Ok(None);
        };
        match self.get(&holder).await? {
            Some(room) if room.is_active() => Ok(Some(room)),
            _ => {
                warn!(chat_room_id = %chat_room, voice_room_id = %holder, "lock item names a room that is not active");
                Ok(None)
            }
        }
    }

    /// The lock items alone, in `BatchGetItem`s of 100: a lock exists exactly while its room
    /// is active (it is written and deleted in the same transaction as the room's first and
    /// final write), so unlike [`active_in_chat_room`](Self::active_in_chat_room) the rooms
    /// themselves are not read — a page of 50 chat rooms costs one call, not 100 `GetItem`s.
    async fn active_ids_in_chat_rooms(
        &self,
        chat_rooms: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, StoreError> {
        let mut unique: Vec<ChatRoomId> = chat_rooms.to_vec();
        unique.sort();
        unique.dedup(); // BatchGetItem refuses a request that names one key twice
        let mut out = HashMap::new();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            self.batch_lock_holders(chunk, &mut out).await?;
        }
        Ok(out)
    }

    async fn active_with_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<VoiceRoom>, StoreError> {
        self.scan_rooms(
            "#status = :active AND contains(#conns, :conn)",
            vec![(":active", s("active")), (":conn", s(connection.as_str()))],
        )
        .await
    }

    #[tracing::instrument(skip(self, room), fields(voice_room_id = %room.id(), version = room.version()))]
    async fn update(&self, room: &VoiceRoom) -> Result<(), StoreError> {
        if room.version() < 2 {
            // Version 1 is the created state; an update always follows a bump.
            return Err(self.conflict_or_not_found(room.id()).await);
        }
        let room_put = self.cas_put(room, room_to_item(room, self.ended_retention))?;
        if room.is_active() {
            return self.put_only(room, room_put).await;
        }
        let lock_delete = Delete::builder()
            .table_name(&self.table)
            .key(attr::ID, s(&lock_key(room.chat_room())))
            .condition_expression("attribute_not_exists(#id) OR #holder = :me")
            .expression_attribute_names("#id", attr::ID)
            .expression_attribute_names("#holder", attr::LOCK_HOLDER)
            .expression_attribute_values(":me", s(room.id().as_str()))
            .build()
            .map_err(build_failure)?;
        let items = vec![
            TransactWriteItem::builder().put(room_put.clone()).build(),
            TransactWriteItem::builder().delete(lock_delete).build(),
        ];
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let reasons = match self.transact(items.clone()).await {
                Ok(()) => return Ok(()),
                Err(Transaction::Failed(f)) => return Err(StoreError::Unavailable(f)),
                Err(Transaction::Cancelled(reasons)) => reasons,
            };
            if is_ccf(reason_code(&reasons, 0)) {
                return Err(self.conflict_or_not_found(room.id()).await);
            }
            if is_ccf(reason_code(&reasons, 1)) {
                // The lock names another room: it is not ours to release. End this room anyway.
                error!(chat_room_id = %room.chat_room(), "ending a room whose chat lock names another room");
                return self.put_only(room, room_put).await;
            }
            retryable_cancellation(&reasons)?;
            backoff(attempt).await;
        }
        Err(StoreError::Unavailable(PortFailure::retryable(
            "dynamodb:TransactWriteItems: still conflicting with concurrent transactions",
        )))
    }

    async fn list_active(&self) -> Result<Vec<VoiceRoom>, StoreError> {
        self.scan_rooms("#status = :active", vec![(":active", s("active"))])
            .await
    }
}

/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn is_type(item: &Item, t: &str) -> bool {
    item.get(attr::ITEM_TYPE)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        == Some(t)
}

fn holder_of(item: &Item) -> Result<VoiceRoomId, StoreError> {
    let raw = get_s(item, attr::LOCK_HOLDER)?;
    VoiceRoomId::parse(raw).map_err(|e| {
        StoreError::Corrupt(CorruptRoom(format!("lock item holds a bad room id: {e}")))
    })
}

/// The item that stores `room`. Pure, so that the layout is unit-tested without DynamoDB.
pub fn room_to_item(
    room: &VoiceRoom,
    ended_retention: Duration,
) -> HashMap<String, AttributeValue> {
    let p = room.parts();
    let mut item = Item::new();
    item.insert(attr::ID.into(), s(p.id.as_str()));
    item.insert(attr::ITEM_TYPE.into(), s(TYPE_ROOM));
    item.insert(attr::CHAT_ROOM.into(), s(p.chat_room.as_str()));
    item.insert(attr::MASTER.into(), s(p.master.as_str()));
    item.insert(attr::CAPACITY.into(), n(u64::from(p.capacity.get())));
    item.insert(attr::VERSION.into(), n(p.version));
    item.insert(attr::CREATED_AT.into(), n(p.created_at.as_millis()));
    item.insert(
        attr::ACTIVE_PARTICIPANTS.into(),
        AttributeValue::L(p.participants.iter().map(|x| s(x.user.as_str())).collect()),
    );
    item.insert(
        attr::CHANNEL_ARNS.into(),
        AttributeValue::M(
            p.participants
                .iter()
                .map(|x| (x.user.as_str().to_owned(), s(x.channel.arn.as_str())))
                .collect(),
        ),
    );
    item.insert(
        attr::PARTICIPANTS.into(),
        AttributeValue::L(
            p.participants
                .iter()
                .map(|x| {
                    let mut m = HashMap::from([
                        ("userId".to_owned(), s(x.user.as_str())),
                        ("connectionId".to_owned(), s(x.connection.as_str())),
                        ("channelName".to_owned(), s(x.channel.name.as_str())),
                        ("channelArn".to_owned(), s(x.channel.arn.as_str())),
                        ("joinedAt".to_owned(), n(x.joined_at.as_millis())),
                        ("muted".to_owned(), AttributeValue::Bool(x.muted)),
                    ]);
                    if let Some(t) = x.reconnecting_since {
                        m.insert("reconnectingSince".to_owned(), n(t.as_millis()));
                    }
                    if let Some(t) = x.last_seen {
                        m.insert("lastSeen".to_owned(), n(t.as_millis()));
                    }
                    AttributeValue::M(m)
                })
                .collect(),
        ),
    );
    if !p.server_muted.is_empty() {
        item.insert(
            attr::SERVER_MUTED.into(),
            AttributeValue::L(p.server_muted.iter().map(|u| s(u.as_str())).collect()),
        );
    }
    if !p.participants.is_empty() {
        let mut conns: Vec<String> = p
            .participants
            .iter()
            .map(|x| x.connection.as_str().to_owned())
            .collect();
        conns.sort();
        conns.dedup();
        item.insert(attr::CONNECTION_IDS.into(), AttributeValue::Ss(conns));
    }
    if let Some(rec) = &p.recording {
        // The domain's own shape: always serialises (ids, numbers, an enum).
        if let Ok(json) = serde_json::to_string(rec) {
            item.insert(attr::RECORDING.into(), s(&json));
        }
    }
    if p.screen_share_policy != ScreenSharePolicy::Anyone {
        item.insert(
            attr::SCREEN_SHARE_POLICY.into(),
            s(p.screen_share_policy.as_str()),
        );
    }
    if let Some(share) = &p.screen_share {
        item.insert(
            attr::SCREEN_SHARE.into(),
            AttributeValue::M(HashMap::from([
                ("by".to_owned(), s(share.by.as_str())),
                ("since".to_owned(), n(share.since.as_millis())),
            ])),
        );
    }
    match &p.status {
        RoomStatus::Active => {
            item.insert(attr::STATUS.into(), s("active"));
        }
        RoomStatus::Ended { at, reason } => {
            item.insert(attr::STATUS.into(), s("ended"));
            item.insert(attr::ENDED_AT.into(), n(at.as_millis()));
            let (kind, by) = match reason {
                EndReason::EndedByMaster { by } => ("endedByMaster", Some(by)),
                EndReason::EndedByAdmin { by } => ("endedByAdmin", Some(by)),
                EndReason::LastParticipantLeft => ("lastParticipantLeft", None),
                EndReason::Abandoned => ("abandoned", None),
            };
            item.insert(attr::END_REASON.into(), s(kind));
            if let Some(by) = by {
                item.insert(attr::ENDED_BY.into(), s(by.as_str()));
            }
            item.insert(
                attr::EXPIRES_AT.into(),
                n(at.plus(ended_retention).as_secs()),
            );
        }
    }
    item
}

fn corrupt(msg: impl Into<String>) -> StoreError {
    StoreError::Corrupt(CorruptRoom(msg.into()))
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .ok_or_else(|| corrupt(format!("attribute {name} is missing")))?
        .as_s()
        .map(String::as_str)
        .map_err(|_| corrupt(format!("attribute {name} is not a string")))
}

fn get_n(item: &Item, name: &str) -> Result<u64, StoreError> {
    item.get(name)
        .ok_or_else(|| corrupt(format!("attribute {name} is missing")))?
        .as_n()
        .map_err(|_| corrupt(format!("attribute {name} is not a number")))?
        .parse()
        .map_err(|_| corrupt(format!("attribute {name} is not a whole number")))
}

fn parse_id<'a, T, E: std::fmt::Display>(
    name: &str,
    raw: &'a str,
    parse: impl FnOnce(&'a str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(raw).map_err(|e| corrupt(format!("attribute {name}: {e}")))
}

/// Rebuilds a room from its item, checking every invariant through
/// [`VoiceRoom::from_parts`].
///
/// # Errors
/// [`StoreError::Corrupt`] naming the first missing or malformed attribute or broken invariant.
pub fn room_from_item(item: &HashMap<String, AttributeValue>) -> Result<VoiceRoom, StoreError> {
    if !is_type(item, TYPE_ROOM) {
        return Err(corrupt("not a voice room item"));
    }
    let id = parse_id(attr::ID, get_s(item, attr::ID)?, VoiceRoomId::parse)?;
    let chat_room = parse_id(
        attr::CHAT_ROOM,
        get_s(item, attr::CHAT_ROOM)?,
        ChatRoomId::parse,
    )?;
    let master = parse_id(attr::MASTER, get_s(item, attr::MASTER)?, UserId::parse)?;
    let capacity = u8::try_from(get_n(item, attr::CAPACITY)?)
        .ok()
        .and_then(|c| Capacity::new(c).ok())
        .ok_or_else(|| corrupt("attribute capacity is out of range"))?;
    let version = get_n(item, attr::VERSION)?;
    let created_at = Timestamp::from_millis(get_n(item, attr::CREATED_AT)?);
    let status = match get_s(item, attr::STATUS)? {
        "active" => RoomStatus::Active,
        "ended" => {
            let at = Timestamp::from_millis(get_n(item, attr::ENDED_AT)?);
            let by = || -> Result<UserId, StoreError> {
                parse_id(attr::ENDED_BY, get_s(item, attr::ENDED_BY)?, UserId::parse)
            };
            let reason = match get_s(item, attr::END_REASON)? {
                "endedByMaster" => EndReason::EndedByMaster { by: by()? },
                "endedByAdmin" => EndReason::EndedByAdmin { by: by()? },
                "lastParticipantLeft" => EndReason::LastParticipantLeft,
                "abandoned" => EndReason::Abandoned,
                other => return Err(corrupt(format!("unknown end reason {other:?}"))),
            };
            RoomStatus::Ended { at, reason }
        }
        other => return Err(corrupt(format!("unknown status {other:?}"))),
    };
    let list = item
        .get(attr::PARTICIPANTS)
        .ok_or_else(|| corrupt("attribute participants is missing"))?
        .as_l()
        .map_err(|_| corrupt("attribute participants is not a list"))?;
    let mut participants = Vec::with_capacity(list.len());
    for entry in list {
        let m = entry
            .as_m()
            .map_err(|_| corrupt("a participant is not a map"))?;
        participants.push(Participant {
            user: parse_id("participants.userId", get_s(m, "userId")?, UserId::parse)?,
            connection: parse_id(
                "participants.connectionId",
                get_s(m, "connectionId")?,
                ConnectionId::parse,
            )?,
            channel: SignalingChannel {
                name: parse_id(
                    "participants.channelName",
                    get_s(m, "channelName")?,
                    ChannelName::parse,
                )?,
                arn: parse_id(
                    "participants.channelArn",
                    get_s(m, "channelArn")?,
                    ChannelArn::parse,
                )?,
            },
            joined_at: Timestamp::from_millis(get_n(m, "joinedAt")?),
            muted: *m
                .get("muted")
                .ok_or_else(|| corrupt("participants.muted is missing"))?
                .as_bool()
                .map_err(|_| corrupt("participants.muted is not a boolean"))?,
            reconnecting_since: match m.get("reconnectingSince") {
                None => None,
                Some(_) => Some(Timestamp::from_millis(get_n(m, "reconnectingSince")?)),
            },
            last_seen: match m.get("lastSeen") {
                None => None,
                Some(_) => Some(Timestamp::from_millis(get_n(m, "lastSeen")?)),
            },
        });
    }
    let server_muted = match item.get(attr::SERVER_MUTED) {
        None => Vec::new(),
        Some(v) => v
            .as_l()
            .map_err(|_| corrupt("attribute serverMuted is not a list"))?
            .iter()
            .map(|u| {
                let u = u
                    .as_s()
                    .map_err(|_| corrupt("serverMuted holds a non-string"))?;
                parse_id(attr::SERVER_MUTED, u, UserId::parse)
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let recording = match item.get(attr::RECORDING) {
        None => None,
        Some(_) => Some(
            serde_json::from_str(get_s(item, attr::RECORDING)?)
                .map_err(|e| corrupt(format!("attribute recording: {e}")))?,
        ),
    };
    let screen_share_policy = match item.get(attr::SCREEN_SHARE_POLICY) {
        None => ScreenSharePolicy::Anyone,
        Some(_) => match get_s(item, attr::SCREEN_SHARE_POLICY)? {
            "anyone" => ScreenSharePolicy::Anyone,
            "hosts" => ScreenSharePolicy::Hosts,
            _ => {
                return Err(corrupt(
                    "attribute screenSharePolicy is not anyone or hosts",
                ))
            }
        },
    };
    let screen_share = match item.get(attr::SCREEN_SHARE) {
        None => None,
        Some(v) => {
            let m = v
                .as_m()
                .map_err(|_| corrupt("attribute screenShare is not a map"))?;
            Some(ScreenShare {
                by: parse_id("screenShare.by", get_s(m, "by")?, UserId::parse)?,
                since: Timestamp::from_millis(get_n(m, "since")?),
            })
        }
    };
    Ok(VoiceRoom::from_parts(VoiceRoomParts {
        id,
        chat_room,
        master,
        status,
        participants,
        capacity,
        version,
        created_at,
        server_muted,
        recording,
        screen_share_policy,
        screen_share,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(n: u32) -> SignalingChannel {
        SignalingChannel {
            name: ChannelName::from_unique(&format!("c{n}")).unwrap(),
            arn: ChannelArn::parse(format!(
                "arn:aws:kinesisvideo:us-east-1:1:channel/voice-c{n}/1"
            ))
            .unwrap(),
        }
    }

    fn room() -> VoiceRoom {
        let (mut room, _) = VoiceRoom::start(
            VoiceRoomId::parse("vr-1").unwrap(),
            ChatRoomId::parse("chat-1").unwrap(),
            UserId::parse("alice").unwrap(),
            ConnectionId::parse("conn=A").unwrap(),
            channel(1),
            Capacity::new(4).unwrap(),
            Timestamp::from_millis(1_700_000_000_000),
        );
        room.join(
            UserId::parse("bob").unwrap(),
            ConnectionId::parse("conn=B").unwrap(),
            channel(2),
            Timestamp::from_millis(1_700_000_001_000),
        )
        .unwrap();
        room.set_muted(&UserId::parse("bob").unwrap(), true)
            .unwrap();
        room
    }

    #[test]
    fn active_room_round_trips_and_keeps_the_original_fields() {
        let room = room();
        let item = room_to_item(&room, DEFAULT_ENDED_RETENTION);
        assert_eq!(room_from_item(&item).unwrap(), room);
        assert_eq!(item[attr::STATUS].as_s().unwrap(), "active");
        assert_eq!(item[attr::MASTER].as_s().unwrap(), "alice");
        assert_eq!(
            item[attr::ACTIVE_PARTICIPANTS].as_l().unwrap(),
            &vec![s("alice"), s("bob")]
        );
        assert_eq!(
            item[attr::CHANNEL_ARNS].as_m().unwrap()["bob"]
                .as_s()
                .unwrap(),
            "arn:aws:kinesisvideo:us-east-1:1:channel/voice-c2/1"
        );
        assert_eq!(
            item[attr::CONNECTION_IDS].as_ss().unwrap(),
            &vec!["conn=A".to_owned(), "conn=B".to_owned()]
        );
        assert!(!item.contains_key(attr::EXPIRES_AT));
    }

    #[test]
    fn last_seen_round_trips_and_items_without_it_read_as_heard_at_the_join() {
        let mut room = room();
        let b = ConnectionId::parse("conn=B").unwrap();
        assert!(room
            .touch(&b, Timestamp::from_millis(1_700_000_060_000))
            .is_some());
        let mut item = room_to_item(&room, DEFAULT_ENDED_RETENTION);
        assert_eq!(room_from_item(&item).unwrap(), room);
        let parts = item[attr::PARTICIPANTS].as_l().unwrap().clone();
        assert!(!parts[0].as_m().unwrap().contains_key("lastSeen"));
        assert_eq!(
            parts[1].as_m().unwrap()["lastSeen"].as_n().unwrap(),
            "1700000060000"
        );
        let mut list = parts;
        if let AttributeValue::M(m) = &mut list[1] {
            m.remove("lastSeen");
        }
        item.insert(attr::PARTICIPANTS.into(), AttributeValue::L(list));
        let read = room_from_item(&item).unwrap();
        assert_eq!(read.participants()[1].last_seen, None);
    }

    #[test]
    fn reconnecting_state_round_trips_and_items_without_it_read_as_connected() {
        let mut room = room();
        room.mark_reconnecting(
            &ConnectionId::parse("conn=B").unwrap(),
            Timestamp::from_millis(1_700_000_002_000),
        )
        .unwrap()
        .unwrap();
        let mut item = room_to_item(&room, DEFAULT_ENDED_RETENTION);
        assert_eq!(room_from_item(&item).unwrap(), room);
        let parts = item[attr::PARTICIPANTS].as_l().unwrap();
        assert!(!parts[0].as_m().unwrap().contains_key("reconnectingSince"));
        assert_eq!(
            parts[1].as_m().unwrap()["reconnectingSince"]
                .as_n()
                .unwrap(),
            "1700000002000"
        );
        // The old connection stays in the connection set: a repeated $disconnect finds it.
        assert_eq!(
            item[attr::CONNECTION_IDS].as_ss().unwrap(),
            &vec!["conn=A".to_owned(), "conn=B".to_owned()]
        );
        // An item written before resume existed has no such attribute.
        let mut list = parts.clone();
        if let AttributeValue::M(m) = &mut list[1] {
            m.remove("reconnectingSince");
        }
        item.insert(attr::PARTICIPANTS.into(), AttributeValue::L(list));
        let read = room_from_item(&item).unwrap();
        assert!(read.participants().iter().all(|p| !p.is_reconnecting()));
        // A broken value is corrupt, not a panic.
        let mut list = item[attr::PARTICIPANTS].as_l().unwrap().clone();
        if let AttributeValue::M(m) = &mut list[1] {
            m.insert("reconnectingSince".into(), s("soon"));
        }
        item.insert(attr::PARTICIPANTS.into(), AttributeValue::L(list));
        assert!(room_from_item(&item).is_err());
    }

    #[test]
    fn the_recording_state_round_trips_running_and_stopped() {
        let mut room = room();
        let alice = UserId::parse("alice").unwrap();
        let id = voice_domain::recording::RecordingId::parse("rec-1").unwrap();
        room.start_recording(&alice, false, id, Timestamp::from_millis(1_700_000_003_000))
            .unwrap();
        let mut item = room_to_item(&room, DEFAULT_ENDED_RETENTION);
        assert_eq!(room_from_item(&item).unwrap(), room);
        room.end(&alice, false, Timestamp::from_millis(1_700_000_004_000))
            .unwrap();
        assert_eq!(
            room_from_item(&room_to_item(&room, DEFAULT_ENDED_RETENTION)).unwrap(),
            room
        );
        // A broken value is corrupt, not a panic.
        item.insert(attr::RECORDING.into(), s("{"));
        assert!(room_from_item(&item).is_err());
    }

    #[test]
    fn the_screen_share_and_its_policy_round_trip() {
        let mut room = room();
        let alice = UserId::parse("alice").unwrap();
        assert!(
            !room_to_item(&room, DEFAULT_ENDED_RETENTION).contains_key(attr::SCREEN_SHARE_POLICY)
        );
        room.set_screen_share_policy(&alice, false, ScreenSharePolicy::Hosts, false)
            .unwrap();
        room.start_screen_share(&alice, false, Timestamp::from_millis(1_700_000_003_000))
            .unwrap();
        let mut item = room_to_item(&room, DEFAULT_ENDED_RETENTION);
        assert_eq!(item[attr::SCREEN_SHARE_POLICY].as_s().unwrap(), "hosts");
        assert_eq!(room_from_item(&item).unwrap(), room);
        // Broken values are corrupt, not a panic.
        item.insert(attr::SCREEN_SHARE_POLICY.into(), s("everyone"));
        assert!(room_from_item(&item).is_err());
        let mut item = room_to_item(&room, DEFAULT_ENDED_RETENTION);
        item.insert(attr::SCREEN_SHARE.into(), s("alice"));
        assert!(room_from_item(&item).is_err());
    }

    #[test]
    fn ended_room_round_trips_with_ttl_and_no_connection_set() {
        let mut room = room();
        let end = Timestamp::from_millis(1_700_000_100_500);
        room.end(&UserId::parse("alice").unwrap(), false, end)
            .unwrap();
        let item = room_to_item(&room, Duration::from_secs(3600));
        assert_eq!(room_from_item(&item).unwrap(), room);
        assert_eq!(item[attr::EXPIRES_AT].as_n().unwrap(), "1700003700");
        assert_eq!(item[attr::END_REASON].as_s().unwrap(), "endedByMaster");
        assert!(!item.contains_key(attr::CONNECTION_IDS));
    }

    #[test]
    fn only_contention_cancellations_are_retried() {
        let reason = |c: &str| CancellationReason::builder().code(c).build();
        assert!(retryable_cancellation(&[reason("None"), reason("TransactionConflict")]).is_ok());
        assert!(retryable_cancellation(&[]).is_ok());
        match retryable_cancellation(&[reason("ValidationError"), reason("None")]) {
            Err(StoreError::Unavailable(f)) => {
                assert!(!f.retryable);
                assert!(f.message.contains("ValidationError"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_items_are_corrupt_not_panics() {
        let good = room_to_item(&room(), DEFAULT_ENDED_RETENTION);
        for name in [
            attr::VERSION,
            attr::PARTICIPANTS,
            attr::MASTER,
            attr::STATUS,
        ] {
            let mut item = good.clone();
            item.remove(name);
            assert!(
                matches!(room_from_item(&item), Err(StoreError::Corrupt(_))),
                "{name}"
            );
        }
        let mut item = good.clone();
        item.insert(attr::MASTER.into(), s("carol"));
        assert!(matches!(room_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = good.clone();
        item.insert(attr::CAPACITY.into(), n(11));
        assert!(matches!(room_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = good;
        item.insert(attr::ITEM_TYPE.into(), s(TYPE_LOCK));
        assert!(matches!(room_from_item(&item), Err(StoreError::Corrupt(_))));
    }
}
