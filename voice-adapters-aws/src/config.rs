//! Configuration from the Lambda environment, the SDK clients built once from it, and the
//! [`AwsPorts`] port set.
//!
//! [`AwsConfig::from_lookup`] is the one parser of the AWS settings: the Lambda reads its
//! environment through it (adding only what is Lambda-only), so each variable has one rule.
//! Why a function of a lookup closure instead of `std::env` directly: the rules must be testable
//! without mutating the process environment (tests run in parallel), and every missing or
//! invalid variable is reported at once, so that an operator fixes the function configuration
//! in one deploy instead of one variable per failed cold start.
//!
//! Clients are built once per cold start and shared by every invocation (they hold connection
//! pools and credential caches); the adapters only clone them.

use std::fmt;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::ports::{Adapters, Ports};

use crate::channels::KvsChannels;
use crate::chat_store::ChatTables;
use crate::credentials::StsCredentials;
use crate::directory::{DirectorySchema, DynamoDirectory};
use crate::errors::{ConfigError, KvsThrottleClassifier};
use crate::notifier::ApiGatewayNotifier;
use crate::pool::DynamoPool;
use crate::store::DynamoStore;

/// Environment variable: the chat app's connections table (the original's `ChatConnections`:
/// WebSocket `connectionId` → user).
pub const ENV_CONNECTIONS_TABLE: &str = "CONNECTIONS_TABLE";
/// Environment variable: the chat app's rooms table (the original's `ChatRooms`: rooms, admins,
/// join requests, members).
pub const ENV_ROOMS_TABLE: &str = "ROOMS_TABLE";
/// Environment variable: the voice rooms table (the original's `VoiceRooms`, partition key
/// `voiceRoomId`).
pub const ENV_VOICE_ROOMS_TABLE: &str = "VOICE_ROOMS_TABLE";
/// Environment variable: the role assumed (with a session policy) to mint participants' scoped
/// KVS credentials.
pub const ENV_KVS_ROLE_ARN: &str = "KVS_ROLE_ARN";
/// Environment variable: the region of the tables and channels (Lambda always sets it).
pub const ENV_REGION: &str = "AWS_REGION";
/// Environment variable: one endpoint for every service (tests against moto).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Environment variable: the WebSocket API stage's management endpoint events are posted to
/// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`). When unset the Lambda
/// derives it from each event; set it when the API is reached through a custom domain, and so
/// that the scheduled sweep can notify on a cold instance.
pub const ENV_MANAGEMENT_ENDPOINT: &str = "APIGW_MANAGEMENT_ENDPOINT";
/// Environment variable: this deployment's id, tagged on every channel it creates (see
/// [`KvsChannels::with_stack_id`]), so that the sweep deletes only this stack's channels.
pub const ENV_STACK_ID: &str = "VOICE_STACK_ID";
/// Environment variable (optional): the channel pool table. When set, released KVS channels
/// are kept there for reuse ([`DynamoPool`]) instead of being deleted, so the KVS bill follows
/// the peak number of participants rather than the number of joins, and a join in steady state
/// does not wait for a channel to be created. Unset: one new channel per participant.
pub const ENV_CHANNEL_POOL_TABLE: &str = "CHANNEL_POOL_TABLE";
/// Environment variable (optional, with `CHANNEL_POOL_TABLE`): whole hours a pooled channel may
/// stay unused before the sweep deletes it (1 to 8760; default 168, a week).
pub const ENV_CHANNEL_POOL_IDLE_HOURS: &str = "CHANNEL_POOL_IDLE_HOURS";
/// Environment variable: `builtin` (default: the stack's own chat on its four tables, served by
/// the Lambda too) or `existing` (voice attached to an existing chat app's tables, which that
/// app keeps serving). The template's `ChatMode` parameter sets it.
pub const ENV_CHAT_MODE: &str = "CHAT_MODE";
/// Environment variable (`CHAT_MODE=builtin`, required there): the built-in chat's users table.
pub const ENV_USERS_TABLE: &str = "USERS_TABLE";
/// Environment variable (`CHAT_MODE=builtin`, required there): the built-in chat's messages
/// table.
pub const ENV_MESSAGES_TABLE: &str = "MESSAGES_TABLE";
/// Environment variable (`CHAT_MODE=builtin`, required there): the ARN of the Secrets Manager
/// secret whose value is the resume-token signing key. Only the ARN is in the environment; the
/// key is read once per cold start, so it never sits in the function's configuration.
pub const ENV_RESUME_KEY_SECRET_ARN: &str = "RESUME_KEY_SECRET_ARN";
/// Environment variables (`CHAT_MODE=existing` only, each optional): the existing chat app's
/// attribute names, in this order: the connections table's partition key and user attribute,
/// the rooms table's partition key, admin, approved members and pending requests. Unset: the
/// defaults of [`DirectorySchema::new`] (the original guide's names).
pub const ENV_ATTRIBUTES: [&str; 6] = [
    "CHAT_CONNECTION_ID_ATTR",
    "CHAT_CONNECTION_USER_ATTR",
    "CHAT_ROOM_ID_ATTR",
    "CHAT_ROOM_ADMIN_ATTR",
    "CHAT_ROOM_MEMBERS_ATTR",
    "CHAT_ROOM_PENDING_ATTR",
];
/// The region when `AWS_REGION` is unset, as in the original guide.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The AWS settings in the environment are incomplete or wrong. Lists every problem, so one
/// fix suffices; each names its variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct EnvError {
    /// Required variables that are unset or empty.
    pub missing: Vec<&'static str>,
    /// Variables that are set to something unusable: (name, why, in words).
    pub invalid: Vec<(&'static str, String)>,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the configuration is incomplete:")?;
        let mut sep = " ";
        if !self.missing.is_empty() {
            write!(
                f,
                " missing environment variable(s) {}",
                self.missing.join(", ")
            )?;
            sep = "; ";
        }
        for (name, why) in &self.invalid {
            write!(f, "{sep}{name} is invalid: {why}")?;
            sep = "; ";
        }
        f.write_str(". Set them on the function (see docs/lambda.md for every variable)")
    }
}

