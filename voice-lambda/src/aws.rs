//! The AWS port set the Lambda runs on, and how it is built from SDK clients.
//!
//! Why not `voice_adapters_aws::AwsPorts` as is: its notifier posts to one management endpoint
//! fixed at start-up, while a Lambda may have to learn the endpoint from its events. The
//! Lambda's set is the same adapters with the notifier wrapped in `voice-adapters-aws`'s
//! [`EndpointNotifier`], which builds one `apigatewaymanagement` client per endpoint
//! (configured, or `https://{domainName}/{stage}` of the event) and caches it for the
//! instance's life. Living in the library, this wiring is
//! what the end-to-end tests exercise, not a copy of it.

use std::sync::Arc;

use aws_config::SdkConfig;
use chat_domain::{ChatAdapters, ChatService, ChatStore};
use voice_adapters_aws::{
    read_resume_key, ApiGatewayChatEvents, ChatMode, DynamoChat, DynamoSignUps, ResumeKeyError,
};
use voice_adapters_aws::{ApiGatewayNotifier, ConfigError as AwsConfigError, EndpointNotifier};
use voice_adapters_aws::{
    AwsClients, AwsConfig, AwsPorts, DynamoDirectory, DynamoStore, KvsChannels, S3Recordings,
    StsCredentials,
};
use voice_adapters_std::{HmacKey, ResumeTokens, SystemClock, UuidIds};
use voice_domain::ports::{Adapters, Ports};
use voice_domain::VoiceService;
use voice_executor::Executor;

use crate::config::LambdaConfig;

/// Where the adapters' own management client points when no endpoint is configured. That
/// client is never used by the Lambda (the [`EndpointNotifier`] builds its own per endpoint);
/// `AwsClients` just insists on an endpoint. `.invalid` cannot resolve (RFC 2606), so a misuse
/// fails loudly instead of posting somewhere real.
pub const UNUSED_MANAGEMENT_ENDPOINT: &str =
    "https://management-endpoint-derived-per-event.invalid";

/// The Lambda's port set: the AWS adapters with a per-endpoint notifier.
pub struct LambdaPorts;

impl Ports for LambdaPorts {
    type Store = DynamoStore;
    type Directory = DynamoDirectory;
    type Channels = KvsChannels;
    type Credentials = StsCredentials;
    type Notifier = EndpointNotifier<ApiGatewayNotifier>;
    type Clock = <AwsPorts as Ports>::Clock;
    type Ids = <AwsPorts as Ports>::Ids;
    type Pool = <AwsPorts as Ports>::Pool;
}

/// The adapters' configuration for the Lambda's clients: its own, with `endpoint_url` left to
/// the SDK (which honours `AWS_ENDPOINT_URL` and per-service variants by itself, see
/// [`clients`]) and the management endpoint [`UNUSED_MANAGEMENT_ENDPOINT`] when unset.
pub fn aws_config(config: &LambdaConfig) -> AwsConfig {
    AwsConfig {
        endpoint_url: None,
        management_endpoint: Some(
            config
                .aws
                .management_endpoint
                .clone()
                .unwrap_or_else(|| UNUSED_MANAGEMENT_ENDPOINT.to_owned()),
        ),
        ..config.aws.clone()
    }
}

/// Every SDK client, built once per instance from the loaded `SdkConfig`.
///
/// The endpoints are the SDK's own resolution, untouched: a per-service
/// `AWS_ENDPOINT_URL_<SERVICE>` (e.g. `AWS_ENDPOINT_URL_KINESIS_VIDEO`) wins over the global
/// `AWS_ENDPOINT_URL`, which wins over the default AWS endpoint (the SDK's "service-specific
/// endpoints" rules, applied by each client's `Builder::from(&SdkConfig)`). An earlier version
/// copied the global endpoint onto every client explicitly, which silently overrode every
/// per-service setting (a local stack with moto for DynamoDB and another stand-in for KVS/STS
/// sent everything to moto); `tests/bootstrap.rs` runs the real binary with both set.
///
/// # Errors
/// [`AwsConfigError`] if the adapters refuse the configuration.
pub fn clients(sdk: &SdkConfig, config: &LambdaConfig) -> Result<AwsClients, AwsConfigError> {
    AwsClients::from_sdk_config(sdk, &aws_config(config))
}

