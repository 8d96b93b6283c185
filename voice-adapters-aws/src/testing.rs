//! Test support (cargo feature `test-support`): real local stand-ins for AWS, for this crate's
//! integration tests and voice-lambda's.
//!
//! - [`MotoServer`]: a `moto_server` child process on `127.0.0.1` (DynamoDB, STS, API Gateway
//!   Management), killed when dropped. [`MotoServer::start_or_skip`] follows the team's rule:
//!   without moto installed a test fails under `VOICE_TEST_STRICT=1` and is skipped (loudly)
//!   otherwise.
//! - [`TestTables`] and [`create_tables`]: uniquely named voice/chat tables.
//! - [`test_sdk_config`]: an `SdkConfig` with static test credentials for a local endpoint.
//! - [`FakeKvs`]: an in-process HTTP server speaking the Kinesis Video Streams signaling control
//!   plane and `GetIceServerConfig` (REST-JSON, documented paths and error shapes), because no
//!   emulator exists for them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::chat_store::ChatTables;
use crate::config::{AwsClients, AwsConfig, ChatMode, ExistingAttributes, DEFAULT_REGION};
use crate::store::attr;

/// Environment variable that turns a missing prerequisite into a failure (CI sets it).
pub const STRICT_ENV: &str = "VOICE_TEST_STRICT";
/// The account id moto reports; ARNs in tests use it.
pub const MOTO_ACCOUNT: &str = "123456789012";
/// A role ARN for `AssumeRole` against moto (moto accepts any).
pub const TEST_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/voice-kvs-clients";
/// The name of the connections table's user-id index created by [`create_tables`].
pub const CONNECTIONS_BY_USER_INDEX: &str = "userId-index";

/// Why a stand-in could not be started or prepared.
#[derive(Debug, thiserror::Error)]
pub enum TestSupportError {
    /// `moto_server` could not be spawned (not installed, not on PATH).
    #[error(
        "could not run moto_server: {0}; run scripts/setup-test-deps (pip install 'moto[server]')"
    )]
    Spawn(std::io::Error),
    /// It started but never listened, or exited.
    #[error("moto_server did not come up on {addr}: {detail}")]
    NotReady {
        /// Where it should have listened.
        addr: SocketAddr,
        /// Its exit status or log tail.
        detail: String,
    },
    /// A port could not be picked.
    #[error("could not pick a free port: {0}")]
    Port(std::io::Error),
    /// Creating a table failed.
    #[error("could not create table {table}: {message}")]
    Table {
        /// The table.
        table: String,
        /// The SDK error.
        message: String,
    },
}

