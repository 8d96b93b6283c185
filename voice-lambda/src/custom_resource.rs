//! The stack's `Custom::ChannelDrain` resource: CloudFormation invokes the function with a
//! custom resource request, and waits for the answer at the request's presigned `ResponseURL`
//! (an HTTPS `PUT` of a JSON object; "Custom resource response objects" in the CloudFormation
//! user guide). `Create` and `Update` only answer. `Delete` first deletes the deployment's
//! signaling channels ([`VoiceService::teardown`]), which are not stack resources and would
//! otherwise outlive the stack.
//!
//! Architecture invariant: the answer is always `SUCCESS` and always sent. A `FAILED` answer to
//! `Delete` leaves the stack in `DELETE_FAILED`, and no answer leaves it waiting an hour; a
//! channel that could not be deleted is a leftover for the documented manual step, named in
//! the log and counted in `Reason`.
//!
//! [`VoiceService::teardown`]: voice_domain::VoiceService::teardown

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde::Serialize;
use tracing::{error, info, warn};

use crate::event::{CustomResourceAction, CustomResourceRequest};

/// The physical id the resource keeps for its whole life: the same on every answer, so an
/// update never looks like a replacement (which would send the old resource a `Delete` and
/// drain a running deployment).
pub const PHYSICAL_RESOURCE_ID: &str = "voice-channel-drain";

/// How long `Delete` may spend deleting channels before it answers anyway: the function's
/// timeout is 30 s (deploy/aws/template.yaml) and the answer needs a moment.
pub const TEARDOWN_BUDGET: Duration = Duration::from_secs(20);

/// How long one attempt to `PUT` the answer may take, and how many attempts are made.
const PUT_TIMEOUT: Duration = Duration::from_secs(3);
const PUT_ATTEMPTS: u32 = 3;

/// The answer CloudFormation reads from `ResponseURL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceAnswer {
    /// Always `SUCCESS` (see the module's invariant).
    pub status: &'static str,
    /// What was done, in words (shown in the stack's events).
    pub reason: String,
    /// [`PHYSICAL_RESOURCE_ID`].
    pub physical_resource_id: String,
    /// Echoed from the request.
    pub stack_id: String,
    /// Echoed from the request.
    pub request_id: String,
    /// Echoed from the request.
    pub logical_resource_id: String,
}

impl CustomResourceAnswer {
    /// A `SUCCESS` answer to `request` saying `reason`.
    pub fn success(request: &CustomResourceRequest, reason: String) -> Self {
        Self {
            status: "SUCCESS",
            reason,
            physical_resource_id: request
                .physical_resource_id
                .clone()
                .unwrap_or_else(|| PHYSICAL_RESOURCE_ID.to_owned()),
            stack_id: request.stack_id.clone(),
            request_id: request.request_id.clone(),
            logical_resource_id: request.logical_resource_id.clone(),
        }
    }
}

/// What `Delete` reports in `Reason`, from the teardown's outcome.
pub fn delete_reason(
    outcome: Option<Result<voice_domain::service::TeardownReport, String>>,
) -> String {
    const MANUAL: &str = "delete what is left by hand (docs/deploy-aws.md, Teardown)";
    match outcome {
        Some(Ok(r)) if r.failures == 0 => format!(
            "deleted {} signaling channels of this stack",
            r.channels_deleted
        ),
        Some(Ok(r)) => format!(
            "deleted {} signaling channels of this stack; {} could not be deleted: {MANUAL}",
            r.channels_deleted, r.failures
        ),
        Some(Err(e)) => format!("could not list this stack's signaling channels ({e}); {MANUAL}"),
        None => format!(
            "deleting this stack's signaling channels took longer than {} s; {MANUAL}",
            TEARDOWN_BUDGET.as_secs()
        ),
    }
}

/// Whether `request` asks for the teardown.
pub fn is_delete(request: &CustomResourceRequest) -> bool {
    request.request_type == CustomResourceAction::Delete
}

/// `PUT`s `answer` to `url`, a few times if it fails. Returns whether it was accepted (2xx).
/// The URL is presigned: it is a secret of sorts and never logged, only its host.
pub async fn send_answer(url: &str, answer: &CustomResourceAnswer) -> bool {
    let body = match serde_json::to_vec(answer) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            error!(error = %e, "could not encode the custom resource answer");
            return false;
        }
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            error!(error = %e, "the custom resource request's ResponseURL is not a URL");
            return false;
        }
    };
    let host = uri.host().unwrap_or_default().to_owned();
    let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(e) => {
            error!(error = %e, "no TLS root certificates to answer CloudFormation with");
            return false;
        }
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    for attempt in 1..=PUT_ATTEMPTS {
        // CloudFormation's presigned URL is signed without a content type: send none.
        let request = match http::Request::put(uri.clone())
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body.clone()))
        {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "could not build the custom resource answer");
                return false;
            }
        };
        match tokio::time::timeout(PUT_TIMEOUT, client.request(request)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                info!(host = %host, "custom resource answer accepted");
                return true;
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                warn!(host = %host, %status, attempt, "custom resource answer refused");
            }
            Ok(Err(e)) => {
                warn!(host = %host, error = %e, attempt, "custom resource answer not sent")
            }
            Err(_) => warn!(host = %host, attempt, "custom resource answer timed out"),
        }
        tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
    }
    error!(host = %host, "CloudFormation was not answered; the stack operation waits up to an hour for it");
    false
}