/// The adapters over `clients`, with notifications routed to `management_endpoint` when set,
/// else to each event's own API.
pub fn adapters(
    clients: &AwsClients,
    aws: &AwsConfig,
    management_endpoint: Option<String>,
) -> Adapters<LambdaPorts> {
    let base = clients.adapters(aws);
    let apigw = clients.apigw.clone();
    let notifier = EndpointNotifier::new(management_endpoint, move |endpoint: &str| {
        let config = apigw.config().to_builder().endpoint_url(endpoint).build();
        ApiGatewayNotifier::new(aws_sdk_apigatewaymanagement::Client::from_conf(config))
    });
    Adapters {
        store: base.store,
        directory: base.directory,
        channels: base.channels,
        credentials: base.credentials,
        notifier,
        clock: base.clock,
        ids: base.ids,
        pool: base.pool,
    }
}

/// What the Lambda serves, built once at cold start by `main` (and by the end-to-end tests,
/// so they exercise this wiring, not a copy): voice always; with `CHAT_MODE=builtin` the chat
/// too, over [`DynamoChat`] on the stack's tables, its events through the same
/// [`EndpointNotifier`] as voice's, resume tokens signed with the key read here from Secrets
/// Manager (one `GetSecretValue` per cold start), and voice's store answering which voice room
/// is active; with `RECORDINGS_BUCKET` recordings in that bucket ([`S3Recordings`]). Voice's directory is [`DynamoDirectory`] in both modes: in builtin mode it reads
/// the same connections and rooms tables, in the same schema, that [`DynamoChat`] writes.
///
/// # Errors
/// [`ResumeKeyError`] when the built-in chat's key cannot be read: the function refuses to
/// start rather than issue tokens it could not verify after the next cold start.
pub async fn executor(
    clients: &AwsClients,
    config: &LambdaConfig,
) -> Result<Executor<LambdaPorts>, ResumeKeyError> {
    let adapters = adapters(
        clients,
        &aws_config(config),
        config.aws.management_endpoint.clone(),
    );
    let chat = match (&config.aws.chat, config.aws.chat_tables()) {
        (
            ChatMode::Builtin {
                resume_key_secret_arn,
                ..
            },
            Some(tables),
        ) => {
            let key = read_resume_key(&clients.secrets, resume_key_secret_arn).await?;
            // New users per source address per hour, counted in the connections table (the
            // handler puts each event's `requestContext.identity.sourceIp` in scope).
            let sign_ups = Arc::new(DynamoSignUps::new(
                clients.dynamodb.clone(),
                &tables.directory,
                config.new_users_per_ip_per_hour,
            ));
            let store: Arc<dyn ChatStore> =
                Arc::new(DynamoChat::new(clients.dynamodb.clone(), tables));
            Some(
                ChatService::new(ChatAdapters {
                    events: Arc::new(ApiGatewayChatEvents::new(
                        adapters.notifier.clone(),
                        Arc::clone(&store),
                    )),
                    store,
                    tokens: Arc::new(ResumeTokens::new(HmacKey::new(key))),
                    ids: Arc::new(UuidIds),
                    voice: Arc::new(adapters.store.clone()),
                    clock: Arc::new(SystemClock),
                })
                .with_sign_ups(sign_ups),
            )
        }
        _ => None,
    };
    let mut voice = Executor::new(Arc::new(VoiceService::new(
        adapters,
        config.service_config(),
    )));
    if let Some(bucket) = &config.recordings_bucket {
        let s3 = if config.s3_path_style {
            aws_sdk_s3::Client::from_conf(
                clients
                    .s3
                    .config()
                    .to_builder()
                    .force_path_style(true)
                    .build(),
            )
        } else {
            clients.s3.clone()
        };
        voice = voice.with_recordings(Arc::new(S3Recordings::new(s3, bucket.clone())));
    }
    Ok(match chat {
        Some(chat) => voice.with_chat(chat),
        None => voice,
    })
}