/// Whether `moto_server` is on PATH.
pub fn moto_installed() -> bool {
    python_has_moto()
        || Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The team's rule for a missing prerequisite: under `VOICE_TEST_STRICT=1` the test fails
/// (panics, which is how a test fails) with how to install it; otherwise it prints a loud
/// `SKIPPED` line and the caller returns.
pub fn skip_or_fail(why: &str) {
    let strict = std::env::var(STRICT_ENV).is_ok_and(|v| v == "1");
    assert!(
        !strict,
        "{why}; {STRICT_ENV}=1 forbids skipping: run scripts/setup-test-deps (pip install 'moto[server]')"
    );
    eprintln!("SKIPPED: {why}; run scripts/test to install");
}

/// moto's server, but answering one request at a time.
///
/// `moto_server` runs werkzeug with `threaded=True`, and moto's `TransactWriteItems` is not
/// thread-safe: it snapshots the whole table (a deep copy) before applying a transaction and,
/// when one of its conditions fails, restores that snapshot, erasing whatever a concurrent
/// transaction committed in between. Fifty concurrent "start voice" transactions then lose the
/// winner's lock now and then. Real DynamoDB serializes transactions on an item, so we serve
/// requests one at a time: requests from concurrent tasks still interleave arbitrarily (a
/// read-then-write store would still let two starts through), but each is atomic.
const SERIAL_MOTO: &str = "import sys\n\
from werkzeug.serving import run_simple\n\
from moto.server import DomainDispatcherApplication, create_backend_app\n\
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False)\n";

/// Whether `python3` can import moto's server (then [`SERIAL_MOTO`] is used).
fn python_has_moto() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import moto.server, werkzeug.serving"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// moto on `127.0.0.1`, as a child process killed (and reaped) on drop. It runs moto's own
/// server application one request at a time when `python3` can import moto (see
/// [`SERIAL_MOTO`] for why), else the `moto_server` command.
pub struct MotoServer {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl MotoServer {
    /// Starts moto, or applies [`skip_or_fail`] and returns `None` when it is not installed.
    ///
    /// # Panics
    /// If moto is installed but does not come up (a broken environment is a failure, not a
    /// skip), or if it is missing under `VOICE_TEST_STRICT=1`.
    pub fn start_or_skip() -> Option<Self> {
        if !moto_installed() {
            skip_or_fail("moto_server is not installed");
            return None;
        }
        match Self::start() {
            Ok(m) => Some(m),
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts moto on a free port of 127.0.0.1 and waits until it accepts connections. A port picked by binding port 0 can be taken by someone else before moto
    /// binds it; then it exits at once, and another port is tried.
    ///
    /// # Errors
    /// [`TestSupportError`] if it cannot be spawned or never listens.
    pub fn start() -> Result<Self, TestSupportError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start() {
                Ok(m) => return Ok(m),
                Err(e @ TestSupportError::NotReady { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three attempts ran"))
    }

    fn try_start() -> Result<Self, TestSupportError> {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(TestSupportError::Port)?;
        let log =
            std::env::temp_dir().join(format!("moto-{}-{}.log", std::process::id(), addr.port()));
        let log_file = std::fs::File::create(&log).map_err(TestSupportError::Spawn)?;
        let port = addr.port().to_string();
        let mut cmd = if python_has_moto() {
            let mut c = Command::new("python3");
            c.args(["-c", SERIAL_MOTO, "127.0.0.1", &port]);
            c
        } else {
            let mut c = Command::new("moto_server");
            c.args(["-H", "127.0.0.1", "-p", &port]);
            c
        };
        let child = cmd
            .env("MOTO_PORT", &port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(TestSupportError::Spawn)?;
        let mut server = Self {
            child,
            endpoint: format!("http://{addr}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(TestSupportError::NotReady {
                    addr,
                    detail: format!("exited with {status}: {}", server.log_tail()),
                });
            }
            if Instant::now() > deadline {
                return Err(TestSupportError::NotReady {
                    addr,
                    detail: format!("not listening after 30 s: {}", server.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// `http://127.0.0.1:PORT`: the endpoint of every moto service, including the API Gateway
    /// Management API (served at the root, without a stage).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An `SdkConfig` for this server ([`test_sdk_config`]).
    pub fn sdk_config(&self) -> SdkConfig {
        test_sdk_config(&self.endpoint)
    }

    /// A DynamoDB client for this server.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    /// An [`AwsConfig`] naming `tables`, with this server as every endpoint.
    pub fn aws_config(&self, tables: &TestTables) -> AwsConfig {
        AwsConfig {
            connections_table: tables.connections.clone(),
            rooms_table: tables.rooms.clone(),
            voice_rooms_table: tables.voice_rooms.clone(),
            kvs_role_arn: TEST_ROLE_ARN.to_owned(),
            region: DEFAULT_REGION.to_owned(),
            endpoint_url: Some(self.endpoint.clone()),
            management_endpoint: Some(self.endpoint.clone()),
            stack_id: None,
            chat: ChatMode::Existing(ExistingAttributes::default()),
            channel_pool_table: None,
            channel_pool_idle: None,
        }
    }

    /// Every client against this server. KVS has no moto support: replace `kvs` (and point
    /// nothing else at it) with a client for a [`FakeKvs`] when channels are exercised.
    pub fn clients(&self, tables: &TestTables) -> AwsClients {
        AwsClients::from_sdk_config(&self.sdk_config(), &self.aws_config(tables))
            .expect("the test config names a management endpoint")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An `SdkConfig` for a local stand-in: static test credentials, `us-east-1`, the given
/// endpoint, standard retries.
pub fn test_sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(DEFAULT_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new(
                "AKIDTESTTEST",
                "test-secret",
                None,
                None,
                "voice-tests",
            ),
        ))
        .retry_config(RetryConfig::standard())
        .build()
}

/// Names of the three tables, unique per call so that tests can share one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestTables {
    /// Voice rooms (`voiceRoomId` partition key, TTL on `expiresAt`).
    pub voice_rooms: String,
    /// Chat connections (`connectionId` partition key, [`CONNECTIONS_BY_USER_INDEX`] on `userId`).
    pub connections: String,
    /// Chat rooms (`roomId` partition key).
    pub rooms: String,
}

impl TestTables {
    /// `VoiceRooms-<n>`, `ChatConnections-<n>`, `ChatRooms-<n>` with a fresh `<n>`.
    pub fn unique() -> Self {
        let n = uuid::Uuid::new_v4().simple().to_string();
        Self {
            voice_rooms: format!("VoiceRooms-{n}"),
            connections: format!("ChatConnections-{n}"),
            rooms: format!("ChatRooms-{n}"),
        }
    }
}

fn key(name: &str) -> (AttributeDefinition, KeySchemaElement) {
    (
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("name and type are set"),
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(KeyType::Hash)
            .build()
            .expect("name and type are set"),
    )
}

/// Creates the three tables as the deployment does (on-demand; TTL on the voice rooms'
/// `expiresAt`; a `userId` index on connections so both directory paths can be tested).
///
/// # Errors
/// [`TestSupportError::Table`] naming the table that failed.
pub async fn create_tables(
    client: &aws_sdk_dynamodb::Client,
    tables: &TestTables,
) -> Result<(), TestSupportError> {
    let fail = |table: &str| {
        let table = table.to_owned();
        move |e: aws_sdk_dynamodb::Error| TestSupportError::Table {
            table,
            message: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
        }
    };
    for (table, pk) in [(&tables.voice_rooms, attr::ID), (&tables.rooms, "roomId")] {
        let (def, ks) = key(pk);
        client
            .create_table()
            .table_name(table)
            .attribute_definitions(def)
            .key_schema(ks)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| fail(table)(e.into()))?;
    }
    let (def, ks) = key("connectionId");
    let (user_def, user_ks) = key("userId");
    client
        .create_table()
        .table_name(&tables.connections)
        .attribute_definitions(def)
        .attribute_definitions(user_def)
        .key_schema(ks)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(CONNECTIONS_BY_USER_INDEX)
                .key_schema(user_ks)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index name and key are set"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| fail(&tables.connections)(e.into()))?;
    client
        .update_time_to_live()
        .table_name(&tables.voice_rooms)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(attr::EXPIRES_AT)
                .enabled(true)
                .build()
                .expect("name and flag are set"),
        )
        .send()
        .await
        .map_err(|e| fail(&tables.voice_rooms)(e.into()))?;
    Ok(())
}

/// Creates a channel pool table `name` as deploy/aws/template.yaml does: partition key
/// `channelArn`, the sparse free index (`freeKey` + numeric `freeFrom`), on-demand.
///
/// # Errors
/// [`TestSupportError::Table`] naming the table.
pub async fn create_pool_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), TestSupportError> {
    use crate::pool::{attr as pool_attr, FREE_INDEX};
    let (def, ks) = key(pool_attr::ARN);
    let (free_def, free_ks) = key(pool_attr::FREE_KEY);
    let from_def = AttributeDefinition::builder()
        .attribute_name(pool_attr::FREE_FROM)
        .attribute_type(ScalarAttributeType::N)
        .build()
        .expect("name and type are set");
    let from_ks = KeySchemaElement::builder()
        .attribute_name(pool_attr::FREE_FROM)
        .key_type(KeyType::Range)
        .build()
        .expect("name and type are set");
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(def)
        .attribute_definitions(free_def)
        .attribute_definitions(from_def)
        .key_schema(ks)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(FREE_INDEX)
                .key_schema(free_ks)
                .key_schema(from_ks)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .expect("index name and key are set"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| TestSupportError::Table {
            table: name.to_owned(),
            message: aws_smithy_types::error::display::DisplayErrorContext(
                aws_sdk_dynamodb::Error::from(e),
            )
            .to_string(),
        })?;
    Ok(())
}

/// The built-in chat's four tables over `tables`' connections and rooms, laid out as
/// deploy/aws/template.yaml creates them: [`create_tables`] must have run; this adds the users
/// table (`userId`), the messages table (`roomId` + numeric `seq`) and TTL on the connections'
/// `expiresAt`.
///
/// # Errors
/// [`TestSupportError::Table`] naming the table that failed.
pub async fn create_chat_tables(
    client: &aws_sdk_dynamodb::Client,
    tables: &TestTables,
) -> Result<ChatTables, TestSupportError> {
    use crate::chat_store::attr as chat;
    let suffix = tables.rooms.trim_start_matches("ChatRooms-");
    let chat_tables = ChatTables::new(
        &tables.connections,
        &tables.rooms,
        format!("ChatUsers-{suffix}"),
        format!("ChatMessages-{suffix}"),
    );
    let fail = |table: &str| {
        let table = table.to_owned();
        move |e: aws_sdk_dynamodb::Error| TestSupportError::Table {
            table,
            message: aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
        }
    };
    let (d, k) = key(chat::USER_ID);
    client
        .create_table()
        .table_name(&chat_tables.users_table)
        .attribute_definitions(d)
        .key_schema(k)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| fail(&chat_tables.users_table)(e.into()))?;
    let (d1, k1) = key(chat::ROOM_ID);
    client
        .create_table()
        .table_name(&chat_tables.messages_table)
        .attribute_definitions(d1)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(chat::SEQ)
                .attribute_type(ScalarAttributeType::N)
                .build()
                .expect("name and type are set"),
        )
        .key_schema(k1)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(chat::SEQ)
                .key_type(KeyType::Range)
                .build()
                .expect("name and type are set"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| fail(&chat_tables.messages_table)(e.into()))?;
    client
        .update_time_to_live()
        .table_name(&tables.connections)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(chat::EXPIRES_AT)
                .enabled(true)
                .build()
                .expect("name and flag are set"),
        )
        .send()
        .await
        .map_err(|e| fail(&tables.connections)(e.into()))?;
    Ok(chat_tables)
}

// ---------------------------------------------------------------------------------------------
// Fake Kinesis Video Streams
// ---------------------------------------------------------------------------------------------

/// The AWS pages the [`FakeKvs`]'s rules come from; each rule in the code names the one it
/// follows.
pub mod kvs_docs {
    /// "Amazon Kinesis Video Streams with WebRTC service quotas": per-account and per-channel
    /// TPS of the control plane, ConnectAs* limits, message sizes and rates, TURN quotas.
    pub const QUOTAS: &str =
        "https://docs.aws.amazon.com/kinesisvideostreams-webrtc-dg/latest/devguide/kvswebrtc-limits.html";
    /// CreateSignalingChannel: "This operation is asynchronous" (the channel starts `CREATING`).
    pub const CREATE: &str =
        "https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_CreateSignalingChannel.html";
    /// GetSignalingChannelEndpoint, ResourceInUseException: "resources cannot be updated or
    /// deleted unless they are in an ACTIVE state".
    pub const GET_ENDPOINT: &str = "https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_GetSignalingChannelEndpoint.html";
    /// DeleteSignalingChannel: asynchronous; the channel is `DELETING` until it is gone.
    pub const DELETE: &str =
        "https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_DeleteSignalingChannel.html";
    /// GetIceServerConfig: `Ttl` of the credentials (300 s on the quotas page).
    pub const GET_ICE: &str = "https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_signaling_GetIceServerConfig.html";
    /// The error shapes: ClientLimitExceededException, HTTP 400, "the API is being called at
    /// too high a rate".
    pub const ERRORS: &str =
        "https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_DescribeSignalingChannel.html#API_DescribeSignalingChannel_Errors";
}

/// How long a fake channel stays `CREATING` by default. AWS documents creation as asynchronous
/// ([`kvs_docs::CREATE`]) without a figure; a visible delay is what matters, long enough that a
/// caller that does not wait for `ACTIVE` is caught every time.
pub const DEFAULT_ACTIVATION_DELAY: Duration = Duration::from_millis(400);
/// How long a deleted fake channel stays `DELETING` ([`kvs_docs::DELETE`]).
pub const DEFAULT_DELETION_DELAY: Duration = Duration::from_millis(400);
/// TURN credential lifetime: "TURN credentials: 300 seconds TTL [h]" ([`kvs_docs::QUOTAS`]).
pub const TURN_TTL_SECS: u64 = 300;

/// One channel in the [`FakeKvs`].
#[derive(Debug, Clone, PartialEq)]
pub struct FakeChannel {
    /// Its name.
    pub name: String,
    /// Its ARN (`arn:aws:kinesisvideo:us-east-1:123456789012:channel/NAME/MILLIS`).
    pub arn: String,
    /// Its version, required by `DeleteSignalingChannel`'s `CurrentVersion`.
    pub version: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created_secs: f64,
    /// `SINGLE_MASTER`, as sent.
    pub channel_type: String,
    /// `CREATING`, `ACTIVE` or `DELETING`, as `DescribeSignalingChannel` reports it now.
    pub status: &'static str,
    active_at: Instant,
    gone_at: Option<Instant>,
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRequest {
    /// The path, e.g. `/deleteSignalingChannel`.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// The answer's HTTP status.
    pub status: u16,
}

/// Request rates as KVS limits them ([`kvs_docs::QUOTAS`], "Control plane API service quotas"
/// and, for GetIceServerConfig, "Signaling API service quotas"): (operation path, per-account
/// TPS, per-channel TPS). An operation the table leaves out is not limited by the fake.
const TPS_LIMITS: &[(&str, Option<usize>, Option<usize>)] = &[
    ("/createSignalingChannel", Some(50), None),
    ("/deleteSignalingChannel", Some(50), Some(5)),
    ("/describeSignalingChannel", Some(300), Some(5)),
    ("/getSignalingChannelEndpoint", Some(300), None),
    ("/listSignalingChannels", Some(50), None),
    ("/ListTagsForResource", Some(50), Some(5)),
    ("/v1/get-ice-server-config", None, Some(5)),
];

struct FakeState {
    channels: BTreeMap<String, FakeChannel>,
    requests: Vec<FakeRequest>,
    failures: HashMap<String, VecDeque<(u16, String)>>,
    next_version: u64,
    page_size: usize,
    base_url: String,
    activation_delay: Duration,
    deletion_delay: Duration,
    /// Admitted request times of the last second, per rate-limit key.
    windows: HashMap<String, VecDeque<Instant>>,
    /// Extra latency added to every request (to measure sequential round trips).
    latency: Duration,
    /// Whether [`TPS_LIMITS`] apply.
    rate_limits: bool,
}

/// A fake of the KVS signaling control plane and of `GetIceServerConfig`, on `127.0.0.1:0`,
/// that behaves as AWS documents it (every rule cites its page in [`kvs_docs`]):
///
/// - channels are `CREATING` for [`DEFAULT_ACTIVATION_DELAY`] after `CreateSignalingChannel`
///   (asynchronous), then `ACTIVE`; `DeleteSignalingChannel` makes them `DELETING` for
///   [`DEFAULT_DELETION_DELAY`], then gone;
/// - `GetSignalingChannelEndpoint` and `DeleteSignalingChannel` answer `ResourceInUseException`
///   unless the channel is `ACTIVE`;
/// - per-account and per-channel TPS limits ([`TPS_LIMITS`]) answered with
///   `ClientLimitExceededException`, HTTP 400;
/// - TURN credentials with `Ttl` 300 and a username that carries their expiry.
///
/// It implements the REST-JSON operations the adapter uses, at the SDK's paths
/// (`POST /createSignalingChannel`, `/describeSignalingChannel`, `/deleteSignalingChannel`,
/// `/getSignalingChannelEndpoint`, `/listSignalingChannels`, `/ListTagsForResource`,
/// `/v1/get-ice-server-config`), errors as KVS sends them (status, `x-amzn-ErrorType` header and
/// a `__type`/`message` body), `CurrentVersion` checks on delete, and pagination (two channels
/// per page by default). The HTTPS endpoint it hands out is its own address, so that
/// `GetIceServerConfig` reaching it proves the per-endpoint override works. The server task is
/// aborted on drop. The WebSocket side (ConnectAs*, message rates and sizes, connection caps)
/// is modelled by the browser tests' `tests/browser/kvs-fakes.mjs`.
pub struct FakeKvs {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKvs {
    /// Starts the fake on a free port.
    ///
    /// # Panics
    /// If it cannot bind `127.0.0.1:0` (a broken test machine).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(Mutex::new(FakeState {
            channels: BTreeMap::new(),
            requests: Vec::new(),
            failures: HashMap::new(),
            page_size: 2,
            next_version: 1,
            base_url: format!("http://{addr}"),
            activation_delay: DEFAULT_ACTIVATION_DELAY,
            deletion_delay: DEFAULT_DELETION_DELAY,
            windows: HashMap::new(),
            latency: Duration::ZERO,
            rate_limits: true,
        }));
        let app = Router::new()
            .route("/{*op}", post(fake_kvs_handler))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.refresh(Instant::now());
        st
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A control-plane client for the fake (no retries, so error tests see the first answer).
    pub fn kvs_client(&self) -> aws_sdk_kinesisvideo::Client {
        let sdk = test_sdk_config(&self.endpoint())
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_kinesisvideo::Client::new(&sdk)
    }

    /// A signaling client whose own endpoint is a closed port: only the per-call override to
    /// the HTTPS endpoint the fake returns can reach the fake.
    pub fn signaling_client(&self) -> aws_sdk_kinesisvideosignaling::Client {
        let sdk = test_sdk_config(&closed_endpoint())
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_kinesisvideosignaling::Client::new(&sdk)
    }

    /// The control-plane client exactly as the deployment builds it
    /// ([`crate::config::kvs_client`]: retries, throttling classifier), aimed at the fake.
    pub fn deployed_kvs_client(&self) -> aws_sdk_kinesisvideo::Client {
        crate::config::kvs_client(&test_sdk_config(&self.endpoint()), None)
    }

    /// The signaling client exactly as the deployment builds it
    /// ([`crate::config::kvs_signaling_client`]), its own endpoint a closed port as in
    /// [`FakeKvs::signaling_client`].
    pub fn deployed_signaling_client(&self) -> aws_sdk_kinesisvideosignaling::Client {
        crate::config::kvs_signaling_client(&test_sdk_config(&closed_endpoint()), None)
    }

    /// How long new channels stay `CREATING` (and deleted ones `DELETING`).
    pub fn set_delays(&self, activation: Duration, deletion: Duration) {
        let mut st = self.lock();
        st.activation_delay = activation;
        st.deletion_delay = deletion;
    }

    /// Turns KVS's TPS limits off, for tests of something else than KVS whose load would only
    /// measure those limits (a thousand simultaneous starts racing on DynamoDB would mostly be
    /// throttled by CreateSignalingChannel's 50 TPS). Every other rule still applies.
    pub fn set_rate_limits(&self, enabled: bool) {
        self.lock().rate_limits = enabled;
    }

    /// Adds `latency` to every answer, as a network round trip to AWS would.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Every channel that still counts against the quota and answers Describe: `CREATING` or
    /// `ACTIVE` (not `DELETING`).
    pub fn channels(&self) -> Vec<FakeChannel> {
        self.lock()
            .channels
            .values()
            .filter(|c| c.status != "DELETING")
            .cloned()
            .collect()
    }

    /// Every channel, `DELETING` ones included.
    pub fn all_channels(&self) -> Vec<FakeChannel> {
        self.lock().channels.values().cloned().collect()
    }

    /// Adds an `ACTIVE` channel as if someone created it long ago (`created_secs` lets a test
    /// make it old).
    pub fn insert_channel(&self, name: &str, tags: &[(&str, &str)], created_secs: f64) -> String {
        let mut st = self.lock();
        let ms = (created_secs * 1000.0) as u64;
        let arn = format!("arn:aws:kinesisvideo:us-east-1:{MOTO_ACCOUNT}:channel/{name}/{ms}");
        let version = st.fresh_version();
        st.channels.insert(
            arn.clone(),
            FakeChannel {
                name: name.to_owned(),
                arn: arn.clone(),
                version,
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                created_secs,
                channel_type: "SINGLE_MASTER".to_owned(),
                status: "ACTIVE",
                active_at: Instant::now(),
                gone_at: None,
            },
        );
        arn
    }

    /// Changes a channel's version, as an update by someone else would.
    pub fn bump_version(&self, arn: &str) {
        let mut st = self.lock();
        let v = st.fresh_version();
        if let Some(ch) = st.channels.get_mut(arn) {
            ch.version = v;
        }
    }

    /// Makes the next request to `path` (e.g. `"/createSignalingChannel"`) fail with `status`
    /// and error type `error_type` (e.g. `"AccountChannelLimitExceededException"`).
    pub fn fail_next(&self, path: &str, status: u16, error_type: &str) {
        self.lock()
            .failures
            .entry(path.to_owned())
            .or_default()
            .push_back((status, error_type.to_owned()));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.lock().requests.clone()
    }

    /// The requests received on `path`.
    pub fn requests_to(&self, path: &str) -> Vec<FakeRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests were answered with HTTP `status` (400 for a throttle or a channel
    /// that is not `ACTIVE`).
    pub fn answered(&self, status: u16) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

fn closed_endpoint() -> String {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|_| "http://127.0.0.1:9".to_owned())
}

impl Drop for FakeKvs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeState {
    fn fresh_version(&mut self) -> String {
        self.next_version += 1;
        format!("v{:012}", self.next_version)
    }

    /// Moves channels along their life cycle: `CREATING` → `ACTIVE` once created
    /// ([`kvs_docs::CREATE`]), `DELETING` → gone ([`kvs_docs::DELETE`]).
    fn refresh(&mut self, now: Instant) {
        self.channels
            .retain(|_, c| c.gone_at.is_none_or(|gone| now < gone));
        for c in self.channels.values_mut() {
            if c.status == "CREATING" && now >= c.active_at {
                c.status = "ACTIVE";
            }
        }
    }

    /// Admits one request under `limit` per second for `key`, or refuses it (a refused request
    /// does not count).
    fn admit(&mut self, key: String, limit: usize, now: Instant) -> bool {
        let window = self.windows.entry(key).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= limit {
            return false;
        }
        window.push_back(now);
        true
    }

    /// Applies [`TPS_LIMITS`]: `false` when the call is over its account or channel rate.
    fn within_rate(&mut self, path: &str, channel: Option<&str>, now: Instant) -> bool {
        let Some((_, account, per_channel)) = TPS_LIMITS.iter().find(|(p, _, _)| *p == path) else {
            return true;
        };
        // Check both before counting either, so a refused call leaves no trace.
        let account_key = format!("{path} account");
        let channel_key = channel.map(|c| format!("{path} {c}"));
        let busy = |st: &mut Self, key: &str, limit: usize| {
            let w = st.windows.entry(key.to_owned()).or_default();
            w.iter()
                .filter(|t| now.duration_since(**t) < Duration::from_secs(1))
                .count()
                >= limit
        };
        if account.is_some_and(|l| busy(self, &account_key, l)) {
            return false;
        }
        if let (Some(l), Some(k)) = (per_channel, &channel_key) {
            if busy(self, k, *l) {
                return false;
            }
        }
        if let Some(l) = account {
            self.admit(account_key, *l, now);
        }
        if let (Some(l), Some(k)) = (per_channel, channel_key) {
            self.admit(k, *l, now);
        }
        true
    }
}

fn kvs_error(status: u16, error_type: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    // KVS appends a namespace after a colon; the SDK must strip it.
    let header =
        format!("{error_type}:http://internal.amazon.com/coral/com.amazonaws.kinesisvideo/");
    if let Ok(v) = HeaderValue::from_str(&header) {
        headers.insert("x-amzn-ErrorType", v);
    }
    let body = json!({ "__type": error_type, "message": message }).to_string();
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        headers,
        body,
    )
        .into_response()
}

fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn channel_info(ch: &FakeChannel) -> Value {
    json!({
        "ChannelName": ch.name,
        "ChannelARN": ch.arn,
        "ChannelType": ch.channel_type,
        "ChannelStatus": ch.status,
        "CreationTime": ch.created_secs,
        "SingleMasterConfiguration": { "MessageTtlSeconds": 60 },
        "Version": ch.version,
    })
}

async fn fake_kvs_handler(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(op): Path<String>,
    body: Bytes,
) -> Response {
    let latency = state.lock().unwrap_or_else(|p| p.into_inner()).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = format!("/{op}");
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) if body.is_empty() => json!({}),
        Err(e) => return kvs_error(400, "InvalidArgumentException", &format!("bad JSON: {e}")),
    };
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    st.refresh(now);
    let response = answer(&mut st, &path, &body, now);
    st.requests.push(FakeRequest {
        path,
        body,
        status: response.status().as_u16(),
    });
    response
}

fn answer(st: &mut FakeState, path: &str, body: &Value, now: Instant) -> Response {
    if let Some((status, error_type)) = st.failures.get_mut(path).and_then(VecDeque::pop_front) {
        return kvs_error(status, &error_type, "injected failure");
    }
    let str_of = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let channel_arn = str_of("ChannelARN").or_else(|| str_of("ResourceARN"));
    // ClientLimitExceededException (HTTP 400): "Kinesis Video Streams has throttled the request
    // because you have exceeded the limit of allowed client calls" ([`kvs_docs::ERRORS`]), at the
    // rates of [`kvs_docs::QUOTAS`].
    if st.rate_limits && !st.within_rate(path, channel_arn.as_deref(), now) {
        return kvs_error(
            400,
            "ClientLimitExceededException",
            "Kinesis Video Streams has throttled the request because you have exceeded the limit of allowed client calls. Try making the call later.",
        );
    }
    let find = |st: &FakeState, arn: &Option<String>| {
        arn.as_ref().and_then(|a| st.channels.get(a)).cloned()
    };
    // "resources cannot be updated or deleted unless they are in an ACTIVE state"
    // ([`kvs_docs::GET_ENDPOINT`], ResourceInUseException).
    let not_active = |ch: &FakeChannel| {
        kvs_error(
            400,
            "ResourceInUseException",
            &format!("The channel is {}, not ACTIVE", ch.status),
        )
    };
    match path {
        "/createSignalingChannel" => {
            let Some(name) = str_of("ChannelName") else {
                return kvs_error(400, "InvalidArgumentException", "ChannelName is required");
            };
            if st.channels.values().any(|c| c.name == name) {
                return kvs_error(400, "ResourceInUseException", "channel name exists");
            }
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let arn = format!(
                "arn:aws:kinesisvideo:us-east-1:{MOTO_ACCOUNT}:channel/{name}/{}",
                wall.as_millis()
            );
            let tags = body
                .get("Tags")
                .and_then(Value::as_array)
                .map(|ts| {
                    ts.iter()
                        .filter_map(|t| {
                            Some((
                                t.get("Key")?.as_str()?.to_owned(),
                                t.get("Value")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let version = st.fresh_version();
            // Asynchronous: the channel is CREATING until it becomes ACTIVE ([`kvs_docs::CREATE`]).
            let active_at = now + st.activation_delay;
            st.channels.insert(
                arn.clone(),
                FakeChannel {
                    name,
                    arn: arn.clone(),
                    version,
                    tags,
                    created_secs: wall.as_secs_f64(),
                    channel_type: str_of("ChannelType").unwrap_or_else(|| "SINGLE_MASTER".into()),
                    status: if st.activation_delay.is_zero() {
                        "ACTIVE"
                    } else {
                        "CREATING"
                    },
                    active_at,
                    gone_at: None,
                },
            );
            ok_json(json!({ "ChannelARN": arn }))
        }
        "/describeSignalingChannel" => match find(st, &channel_arn) {
            Some(ch) => ok_json(json!({ "ChannelInfo": channel_info(&ch) })),
            None => kvs_error(404, "ResourceNotFoundException", "no such channel"),
        },
        "/deleteSignalingChannel" => {
            let Some(ch) = find(st, &channel_arn) else {
                return kvs_error(404, "ResourceNotFoundException", "no such channel");
            };
            if ch.status != "ACTIVE" {
                return not_active(&ch);
            }
            match str_of("CurrentVersion") {
                Some(v) if v == ch.version => {
                    // Asynchronous: DELETING, then gone ([`kvs_docs::DELETE`]).
                    let gone_at = now + st.deletion_delay;
                    if let Some(c) = st.channels.get_mut(&ch.arn) {
                        c.status = "DELETING";
                        c.gone_at = Some(gone_at);
                    }
                    st.refresh(now);
                    ok_json(json!({}))
                }
                Some(_) => kvs_error(400, "VersionMismatchException", "version mismatch"),
                None => kvs_error(
                    400,
                    "InvalidArgumentException",
                    "this fake requires CurrentVersion",
                ),
            }
        }
        "/getSignalingChannelEndpoint" => {
            let Some(ch) = find(st, &channel_arn) else {
                return kvs_error(404, "ResourceNotFoundException", "no such channel");
            };
            if ch.status != "ACTIVE" {
                return not_active(&ch);
            }
            let cfg = body.get("SingleMasterChannelEndpointConfiguration");
            let role = cfg
                .and_then(|c| c.get("Role"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let protocols: Vec<&str> = cfg
                .and_then(|c| c.get("Protocols"))
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !matches!(role, "MASTER" | "VIEWER") {
                return kvs_error(
                    400,
                    "InvalidArgumentException",
                    "Role must be MASTER or VIEWER",
                );
            }
            let list: Vec<Value> = protocols
                .iter()
                .map(|p| match *p {
                    "WSS" => json!({
                        "Protocol": "WSS",
                        "ResourceEndpoint": format!("wss://m-{}.kinesisvideo.us-east-1.amazonaws.com/{}", role.to_lowercase(), ch.name),
                    }),
                    other => json!({ "Protocol": other, "ResourceEndpoint": st.base_url }),
                })
                .collect();
            ok_json(json!({ "ResourceEndpointList": list }))
        }
        "/listSignalingChannels" => {
            let prefix = body
                .get("ChannelNameCondition")
                .filter(|c| {
                    c.get("ComparisonOperator").and_then(Value::as_str) == Some("BEGINS_WITH")
                })
                .and_then(|c| c.get("ComparisonValue"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let start: usize = str_of("NextToken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let matching: Vec<Value> = st
                .channels
                .values()
                .filter(|c| c.name.starts_with(&prefix))
                .map(channel_info)
                .collect();
            let page: Vec<Value> = matching
                .iter()
                .skip(start)
                .take(st.page_size)
                .cloned()
                .collect();
            let mut out = json!({ "ChannelInfoList": page });
            if start + st.page_size < matching.len() {
                out["NextToken"] = json!((start + st.page_size).to_string());
            }
            ok_json(out)
        }
        "/ListTagsForResource" => match find(st, &channel_arn) {
            Some(ch) => ok_json(json!({ "Tags": ch.tags })),
            None => kvs_error(404, "ResourceNotFoundException", "no such resource"),
        },
        "/v1/get-ice-server-config" => {
            let Some(ch) = find(st, &channel_arn) else {
                return kvs_error(404, "ResourceNotFoundException", "no such channel");
            };
            if str_of("Service").as_deref() != Some("TURN") {
                return kvs_error(400, "InvalidArgumentException", "Service must be TURN");
            }
            let client = str_of("ClientId").unwrap_or_default();
            // Credentials live TURN_TTL_SECS ([`kvs_docs::QUOTAS`], [`kvs_docs::GET_ICE`]);
            // the username carries the expiry, as coturn-style time-limited credentials do.
            let expires = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                + TURN_TTL_SECS;
            ok_json(json!({
                "IceServerList": [{
                    "Uris": [
                        "turn:1-2-3-4.t-abc.kinesisvideo.us-east-1.amazonaws.com:443?transport=udp",
                        "turns:1-2-3-4.t-abc.kinesisvideo.us-east-1.amazonaws.com:443?transport=tcp"
                    ],
                    "Username": format!("{expires}:{}:{client}", ch.name),
                    "Password": "fake-turn-password",
                    "Ttl": TURN_TTL_SECS
                }]
            }))
        }
        _ => kvs_error(404, "UnknownOperationException", "unknown operation"),
    }
}
