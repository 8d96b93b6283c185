//! The Lambda binary (`bootstrap`): reads the configuration, builds the SDK clients and the
//! service once per instance (cold start), then hands every invocation to
//! [`voice_lambda::VoiceLambda`]. Everything else lives in the library, where it is tested.

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use voice_adapters_aws::ChatMode;
use voice_lambda::{aws, LambdaConfig, VoiceLambda};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // JSON lines without timestamps (CloudWatch stamps each line); RUST_LOG, default info.
    tracing_subscriber::fmt()
        .json()
        .without_time()
        .with_current_span(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config =
        LambdaConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.aws.region.clone()))
        .load()
        .await;
    let clients = aws::clients(&sdk, &config)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))
        .context("building the AWS clients")?;
    let executor = aws::executor(&clients, &config)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))
        .context("reading the resume-token key")?;
    let lambda = VoiceLambda::new(executor);
    tracing::info!(
        region = %config.aws.region,
        chat = if matches!(config.aws.chat, ChatMode::Existing(_)) { "existing" } else { "builtin" },
        voice_rooms_table = %config.aws.voice_rooms_table,
        management_endpoint = config.aws.management_endpoint.as_deref().unwrap_or("derived per event"),
        "voice-lambda ready"
    );

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let lambda = lambda.clone();
        async move { lambda.handle(event).await }
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
    .context("the Lambda runtime stopped")
}
