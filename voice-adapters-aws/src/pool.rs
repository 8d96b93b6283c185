//! [`ChannelPool`] on DynamoDB (table `CHANNEL_POOL_TABLE`, partition key `channelArn`): the
//! KVS signaling channels this stack keeps for reuse, one item each.
//!
//! A free channel carries `freeKey = "free"` and its `freeFrom`; those two are the key of the
//! sparse index [`FREE_INDEX`], which therefore lists only free channels, ordered by the end of
//! their quarantine. A claim queries it for channels with `freeFrom <= now`, newest first (so
//! surplus channels go idle and the sweep deletes them), and takes one with an `UpdateItem`
//! whose condition re-checks, at write time, that the channel is still free and out of
//! quarantine: two Lambdas that read the same candidate cannot both take it; the loser tries the
//! next one. A join splits the same two steps to overlap them with its other reads (issue 14):
//! `find` is the Query alone (the first candidate, nothing written), `claim_found` the
//! conditional `UpdateItem` of that one candidate, which fails as any lost race does when
//! another claim took it in between. The index is eventually consistent, which only means that a channel freed a moment
//! ago may be missed (a new channel is created instead), never that a held one is handed out.
//!
//! When a channel may be claimed (`freeFrom`) is the domain's decision
//! ([`LeasePolicy`](voice_domain::pool::LeasePolicy)); this adapter stores and compares it.
//! The layout is in `docs/aws-adapters.md`; `deploy/aws/template.yaml` creates the table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use tracing::warn;
use voice_domain::pool::{
    ChannelLease, ChannelPool, LeaseHolder, PoolError, PoolSlot, PooledChannel,
};
use voice_domain::ports::PortFailure;
use voice_domain::{ChannelArn, ChannelName, SignalingChannel, Timestamp, UserId, VoiceRoomId};

use crate::errors::sdk_failure;

/// Attribute names of the channel pool table (only this module knows them).
pub mod attr {
    /// Partition key (S): the channel's ARN.
    pub const ARN: &str = "channelArn";
    /// (S) The channel's name.
    pub const NAME: &str = "channelName";
    /// (S) `held` or `free`.
    pub const STATE: &str = "state";
    /// (S) While held: the holder's voice room (a release must name it).
    pub const HOLDER_ROOM: &str = "holderVoiceRoomId";
    /// (S) While held: the holder.
    pub const HOLDER_USER: &str = "holderUserId";
    /// (N, ms) While held: when it was claimed.
    pub const CLAIMED_AT: &str = "claimedAt";
    /// (N, ms) While free: when it was released.
    pub const RELEASED_AT: &str = "releasedAt";
    /// (N, ms) While free: the end of its quarantine; the free index's sort key.
    pub const FREE_FROM: &str = "freeFrom";
    /// (S) `free` while free, absent while held: the free index's partition key.
    pub const FREE_KEY: &str = "freeKey";
}

/// The sparse global secondary index of free channels (`freeKey` + `freeFrom`).
pub const FREE_INDEX: &str = "free-by-time";
/// How many candidates one query of the free index returns: enough that a few concurrent
/// claims each find one the others did not take.
const CANDIDATES: i32 = 8;
/// Queries of the free index a claim makes before it gives up (and a channel is created).
const CLAIM_ROUNDS: usize = 3;
/// The most items the sweep's listing reads: the pool holds about the peak number of
/// participants at once, far below this; a larger table is a sign of a leak, logged.
pub const LIST_MAX: usize = 20_000;

const HELD: &str = "held";
const FREE: &str = "free";

/// The channel pool in DynamoDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoPool {
    client: Client,
    table: String,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(t: Timestamp) -> AttributeValue {
    AttributeValue::N(t.as_millis().to_string())
}

fn unavailable(f: PortFailure) -> PoolError {
    PoolError::Unavailable(f)
}