impl EnvError {
    /// `Ok(value)` when nothing is wrong, else this error.
    ///
    /// # Errors
    /// `self`, when it names a problem.
    pub fn or_ok<T>(self, value: T) -> Result<T, Self> {
        if self.missing.is_empty() && self.invalid.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// Which chat the deployment runs (`CHAT_MODE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatMode {
    /// The stack's own chat: the Lambda serves the chat actions on these tables (plus
    /// `CONNECTIONS_TABLE` and `ROOMS_TABLE`, which voice reads too).
    Builtin {
        /// `USERS_TABLE`.
        users_table: String,
        /// `MESSAGES_TABLE`.
        messages_table: String,
        /// `RESUME_KEY_SECRET_ARN`: where the resume-token key is kept.
        resume_key_secret_arn: String,
    },
    /// An existing chat app owns the chat tables and actions; the Lambda serves voice only.
    Existing(ExistingAttributes),
}

/// The existing chat app's attribute names that differ from the defaults (`CHAT_*_ATTR`, see
/// [`ENV_ATTRIBUTES`]); `None` keeps [`DirectorySchema::new`]'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExistingAttributes {
    /// `CHAT_CONNECTION_ID_ATTR`.
    pub connection_id: Option<String>,
    /// `CHAT_CONNECTION_USER_ATTR`.
    pub connection_user: Option<String>,
    /// `CHAT_ROOM_ID_ATTR`.
    pub room_id: Option<String>,
    /// `CHAT_ROOM_ADMIN_ATTR`.
    pub room_admin: Option<String>,
    /// `CHAT_ROOM_MEMBERS_ATTR`.
    pub room_members: Option<String>,
    /// `CHAT_ROOM_PENDING_ATTR`.
    pub room_pending: Option<String>,
}

/// Why `value` cannot be an attribute name, if it cannot: 1 to 255 bytes (DynamoDB's limit for
/// key attributes, <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-attributes>,
/// applied to all six for one rule), no control characters.
fn attribute_problem(value: &str) -> Option<String> {
    let ok = (1..=255).contains(&value.len()) && !value.chars().any(char::is_control);
    (!ok).then(|| {
        format!("{value:?} is not an attribute name (1 to 255 bytes, no control characters)")
    })
}

/// What the AWS adapters need to know about their deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// `CONNECTIONS_TABLE` (required).
    pub connections_table: String,
    /// `ROOMS_TABLE` (required).
    pub rooms_table: String,
    /// `VOICE_ROOMS_TABLE` (required).
    pub voice_rooms_table: String,
    /// `KVS_ROLE_ARN` (required): assumed for participants' scoped credentials.
    pub kvs_role_arn: String,
    /// `AWS_REGION`, default `us-east-1`.
    pub region: String,
    /// `AWS_ENDPOINT_URL` (optional): every client goes there (moto in tests). The SDK also
    /// honours service-specific `AWS_ENDPOINT_URL_<SERVICE>` variables by itself.
    pub endpoint_url: Option<String>,
    /// `APIGW_MANAGEMENT_ENDPOINT` (optional), without a trailing `/`:
    /// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`. When unset, the caller
    /// derives it from an event ([`derive_endpoint`](crate::notifier::derive_endpoint))
    /// or, in tests, `endpoint_url` is used (moto serves it at its root).
    pub management_endpoint: Option<String>,
    /// `VOICE_STACK_ID` (optional): the channels this deployment creates carry it as the
    /// `voiceStack` tag, and the sweep lists only those.
    pub stack_id: Option<String>,
    /// `CHAT_MODE` and, when built in, its tables and key.
    pub chat: ChatMode,
    /// `CHANNEL_POOL_TABLE` (optional): where released channels are kept for reuse.
    pub channel_pool_table: Option<String>,
    /// `CHANNEL_POOL_IDLE_HOURS` (optional): how long a pooled channel may stay unused.
    pub channel_pool_idle: Option<std::time::Duration>,
}

