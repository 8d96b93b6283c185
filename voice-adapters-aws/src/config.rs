//! Configuration from the Lambda environment, the SDK clients built once from it, and the
//! [`AwsPorts`] port set.
//!
//! Clients are built once per cold start and shared by every invocation (they hold connection
//! pools and credential caches); the adapters only clone them.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::ports::{Adapters, Ports};

use crate::channels::KvsChannels;
use crate::credentials::StsCredentials;
use crate::directory::{DirectorySchema, DynamoDirectory};
use crate::errors::{ConfigError, KvsThrottleClassifier};
use crate::notifier::ApiGatewayNotifier;
use crate::store::DynamoStore;

/// Environment variable: the chat app's connections table.
pub const ENV_CONNECTIONS_TABLE: &str = "CONNECTIONS_TABLE";
/// Environment variable: the chat app's rooms table.
pub const ENV_ROOMS_TABLE: &str = "ROOMS_TABLE";
/// Environment variable: the voice rooms table.
pub const ENV_VOICE_ROOMS_TABLE: &str = "VOICE_ROOMS_TABLE";
/// Environment variable: the role participants' credentials are assumed from.
pub const ENV_KVS_ROLE_ARN: &str = "KVS_ROLE_ARN";
/// Environment variable: the region (Lambda always sets it).
pub const ENV_REGION: &str = "AWS_REGION";
/// Environment variable: one endpoint for every service (tests against moto).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Environment variable: the WebSocket API stage's management endpoint.
pub const ENV_MANAGEMENT_ENDPOINT: &str = "APIGW_MANAGEMENT_ENDPOINT";
/// Environment variable: this deployment's id, tagged on every channel it creates (see
/// [`KvsChannels::with_stack_id`]).
pub const ENV_STACK_ID: &str = "VOICE_STACK_ID";
/// The region when `AWS_REGION` is unset, as in the original guide.
pub const DEFAULT_REGION: &str = "us-east-1";

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
    /// `APIGW_MANAGEMENT_ENDPOINT` (optional):
    /// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`. When unset, the caller
    /// derives it from an event ([`management_endpoint`](crate::notifier::management_endpoint))
    /// or, in tests, `endpoint_url` is used (moto serves it at its root).
    pub management_endpoint: Option<String>,
    /// `VOICE_STACK_ID` (optional): the channels this deployment creates carry it as the
    /// `voiceStack` tag, and the sweep lists only those.
    pub stack_id: Option<String>,
}

impl AwsConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] naming every required variable that is unset or empty;
    /// [`ConfigError::Invalid`] for a `KVS_ROLE_ARN` that is not a role ARN.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `get`, so that tests need not touch the process environment.
    ///
    /// # Errors
    /// As [`AwsConfig::from_env`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut missing = Vec::new();
        let mut required = |name: &'static str| {
            get(name).unwrap_or_else(|| {
                missing.push(name);
                String::new()
            })
        };
        let connections_table = required(ENV_CONNECTIONS_TABLE);
        let rooms_table = required(ENV_ROOMS_TABLE);
        let voice_rooms_table = required(ENV_VOICE_ROOMS_TABLE);
        let kvs_role_arn = required(ENV_KVS_ROLE_ARN);
        if !missing.is_empty() {
            return Err(ConfigError::Missing { names: missing });
        }
        if !(kvs_role_arn.starts_with("arn:") && kvs_role_arn.contains(":role/")) {
            return Err(ConfigError::Invalid {
                name: ENV_KVS_ROLE_ARN,
                reason: "expected an IAM role ARN (arn:aws:iam::<account>:role/<name>)".into(),
            });
        }
        for name in [ENV_ENDPOINT_URL, ENV_MANAGEMENT_ENDPOINT] {
            if let Some(url) = get(name) {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError::Invalid {
                        name,
                        reason: "expected an http(s):// URL".into(),
                    });
                }
            }
        }
        Ok(Self {
            connections_table,
            rooms_table,
            voice_rooms_table,
            kvs_role_arn,
            region: get(ENV_REGION).unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            endpoint_url: get(ENV_ENDPOINT_URL),
            management_endpoint: get(ENV_MANAGEMENT_ENDPOINT),
            stack_id: get(ENV_STACK_ID),
        })
    }

    /// The chat tables with the default attribute names; adjust fields if the chat app differs.
    pub fn directory_schema(&self) -> DirectorySchema {
        DirectorySchema::new(&self.connections_table, &self.rooms_table)
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
/// notifier, system clock, uuid ids.
pub struct AwsPorts;

impl Ports for AwsPorts {
    type Store = DynamoStore;
    type Directory = DynamoDirectory;
    type Channels = KvsChannels;
    type Credentials = StsCredentials;
    type Notifier = ApiGatewayNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
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
        ("CONNECTIONS_TABLE", "ChatConnections"),
        ("ROOMS_TABLE", "ChatRooms"),
        ("VOICE_ROOMS_TABLE", "VoiceRooms"),
        ("KVS_ROLE_ARN", "arn:aws:iam::123456789012:role/kvs"),
    ];

    #[test]
    fn every_missing_variable_is_named() {
        let err =
            AwsConfig::from_lookup(lookup(&[("ROOMS_TABLE", "R"), ("CONNECTIONS_TABLE", " ")]))
                .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                names: vec!["CONNECTIONS_TABLE", "VOICE_ROOMS_TABLE", "KVS_ROLE_ARN"]
            }
        );
    }

    #[test]
    fn defaults_and_optionals() {
        let cfg = AwsConfig::from_lookup(lookup(FULL)).unwrap();
        assert_eq!(cfg.region, "us-east-1");
        assert_eq!(cfg.endpoint_url, None);
        assert_eq!(cfg.management_endpoint, None);
        let mut vars = FULL.to_vec();
        vars.push(("AWS_REGION", "eu-central-1"));
        vars.push((
            "APIGW_MANAGEMENT_ENDPOINT",
            "https://x.execute-api.eu-central-1.amazonaws.com/prod",
        ));
        let cfg = AwsConfig::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(cfg.region, "eu-central-1");
        assert!(cfg.management_endpoint.unwrap().ends_with("/prod"));
    }

    #[test]
    fn bad_values_are_refused() {
        let mut vars = FULL.to_vec();
        vars[3] = ("KVS_ROLE_ARN", "kvs-role");
        assert!(matches!(
            AwsConfig::from_lookup(lookup(&vars)),
            Err(ConfigError::Invalid {
                name: "KVS_ROLE_ARN",
                ..
            })
        ));
        let mut vars = FULL.to_vec();
        vars.push(("AWS_ENDPOINT_URL", "localhost:5000"));
        assert!(matches!(
            AwsConfig::from_lookup(lookup(&vars)),
            Err(ConfigError::Invalid {
                name: "AWS_ENDPOINT_URL",
                ..
            })
        ));
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