impl DynamoPool {
    /// The pool in `table` (`CHANNEL_POOL_TABLE`), through a client built once at start-up.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Up to `limit` free channels out of quarantine at `now` (keys only), the most recently
    /// freed first: one Query of the free index.
    async fn free_candidates(
        &self,
        now: Timestamp,
        limit: i32,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, PoolError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(FREE_INDEX)
            .key_condition_expression("#freeKey = :free AND #freeFrom <= :now")
            .expression_attribute_names("#freeKey", attr::FREE_KEY)
            .expression_attribute_names("#freeFrom", attr::FREE_FROM)
            .expression_attribute_values(":free", s(FREE))
            .expression_attribute_values(":now", n(now))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(|e| unavailable(sdk_failure("dynamodb:Query", &e)))?;
        Ok(out.items.unwrap_or_default())
    }

    /// Takes `arn` if it is still free and out of quarantine at `now`; its old attributes, or
    /// `None` if someone else was first.
    async fn take(
        &self,
        arn: &str,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<HashMap<String, AttributeValue>>, PoolError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ARN, s(arn))
            .condition_expression("#state = :free AND #freeFrom <= :now")
            .update_expression(
                "SET #state = :held, #room = :room, #user = :user, #claimedAt = :now \
                 REMOVE #freeKey, #freeFrom, #releasedAt",
            )
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#freeFrom", attr::FREE_FROM)
            .expression_attribute_names("#freeKey", attr::FREE_KEY)
            .expression_attribute_names("#releasedAt", attr::RELEASED_AT)
            .expression_attribute_names("#room", attr::HOLDER_ROOM)
            .expression_attribute_names("#user", attr::HOLDER_USER)
            .expression_attribute_names("#claimedAt", attr::CLAIMED_AT)
            .expression_attribute_values(":free", s(FREE))
            .expression_attribute_values(":held", s(HELD))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":room", s(holder.voice_room.as_str()))
            .expression_attribute_values(":user", s(holder.user.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable(sdk_failure("dynamodb:UpdateItem", &e))),
        }
    }
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_t(item: &HashMap<String, AttributeValue>, key: &str) -> Option<Timestamp> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .map(Timestamp::from_millis)
}

/// The lease of a channel just taken by `holder` at `now`, from the item as it was before
/// (`old`, whose slot the service checks); `None` for an item this module did not write: never
/// hand out what it cannot read. It stays held (by nobody the sweep can read either); the log
/// names it.
fn lease_from(
    old: &HashMap<String, AttributeValue>,
    arn: &str,
    holder: &LeaseHolder,
    now: Timestamp,
) -> Option<(ChannelLease, PoolSlot)> {
    let (Some(channel), Some(was)) = (channel_of(old), slot_of(old)) else {
        warn!(
            channel_arn = arn,
            "pool item unreadable after claiming it; skipped"
        );
        return None;
    };
    Some((
        ChannelLease {
            channel,
            holder: holder.clone(),
            claimed_at: now,
        },
        was,
    ))
}

/// The channel an item names.
fn channel_of(item: &HashMap<String, AttributeValue>) -> Option<SignalingChannel> {
    Some(SignalingChannel {
        name: ChannelName::parse(get_s(item, attr::NAME)?).ok()?,
        arn: ChannelArn::parse(get_s(item, attr::ARN)?).ok()?,
    })
}

/// The slot an item describes; `None` for an item this module did not write.
fn slot_of(item: &HashMap<String, AttributeValue>) -> Option<PoolSlot> {
    match get_s(item, attr::STATE)? {
        HELD => Some(PoolSlot::Held {
            holder: LeaseHolder {
                voice_room: VoiceRoomId::parse(get_s(item, attr::HOLDER_ROOM)?).ok()?,
                user: UserId::parse(get_s(item, attr::HOLDER_USER)?).ok()?,
            },
            claimed_at: get_t(item, attr::CLAIMED_AT)?,
        }),
        FREE => Some(PoolSlot::Free {
            released_at: get_t(item, attr::RELEASED_AT)?,
            free_from: get_t(item, attr::FREE_FROM)?,
        }),
        _ => None,
    }
}