/// Why `value` is not a DynamoDB table, if it is not: a table name is 3 to 255 letters, digits,
/// `_`, `-` or `.`, and every data-plane call also takes the table's ARN in its place
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html>;
/// `TableName` in the API reference: "You can also provide the Amazon Resource Name (ARN) of
/// the table in this parameter", at most 1024 characters).
fn table_problem(value: &str) -> Option<String> {
    if value.starts_with("arn:") {
        let ok = value.len() <= 1024 && value.split(':').nth(2) == Some("dynamodb");
        return (!(ok && value.contains(":table/"))).then(|| {
            format!(
                "{value:?} is not a table ARN (arn:aws:dynamodb:<region>:<account>:table/<name>)"
            )
        });
    }
    let ok = (3..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    (!ok).then(|| {
        format!("{value:?} is not a table name (3 to 255 letters, digits, `_`, `-` or `.`) or table ARN")
    })
}

/// Why `value` is not an IAM role ARN, if it is not: `arn:<partition>:iam::<12-digit
/// account>:role/<path and name>`
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html>: IAM ARNs have no
/// region, and a role's resource is `role/` then its path and name). STS `AssumeRole` would
/// refuse anything else, but only at the first join; this says so at cold start.
fn role_arn_problem(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let ok = matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty())
    );
    (!ok).then(|| {
        format!("{value:?} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
    })
}

/// Why `value` is not a Secrets Manager secret ARN, if it is not:
/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_iam-permissions.html#iam-resources>).
fn secret_arn_problem(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.splitn(7, ':').collect();
    let ok = matches!(
        parts.as_slice(),
        ["arn", partition, "secretsmanager", region, account, "secret", name]
            if !partition.is_empty() && !region.is_empty() && !name.is_empty()
                && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
    ) && value.len() <= 2048;
    (!ok).then(|| {
        format!("{value:?} is not a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)")
    })
}

/// Why `value` is not an `http(s)://` URL with a host, if it is not.
fn url_problem(value: &str, example: &str) -> Option<String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    (!ok).then(|| format!("{value:?} is not an http(s) URL ({example})"))
}

/// Why `value` is not a region name (lower-case letters, digits and `-`, as `eu-west-1`), if it
/// is not: it becomes part of every endpoint's host name.
fn region_problem(value: &str) -> Option<String> {
    let ok = value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (!ok).then(|| format!("{value:?} is not a region name (such as us-east-1)"))
}

/// Why `value` cannot be the `voiceStack` tag value, if it cannot: at most 256 of letters,
/// digits and `_.:/=+-@` (the KVS tag value rule,
/// <https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_Tag.html>, narrowed to ASCII
/// without spaces so the value can be written unquoted in an IAM condition).
fn stack_id_problem(value: &str) -> Option<String> {
    let ok = value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/=+-@".contains(&b));
    (!ok).then(|| "must be at most 256 letters, digits or _.:/=+-@ (a KVS tag value)".to_owned())
}

