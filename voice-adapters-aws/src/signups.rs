//! New users per source address per hour on AWS: the chat domain's [`SignUpGate`] for the
//! Lambda, which keeps nothing between invocations, so the count lives in DynamoDB.
//!
//! Why: every `hello` without a usable resume token creates a user item kept for ever, and
//! each new user may send a join request; a script opening throw-away connections could mint
//! users without end (issue 13, finding 5: 1 000 users and requests in 4.4 s on the
//! self-hosted server, which has had this gate since; API Gateway's stage throttling bounds the
//! rate per account, not per address).
//!
//! How: one counter item per address per clock hour in the connections table (key
//! `signup#<address>#<hour>`: API Gateway connection ids are base64-like and never contain `#`,
//! and the item has no user attribute, so no connection reader ever sees it), raised by one
//! `UpdateItem` whose condition refuses it at the limit, so simultaneous sign-ups from one
//! address cannot pass it; the table's TTL attribute (`expiresAt`) deletes it an hour after
//! its hour ends. The address is the event's `requestContext.identity.sourceIp`, which API
//! Gateway sets on every WebSocket route event (clients cannot set it); the handler puts it in
//! scope with [`with_source_ip`].
//!
//! A fixed window (the self-hosted server refills a bucket evenly): at most twice the limit
//! across an hour boundary, which still bounds a script to a few dozen users per address per
//! hour.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chat_domain::SignUpGate;
use tracing::info;
use voice_domain::ports::PortFailure;
use voice_domain::ConnectionId;

use crate::chat_store::attr;
use crate::directory::DirectorySchema;
use crate::errors::sdk_failure;

/// Key prefix of sign-up counter items in the connections table.
pub const SIGNUP_PREFIX: &str = "signup#";
/// The counter's attribute (N): sign-ups from the address in the hour.
const COUNT: &str = "signups";
/// The longest address kept in a key (IPv6 text is at most 45 characters).
const MAX_ADDRESS_CHARS: usize = 64;

tokio::task_local! {
    /// The source address of the request being handled.
    static SOURCE_IP: String;
}

/// Runs `fut` with `ip` as the current request's source address (if any), for the
/// [`DynamoSignUps`] gate it asks.
pub async fn with_source_ip<F: Future>(ip: Option<String>, fut: F) -> F::Output {
    match ip.filter(|ip| !ip.is_empty()) {
        Some(ip) => SOURCE_IP.scope(ip, fut).await,
        None => fut.await,
    }
}

fn source_ip() -> Option<String> {
    SOURCE_IP.try_with(Clone::clone).ok()
}

/// At most `per_hour` new users per source address per clock hour, counted in the connections
/// table (which must have TTL on `expiresAt`, as the template's has). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoSignUps {
    client: Client,
    table: String,
    key_attr: String,
    per_hour: u32,
}

impl DynamoSignUps {
    /// The gate over the connections table of `schema` (its key attribute names the item).
    pub fn new(client: Client, schema: &DirectorySchema, per_hour: u32) -> Self {
        Self {
            client,
            table: schema.connections_table.clone(),
            key_attr: schema.connection_id_attr.clone(),
            per_hour,
        }
    }

    /// Counts one sign-up from `ip` at `now_secs`: `false` when the address had `per_hour` in
    /// this clock hour already.
    ///
    /// # Errors
    /// [`PortFailure`] when DynamoDB cannot answer.
    pub async fn admit_from(&self, ip: &str, now_secs: u64) -> Result<bool, PortFailure> {
        if self.per_hour == 0 {
            return Ok(false);
        }
        let ip: String = ip.chars().take(MAX_ADDRESS_CHARS).collect();
        let hour = now_secs / 3600;
        let key = format!("{SIGNUP_PREFIX}{ip}#{hour}");
        // TTL deletes within a few days of the time, not at it; the condition on the hour in
        // the key is what counts, the TTL only keeps the table small.
        // https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/howitworks-ttl.html
        let expires = (hour + 2) * 3600;
        // ADD creates the number at 0 + 1; the condition sees the value before the update.
        // https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(&self.key_attr, AttributeValue::S(key))
            .update_expression("ADD #n :one SET #x = :exp")
            .condition_expression("attribute_not_exists(#n) OR #n < :max")
            .expression_attribute_names("#n", COUNT)
            .expression_attribute_names("#x", attr::EXPIRES_AT)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()))
            .expression_attribute_values(":max", AttributeValue::N(self.per_hour.to_string()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                info!(
                    limit = self.per_hour,
                    "sign-up refused: the address's hourly quota is used up"
                );
                Ok(false)
            }
            Err(e) => Err(sdk_failure("dynamodb:UpdateItem", &e)),
        }
    }
}

#[async_trait]
impl SignUpGate for DynamoSignUps {
    /// The current request's source address (from [`with_source_ip`]); a request without one
    /// (not from API Gateway) is admitted: there is no address to charge.
    async fn admit(&self, _connection: &ConnectionId) -> Result<bool, PortFailure> {
        let Some(ip) = source_ip() else {
            return Ok(true);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.admit_from(&ip, now).await
    }
}