#[async_trait]
impl ChannelPool for DynamoPool {
    fn is_pooling(&self) -> bool {
        true
    }

    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        for _ in 0..CLAIM_ROUNDS {
            let candidates = self.free_candidates(now, CANDIDATES).await?;
            if candidates.is_empty() {
                return Ok(None);
            }
            for candidate in candidates {
                let Some(arn) = get_s(&candidate, attr::ARN) else {
                    continue;
                };
                let Some(old) = self.take(arn, holder, now).await? else {
                    continue;
                };
                if let Some(claimed) = lease_from(&old, arn, holder, now) {
                    return Ok(Some(claimed));
                }
            }
        }
        // Every candidate was taken by concurrent claims: the caller creates a channel.
        Ok(None)
    }

    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        // The candidate `claim` would try first: one Query of the free index, nothing written.
        let out = self.free_candidates(now, 1).await?;
        Ok(out
            .iter()
            .find_map(|item| get_s(item, attr::ARN))
            .and_then(|arn| ChannelArn::parse(arn).ok()))
    }

    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        // One conditional UpdateItem: a channel another claim took since `find` (or one
        // evicted, or never pooled: the condition needs `state = free`) is not taken.
        let Some(old) = self.take(arn.as_str(), holder, now).await? else {
            return Ok(None);
        };
        Ok(lease_from(&old, arn.as_str(), holder, now))
    }

    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::ARN, s(lease.channel.arn.as_str()))
            .item(attr::NAME, s(lease.channel.name.as_str()))
            .item(attr::STATE, s(HELD))
            .item(attr::HOLDER_ROOM, s(lease.holder.voice_room.as_str()))
            .item(attr::HOLDER_USER, s(lease.holder.user.as_str()))
            .item(attr::CLAIMED_AT, n(lease.claimed_at))
            // New, or a retry of this very add (the same room holds it).
            .condition_expression("attribute_not_exists(#arn) OR #room = :room")
            .expression_attribute_names("#arn", attr::ARN)
            .expression_attribute_names("#room", attr::HOLDER_ROOM)
            .expression_attribute_values(":room", s(lease.holder.voice_room.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se))
                if matches!(se.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Err(unavailable(PortFailure::permanent(format!(
                    "channel {} is already pooled for another room",
                    lease.channel.name
                ))))
            }
            Err(e) => Err(unavailable(sdk_failure("dynamodb:PutItem", &e))),
        }
    }

    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ARN, s(channel.arn.as_str()))
            .condition_expression("#state = :held AND #room = :room")
            .update_expression(
                "SET #state = :free, #freeKey = :free, #freeFrom = :freeFrom, \
                 #releasedAt = :releasedAt REMOVE #room, #user, #claimedAt",
            )
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#freeKey", attr::FREE_KEY)
            .expression_attribute_names("#freeFrom", attr::FREE_FROM)
            .expression_attribute_names("#releasedAt", attr::RELEASED_AT)
            .expression_attribute_names("#room", attr::HOLDER_ROOM)
            .expression_attribute_names("#user", attr::HOLDER_USER)
            .expression_attribute_names("#claimedAt", attr::CLAIMED_AT)
            .expression_attribute_values(":held", s(HELD))
            .expression_attribute_values(":free", s(FREE))
            .expression_attribute_values(":room", s(voice_room.as_str()))
            .expression_attribute_values(":freeFrom", n(free_from))
            .expression_attribute_values(":releasedAt", n(released_at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Err(PoolError::NotHeld)
            }
            Err(e) => Err(unavailable(sdk_failure("dynamodb:UpdateItem", &e))),
        }
    }

    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        let mut listed = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(sdk_failure("dynamodb:Scan", &e)))?;
            for item in out.items.unwrap_or_default() {
                match (channel_of(&item), slot_of(&item)) {
                    (Some(channel), Some(slot)) => listed.push(PooledChannel { channel, slot }),
                    _ => warn!("skipping an unreadable channel pool item"),
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && listed.len() < LIST_MAX => start = Some(k),
                Some(k) if !k.is_empty() => {
                    warn!(
                        listed = listed.len(),
                        "channel pool larger than the listing bound; the rest waits for the next sweep"
                    );
                    break;
                }
                _ => break,
            }
        }
        Ok(listed)
    }

    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::ARN, s(channel.arn.as_str()))
            .condition_expression("#state = :free AND #releasedAt = :releasedAt")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#releasedAt", attr::RELEASED_AT)
            .expression_attribute_values(":free", s(FREE))
            .expression_attribute_values(":releasedAt", n(released_at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    DeleteItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(sdk_failure("dynamodb:DeleteItem", &e))),
        }
    }
}