impl AwsConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`EnvError`] naming every required variable that is unset or empty and every variable
    /// whose value breaks its rule.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment in production, a map in tests). Empty
    /// and whitespace-only values count as unset; values are trimmed.
    ///
    /// # Errors
    /// As [`AwsConfig::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut missing = Vec::new();
        let mut invalid = Vec::new();
        let mut check = |name: &'static str, problem: Option<String>| {
            if let Some(why) = problem {
                invalid.push((name, why));
            }
        };
        let mut required = Vec::new();
        for name in [
            ENV_CONNECTIONS_TABLE,
            ENV_ROOMS_TABLE,
            ENV_VOICE_ROOMS_TABLE,
            ENV_KVS_ROLE_ARN,
        ] {
            let value = get(name).unwrap_or_default();
            if value.is_empty() {
                missing.push(name);
            } else if name == ENV_KVS_ROLE_ARN {
                check(name, role_arn_problem(&value));
            } else {
                check(name, table_problem(&value));
            }
            required.push(value);
        }
        let region = get(ENV_REGION).unwrap_or_else(|| DEFAULT_REGION.to_owned());
        check(ENV_REGION, region_problem(&region));
        let endpoint_url = get(ENV_ENDPOINT_URL);
        if let Some(url) = &endpoint_url {
            check(
                ENV_ENDPOINT_URL,
                url_problem(url, "such as http://localhost:5000"),
            );
        }
        let management_endpoint =
            get(ENV_MANAGEMENT_ENDPOINT).map(|e| e.trim_end_matches('/').to_owned());
        if let Some(url) = &management_endpoint {
            check(
                ENV_MANAGEMENT_ENDPOINT,
                url_problem(
                    url,
                    "https://{api-id}.execute-api.{region}.amazonaws.com/{stage}",
                ),
            );
        }
        let channel_pool_table = get(ENV_CHANNEL_POOL_TABLE);
        if let Some(t) = &channel_pool_table {
            check(ENV_CHANNEL_POOL_TABLE, table_problem(t));
        }
        let channel_pool_idle = match get(ENV_CHANNEL_POOL_IDLE_HOURS) {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(h) if (1..=8760).contains(&h) => Some(std::time::Duration::from_secs(h * 3600)),
                _ => {
                    check(
                        ENV_CHANNEL_POOL_IDLE_HOURS,
                        Some(format!(
                            "{v:?} is not a whole number of hours from 1 to 8760"
                        )),
                    );
                    None
                }
            },
        };
        let stack_id = get(ENV_STACK_ID);
        if let Some(id) = &stack_id {
            check(ENV_STACK_ID, stack_id_problem(id));
        }
        let chat = match get(ENV_CHAT_MODE).as_deref() {
            None | Some("builtin") => {
                let mut builtin = |name: &'static str, problem: fn(&str) -> Option<String>| {
                    let value = get(name).unwrap_or_default();
                    if value.is_empty() {
                        missing.push(name);
                    } else if let Some(why) = problem(&value) {
                        invalid.push((name, why));
                    }
                    value
                };
                ChatMode::Builtin {
                    users_table: builtin(ENV_USERS_TABLE, table_problem),
                    messages_table: builtin(ENV_MESSAGES_TABLE, table_problem),
                    resume_key_secret_arn: builtin(ENV_RESUME_KEY_SECRET_ARN, secret_arn_problem),
                }
            }
            Some("existing") => {
                let mut names = ENV_ATTRIBUTES.map(|name| {
                    let value = get(name);
                    if let Some(why) = value.as_deref().and_then(attribute_problem) {
                        invalid.push((name, why));
                    }
                    value
                });
                let mut take = |i: usize| names[i].take();
                ChatMode::Existing(ExistingAttributes {
                    connection_id: take(0),
                    connection_user: take(1),
                    room_id: take(2),
                    room_admin: take(3),
                    room_members: take(4),
                    room_pending: take(5),
                })
            }
            Some(other) => {
                invalid.push((
                    ENV_CHAT_MODE,
                    format!("{other:?} is neither builtin nor existing"),
                ));
                ChatMode::Existing(ExistingAttributes::default())
            }
        };
        let [connections_table, rooms_table, voice_rooms_table, kvs_role_arn]: [String; 4] =
            required.try_into().expect("four required variables");
        EnvError { missing, invalid }.or_ok(Self {
            connections_table,
            rooms_table,
            voice_rooms_table,
            kvs_role_arn,
            region,
            endpoint_url,
            management_endpoint,
            stack_id,
            chat,
            channel_pool_table,
            channel_pool_idle,
        })
    }

    /// The built-in chat's four tables (default attribute names), or `None` in `existing`
    /// mode.
    pub fn chat_tables(&self) -> Option<ChatTables> {
        match &self.chat {
            ChatMode::Builtin {
                users_table,
                messages_table,
                ..
            } => Some(ChatTables::new(
                &self.connections_table,
                &self.rooms_table,
                users_table,
                messages_table,
            )),
            ChatMode::Existing(_) => None,
        }
    }

    /// The chat tables as voice reads them: the default attribute names, with existing mode's
    /// `CHAT_*_ATTR` overrides applied.
    pub fn directory_schema(&self) -> DirectorySchema {
        let mut schema = DirectorySchema::new(&self.connections_table, &self.rooms_table);
        if let ChatMode::Existing(names) = &self.chat {
            let overrides = [
                (&names.connection_id, &mut schema.connection_id_attr),
                (&names.connection_user, &mut schema.connection_user_attr),
                (&names.room_id, &mut schema.room_id_attr),
                (&names.room_admin, &mut schema.room_admin_attr),
                (&names.room_members, &mut schema.room_members_attr),
                (&names.room_pending, &mut schema.room_pending_attr),
            ];
            for (name, attr) in overrides {
                if let Some(name) = name {
                    name.clone_into(attr);
                }
            }
        }
        schema
    }
}

/// The SDK clients the adapters use, built once. Fields are public so that a test can swap
/// one (e.g. point `kvs` at a fake) before building the adapters.
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// DynamoDB (voice rooms and the chat tables).
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Kinesis Video Streams control plane.
    pub kvs: aws_sdk_kinesisvideo::Client,
    /// Kinesis Video Streams signaling data plane (endpoint overridden per call).
    pub kvs_signaling: aws_sdk_kinesisvideosignaling::Client,
    /// STS.
    pub sts: aws_sdk_sts::Client,
    /// API Gateway Management API, on the stage's endpoint.
    pub apigw: aws_sdk_apigatewaymanagement::Client,
    /// Secrets Manager: the built-in chat's resume-token key, read once at cold start.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// S3: recordings ([`crate::recordings::s3_client`], path-style when an endpoint is
    /// configured here).
    pub s3: aws_sdk_s3::Client,
}

impl AwsClients {
    /// Loads the default credential chain and settings (`aws_config`) for `cfg.region`, then
    /// builds the clients: what a Lambda `main` calls once.
    ///
    /// # Errors
    /// [`ConfigError::NoManagementEndpoint`] as [`AwsClients::from_sdk_config`].
    pub async fn load(cfg: &AwsConfig) -> Result<Self, ConfigError> {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .load()
            .await;
        Self::from_sdk_config(&sdk, cfg)
    }

    /// Builds every client from one `SdkConfig`. `cfg.endpoint_url` applies only when `sdk`
    /// has no endpoint of its own; the management client goes to `cfg.management_endpoint`,
    /// else to `cfg.endpoint_url` (moto serves the management API at its root).
    ///
    /// # Errors
    /// [`ConfigError::NoManagementEndpoint`] when neither is set.
    pub fn from_sdk_config(sdk: &SdkConfig, cfg: &AwsConfig) -> Result<Self, ConfigError> {
        let region = sdk
            .region()
            .cloned()
            .unwrap_or_else(|| Region::new(cfg.region.clone()));
        let endpoint = match sdk.endpoint_url() {
            Some(_) => None,
            None => cfg.endpoint_url.clone(),
        };
        let management = cfg
            .management_endpoint
            .clone()
            .or_else(|| cfg.endpoint_url.clone())
            .ok_or(ConfigError::NoManagementEndpoint)?;
        macro_rules! client {
            ($sdk_crate:ident) => {{
                let mut b = $sdk_crate::config::Builder::from(sdk).region(region.clone());
                if let Some(url) = &endpoint {
                    // Only when set: `set_endpoint_url(None)` would drop the SdkConfig's own.
                    b.set_endpoint_url(Some(url.clone()));
                }
                $sdk_crate::Client::from_conf(b.build())
            }};
        }
        let with_region = sdk.to_builder().region(region.clone()).build();
        Ok(Self {
            dynamodb: client!(aws_sdk_dynamodb),
            kvs: kvs_client(&with_region, endpoint.as_deref()),
            kvs_signaling: kvs_signaling_client(&with_region, endpoint.as_deref()),
            sts: client!(aws_sdk_sts),
            secrets: client!(aws_sdk_secretsmanager),
            s3: {
                let mut b = with_region.to_builder();
                if let Some(url) = &endpoint {
                    b.set_endpoint_url(Some(url.clone()));
                }
                crate::recordings::s3_client(&b.build(), endpoint.is_some())
            },
            apigw: aws_sdk_apigatewaymanagement::Client::from_conf(
                aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
                    .region(region.clone())
                    .endpoint_url(management)
                    .build(),
            ),
        })
    }

    /// The adapters over these clients, with the system clock and uuid ids.
    pub fn adapters(&self, cfg: &AwsConfig) -> Adapters<AwsPorts> {
        Adapters {
            store: DynamoStore::new(self.dynamodb.clone(), &cfg.voice_rooms_table),
            directory: DynamoDirectory::new(self.dynamodb.clone(), cfg.directory_schema()),
            channels: KvsChannels::new(self.kvs.clone(), self.kvs_signaling.clone())
                .with_stack_id(cfg.stack_id.clone()),
            credentials: StsCredentials::new(self.sts.clone(), &cfg.kvs_role_arn, &cfg.region),
            notifier: ApiGatewayNotifier::new(self.apigw.clone()),
            clock: SystemClock,
            ids: UuidIds,
            pool: cfg
                .channel_pool_table
                .as_ref()
                .map(|t| DynamoPool::new(self.dynamodb.clone(), t)),
        }
    }
}

/// How the KVS clients retry: the standard strategy (exponential backoff with jitter, a retry
/// quota) with more attempts than the SDK's default 3, because KVS's per-channel limits are
/// low (5 TPS for Describe/Delete/GetIceServerConfig, 3 TPS for ConnectAs*) and a busy room
/// meets them: ten people joining at once all ask for ICE servers on the first participant's
/// channel, which serves five a second. The jitter is "full" (each wait is random between 0 and
/// its cap), so a caller that keeps losing the race spends its attempts fast: eight were not
/// always enough for 12 simultaneous callers on one channel (seen in CI). Twelve attempts with
/// backoff capped at 2 s wait at most ~17 s in all (~8 s on average), inside the function's
/// 30 s timeout.
pub fn kvs_retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(12)
        .with_initial_backoff(std::time::Duration::from_millis(100))
        .with_max_backoff(std::time::Duration::from_secs(2))
}

/// The KVS control-plane client as deployed: [`kvs_retry_config`] and the
/// [`KvsThrottleClassifier`] (the SDK's own classifiers do not treat KVS's
/// `ClientLimitExceededException` as throttling). `endpoint` overrides the SDK config's.
pub fn kvs_client(sdk: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_kinesisvideo::Client {
    let mut b = aws_sdk_kinesisvideo::config::Builder::from(sdk)
        .retry_config(kvs_retry_config())
        .retry_classifier(KvsThrottleClassifier);
    if let Some(url) = endpoint {
        b.set_endpoint_url(Some(url.to_owned()));
    }
    aws_sdk_kinesisvideo::Client::from_conf(b.build())
}

/// The KVS signaling data-plane client as deployed (as [`kvs_client`]).
pub fn kvs_signaling_client(
    sdk: &SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_kinesisvideosignaling::Client {
    let mut b = aws_sdk_kinesisvideosignaling::config::Builder::from(sdk)
        .retry_config(kvs_retry_config())
        .retry_classifier(KvsThrottleClassifier);
    if let Some(url) = endpoint {
        b.set_endpoint_url(Some(url.to_owned()));
    }
    aws_sdk_kinesisvideosignaling::Client::from_conf(b.build())
}

/// The AWS port set: DynamoDB store and directory, KVS channels, STS credentials, API Gateway
/// notifier, system clock, uuid ids, and the channel pool when `CHANNEL_POOL_TABLE` is set.
pub struct AwsPorts;

impl Ports for AwsPorts {
    type Store = DynamoStore;
    type Directory = DynamoDirectory;
    type Channels = KvsChannels;
    type Credentials = StsCredentials;
    type Notifier = ApiGatewayNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = Option<DynamoPool>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        (ENV_CONNECTIONS_TABLE, "ChatConnections"),
        (ENV_ROOMS_TABLE, "ChatRooms"),
        (ENV_VOICE_ROOMS_TABLE, "VoiceRooms"),
        (ENV_KVS_ROLE_ARN, "arn:aws:iam::123456789012:role/kvs"),
        (ENV_CHAT_MODE, "existing"),
    ];

    const SECRET_ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:resume-key-AbCdEf";

    fn builtin() -> Vec<(&'static str, &'static str)> {
        with(&[
            (ENV_CHAT_MODE, "builtin"),
            (ENV_USERS_TABLE, "ChatUsers"),
            (ENV_MESSAGES_TABLE, "ChatMessages"),
            (ENV_RESUME_KEY_SECRET_ARN, SECRET_ARN),
        ])
    }

    #[test]
    fn builtin_chat_is_the_default_and_needs_its_tables_and_key() {
        let without_mode: Vec<_> = FULL
            .iter()
            .filter(|(k, _)| *k != ENV_CHAT_MODE)
            .copied()
            .collect();
        let err = AwsConfig::from_lookup(lookup(&without_mode)).unwrap_err();
        assert_eq!(
            err.missing,
            vec![
                ENV_USERS_TABLE,
                ENV_MESSAGES_TABLE,
                ENV_RESUME_KEY_SECRET_ARN
            ]
        );
        let msg = err.to_string();
        assert!(
            msg.contains("USERS_TABLE, MESSAGES_TABLE, RESUME_KEY_SECRET_ARN"),
            "{msg}"
        );

        let cfg = AwsConfig::from_lookup(lookup(&builtin())).unwrap();
        assert_eq!(
            cfg.chat,
            ChatMode::Builtin {
                users_table: "ChatUsers".into(),
                messages_table: "ChatMessages".into(),
                resume_key_secret_arn: SECRET_ARN.into(),
            }
        );
        assert_eq!(
            cfg.chat_tables(),
            Some(ChatTables::new(
                "ChatConnections",
                "ChatRooms",
                "ChatUsers",
                "ChatMessages"
            ))
        );
        let existing = AwsConfig::from_lookup(lookup(FULL)).unwrap();
        assert_eq!(
            existing.chat,
            ChatMode::Existing(ExistingAttributes::default())
        );
        assert_eq!(
            existing.directory_schema(),
            DirectorySchema::new("ChatConnections", "ChatRooms")
        );
        assert_eq!(existing.chat_tables(), None);
    }

    #[test]
    fn existing_mode_reads_the_chat_apps_attribute_names() {
        let cfg = AwsConfig::from_lookup(lookup(&with(&[
            ("CHAT_CONNECTION_ID_ATTR", "connId"),
            ("CHAT_ROOM_ADMIN_ATTR", " owner "),
            ("CHAT_ROOM_PENDING_ATTR", ""),
        ])))
        .unwrap();
        let schema = cfg.directory_schema();
        assert_eq!(schema.connection_id_attr, "connId");
        assert_eq!(schema.room_admin_attr, "owner", "trimmed");
        let defaults = DirectorySchema::new("ChatConnections", "ChatRooms");
        assert_eq!(schema.connection_user_attr, defaults.connection_user_attr);
        assert_eq!(
            schema.room_pending_attr, defaults.room_pending_attr,
            "empty is unset"
        );
        assert_eq!(schema.room_members_attr, defaults.room_members_attr);
        let long = "a".repeat(256);
        for (name, bad) in [
            ("CHAT_ROOM_MEMBERS_ATTR", long.as_str()),
            ("CHAT_ROOM_ID_ATTR", "room\u{7}id"),
        ] {
            assert_eq!(invalid(&with(&[(name, bad)])), vec![name], "{name}={bad:?}");
        }
        // Builtin mode writes its own schema: the overrides are not read there.
        let mut vars = builtin();
        vars.push(("CHAT_CONNECTION_ID_ATTR", "connId"));
        let cfg = AwsConfig::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(cfg.directory_schema().connection_id_attr, "connectionId");
    }

    #[test]
    fn chat_mode_and_the_builtin_values_follow_their_rules() {
        let mut vars = builtin();
        vars.retain(|(k, _)| *k != ENV_CHAT_MODE);
        vars.push((ENV_CHAT_MODE, "Builtin!"));
        let err = AwsConfig::from_lookup(lookup(&vars)).unwrap_err();
        assert!(
            err.to_string()
                .contains("CHAT_MODE is invalid: \"Builtin!\" is neither builtin nor existing"),
            "{err}"
        );
        for (name, bad) in [
            (ENV_USERS_TABLE, "a b"),
            (ENV_MESSAGES_TABLE, "x"),
            (ENV_RESUME_KEY_SECRET_ARN, "resume-key"),
            (
                ENV_RESUME_KEY_SECRET_ARN,
                "arn:aws:ssm:us-east-1:123456789012:parameter/resume-key",
            ),
            (
                ENV_RESUME_KEY_SECRET_ARN,
                "arn:aws:secretsmanager:us-east-1:1:secret:k",
            ),
        ] {
            let mut vars = builtin();
            vars.retain(|(k, _)| *k != name);
            vars.push((name, bad));
            assert_eq!(invalid(&vars), vec![name], "{name}={bad}");
        }
        // In existing mode the built-in variables are not read at all.
        assert_eq!(
            invalid(&with(&[(ENV_USERS_TABLE, "a b")])),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn the_channel_pool_is_optional_and_its_idle_hours_are_checked() {
        let cfg = AwsConfig::from_lookup(lookup(FULL)).unwrap();
        assert_eq!(cfg.channel_pool_table, None);
        assert_eq!(cfg.channel_pool_idle, None);
        let cfg = AwsConfig::from_lookup(lookup(&with(&[
            (ENV_CHANNEL_POOL_TABLE, "ChannelPool"),
            (ENV_CHANNEL_POOL_IDLE_HOURS, "24"),
        ])))
        .unwrap();
        assert_eq!(cfg.channel_pool_table.as_deref(), Some("ChannelPool"));
        assert_eq!(
            cfg.channel_pool_idle,
            Some(std::time::Duration::from_secs(24 * 3600))
        );
        for bad in ["0", "8761", "1.5", "week"] {
            let err = AwsConfig::from_lookup(lookup(&with(&[
                (ENV_CHANNEL_POOL_TABLE, "ChannelPool"),
                (ENV_CHANNEL_POOL_IDLE_HOURS, bad),
            ])))
            .unwrap_err();
            assert_eq!(err.invalid.len(), 1, "{bad}");
            assert_eq!(err.invalid[0].0, ENV_CHANNEL_POOL_IDLE_HOURS);
        }
        let err =
            AwsConfig::from_lookup(lookup(&with(&[(ENV_CHANNEL_POOL_TABLE, "x")]))).unwrap_err();
        assert_eq!(err.invalid[0].0, ENV_CHANNEL_POOL_TABLE);
    }

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut vars: Vec<_> = FULL
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        vars.extend_from_slice(extra);
        vars
    }

    /// The variables `vars` is refused for, in order.
    fn invalid(vars: &[(&str, &str)]) -> Vec<&'static str> {
        match AwsConfig::from_lookup(lookup(vars)) {
            Ok(_) => Vec::new(),
            Err(e) => e.invalid.iter().map(|(n, _)| *n).collect(),
        }
    }

    #[test]
    fn the_originals_variables_suffice_with_defaults_for_the_rest() {
        let cfg = AwsConfig::from_lookup(lookup(FULL)).unwrap();
        assert_eq!(cfg.connections_table, "ChatConnections");
        assert_eq!(cfg.rooms_table, "ChatRooms");
        assert_eq!(cfg.voice_rooms_table, "VoiceRooms");
        assert_eq!(cfg.kvs_role_arn, "arn:aws:iam::123456789012:role/kvs");
        assert_eq!(cfg.region, "us-east-1");
        assert_eq!(cfg.endpoint_url, None);
        assert_eq!(cfg.management_endpoint, None);
        assert_eq!(cfg.stack_id, None);
    }

    #[test]
    fn optional_variables_are_read_and_trimmed() {
        let cfg = AwsConfig::from_lookup(lookup(&with(&[
            (ENV_REGION, " eu-central-1 "),
            (ENV_ENDPOINT_URL, "http://127.0.0.1:5000"),
            (
                ENV_MANAGEMENT_ENDPOINT,
                "https://x.execute-api.eu-central-1.amazonaws.com/prod/",
            ),
            (
                ENV_STACK_ID,
                "arn:aws:cloudformation:eu-central-1:1:stack/v/1",
            ),
        ])))
        .unwrap();
        assert_eq!(cfg.region, "eu-central-1");
        assert_eq!(cfg.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            cfg.management_endpoint.as_deref(),
            Some("https://x.execute-api.eu-central-1.amazonaws.com/prod"),
            "the trailing / is dropped"
        );
        assert_eq!(
            cfg.stack_id.as_deref(),
            Some("arn:aws:cloudformation:eu-central-1:1:stack/v/1")
        );
    }

    #[test]
    fn every_missing_variable_is_named_and_empty_counts_as_missing() {
        let err = AwsConfig::from_lookup(lookup(&[
            (ENV_ROOMS_TABLE, "ChatRooms"),
            (ENV_CONNECTIONS_TABLE, " "),
            (ENV_CHAT_MODE, "existing"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.missing,
            vec![
                ENV_CONNECTIONS_TABLE,
                ENV_VOICE_ROOMS_TABLE,
                ENV_KVS_ROLE_ARN
            ]
        );
        assert!(err.invalid.is_empty());
        let msg = err.to_string();
        assert!(
            msg.contains("missing environment variable(s) CONNECTIONS_TABLE, VOICE_ROOMS_TABLE, KVS_ROLE_ARN"),
            "{msg}"
        );
        assert!(msg.contains("docs/lambda.md"), "{msg}");
        assert!(!msg.contains("ROOMS_TABLE is"), "{msg}");
    }

    #[test]
    fn the_role_must_be_an_iam_role_arn() {
        for ok in [
            "arn:aws:iam::123456789012:role/kvs",
            "arn:aws:iam::123456789012:role/service-role/voice/kvs",
            "arn:aws-cn:iam::123456789012:role/kvs",
        ] {
            assert_eq!(
                invalid(&with(&[(ENV_KVS_ROLE_ARN, ok)])),
                Vec::<&str>::new(),
                "{ok}"
            );
        }
        for bad in [
            "kvs-role",
            "arn:kvs",
            "arn:aws:iam::123456789012:user/kvs",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::1234:role/kvs",
            "arn:aws:iam:us-east-1:123456789012:role/kvs",
            "arn:aws:sts::123456789012:assumed-role/kvs/s",
            "arn:aws:s3:::bucket/role/x",
        ] {
            assert_eq!(
                invalid(&with(&[(ENV_KVS_ROLE_ARN, bad)])),
                vec![ENV_KVS_ROLE_ARN],
                "{bad}"
            );
        }
    }

    #[test]
    fn tables_are_names_or_table_arns() {
        for ok in [
            "abc",
            "Chat.Rooms-2_x",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/ChatRooms",
        ] {
            assert_eq!(
                invalid(&with(&[(ENV_ROOMS_TABLE, ok)])),
                Vec::<&str>::new(),
                "{ok}"
            );
        }
        let long = "t".repeat(256);
        for bad in [
            "ab",
            "chat rooms",
            "rooms/1",
            long.as_str(),
            "arn:aws:s3:::table/x",
        ] {
            assert_eq!(
                invalid(&with(&[(ENV_ROOMS_TABLE, bad)])),
                vec![ENV_ROOMS_TABLE],
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        for name in [ENV_ENDPOINT_URL, ENV_MANAGEMENT_ENDPOINT] {
            for ok in ["https://a.example/prod", "http://localhost:5000"] {
                assert_eq!(
                    invalid(&with(&[(name, ok)])),
                    Vec::<&str>::new(),
                    "{name}={ok}"
                );
            }
            for bad in [
                "localhost:5000",
                "abc.execute-api",
                "https://",
                "https:///x",
                "ftp://a",
            ] {
                assert_eq!(invalid(&with(&[(name, bad)])), vec![name], "{name}={bad}");
            }
        }
    }

    #[test]
    fn region_and_stack_id_follow_their_aws_rules() {
        assert_eq!(
            invalid(&with(&[(ENV_REGION, "us-gov-west-1")])),
            Vec::<&str>::new()
        );
        assert_eq!(invalid(&with(&[(ENV_REGION, "EU West")])), vec![ENV_REGION]);
        let long = "s".repeat(257);
        for bad in ["my stack", "stack#1", long.as_str()] {
            assert_eq!(
                invalid(&with(&[(ENV_STACK_ID, bad)])),
                vec![ENV_STACK_ID],
                "{bad}"
            );
        }
        assert_eq!(
            invalid(&with(&[(ENV_STACK_ID, &"s".repeat(256))])),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn invalid_values_are_reported_together_with_missing_ones() {
        let err = AwsConfig::from_lookup(lookup(&[
            (ENV_CONNECTIONS_TABLE, "ChatConnections"),
            (ENV_ROOMS_TABLE, "ChatRooms"),
            (ENV_KVS_ROLE_ARN, "KvsVoice"),
            (ENV_MANAGEMENT_ENDPOINT, "abc.execute-api"),
            (ENV_CHAT_MODE, "existing"),
        ]))
        .unwrap_err();
        assert_eq!(err.missing, vec![ENV_VOICE_ROOMS_TABLE]);
        let names: Vec<_> = err.invalid.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec![ENV_KVS_ROLE_ARN, ENV_MANAGEMENT_ENDPOINT]);
        let msg = err.to_string();
        assert!(msg.contains("VOICE_ROOMS_TABLE"), "{msg}");
        assert!(
            msg.contains("KVS_ROLE_ARN is invalid: \"KvsVoice\" is not an IAM role ARN"),
            "{msg}"
        );
        assert!(
            msg.contains("APIGW_MANAGEMENT_ENDPOINT is invalid"),
            "{msg}"
        );
    }

    #[test]
    fn clients_need_a_management_endpoint() {
        let cfg = AwsConfig::from_lookup(lookup(FULL)).unwrap();
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        assert_eq!(
            AwsClients::from_sdk_config(&sdk, &cfg).unwrap_err(),
            ConfigError::NoManagementEndpoint
        );
        let cfg = AwsConfig {
            management_endpoint: Some("https://x.execute-api.us-east-1.amazonaws.com/prod".into()),
            ..cfg
        };
        let clients = AwsClients::from_sdk_config(&sdk, &cfg).unwrap();
        assert_eq!(
            clients.dynamodb.config().region().unwrap().as_ref(),
            "us-east-1"
        );
    }
}
