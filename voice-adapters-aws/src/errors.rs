//! This crate's own errors, and the one place where an AWS SDK error becomes a
//! [`PortFailure`].
//!
//! Every adapter first matches the few SDK errors that its port contract names (a conditional
//! check that failed, `ResourceNotFoundException`, `GoneException`, the channel quota) and hands
//! everything else to [`sdk_failure`], so that "throttled → retryable, access denied →
//! permanent" is decided once for all five services instead of once per module.

use std::error::Error as StdError;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_kinesisvideo::config::interceptors::InterceptorContext;
use aws_sdk_kinesisvideo::config::retry::{ClassifyRetry, RetryAction};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use voice_domain::ports::PortFailure;

/// Why the adapters could not be built from an [`AwsConfig`](crate::config::AwsConfig) (reading
/// one fails with [`EnvError`](crate::config::EnvError)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The notifier needs the API Gateway management endpoint, and none was configured or derived.
    #[error(
        "no API Gateway management endpoint: set APIGW_MANAGEMENT_ENDPOINT \
         (https://{{api-id}}.execute-api.{{region}}.amazonaws.com/{{stage}}) or derive it from the event"
    )]
    NoManagementEndpoint,
}

/// Why a session policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// STS refuses session policies over 2 048 characters of plain text.
    #[error(
        "session policy for {grants} channel grants is {len} characters; STS allows at most {max}"
    )]
    TooLong {
        /// How many grants were asked for.
        grants: usize,
        /// The compact JSON length.
        len: usize,
        /// STS's limit.
        max: usize,
    },
    /// A policy that allows nothing is a bug in the caller, not something to send to STS.
    #[error("a session policy needs at least one channel grant")]
    NoGrants,
    /// STS refused the policy after packing it (`PackedPolicyTooLarge`): the compressed policy
    /// and session tags exceed STS's packed size limit. Retrying cannot help; fewer grants (a
    /// smaller voice room) would.
    #[error(
        "STS refused the session policy for {grants} channel grants as too large once packed          (PackedPolicyTooLarge): {message}"
    )]
    PackedTooLarge {
        /// How many grants were asked for.
        grants: usize,
        /// STS's message (it names the percentage over the limit).
        message: String,
    },
}

/// Service error codes that mean "slow down": AWS's standard retry classifier's list, plus the
/// names Kinesis Video Streams and API Gateway use for their per-client rate limits.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "ClientLimitExceededException",
];

/// Service error codes that mean "the service had a problem; the same call may work later".
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "IDPCommunicationError",
];

/// Whether a service error code (with its HTTP status, if any) is worth retrying.
pub(crate) fn is_retryable_code(code: Option<&str>, status: Option<u16>) -> bool {
    let by_code =
        code.is_some_and(|c| THROTTLING_CODES.contains(&c) || TRANSIENT_CODES.contains(&c));
    let by_status = status.is_some_and(|s| s == 429 || s >= 500);
    by_code || by_status
}

/// Maps any SDK error onto a [`PortFailure`]: throttling, 5xx, timeouts and network errors are
/// retryable; access denied, validation errors, unknown resources and malformed requests are
/// permanent. `operation` (e.g. `"dynamodb:TransactWriteItems"`) goes into the message so that a
/// log line says which call failed. SDK messages carry no secrets (credentials are never echoed).
pub(crate) fn sdk_failure<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> PortFailure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let failure = match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let status = service.raw().status().as_u16();
            let message = format!(
                "{operation}: {} (HTTP {status}): {}",
                code.unwrap_or("unknown error"),
                service.err().message().unwrap_or("no message")
            );
            if is_retryable_code(code, Some(status)) {
                PortFailure::retryable(message)
            } else {
                PortFailure::permanent(message)
            }
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            PortFailure::retryable(format!("{operation}: {}", DisplayErrorContext(err)))
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() || d.is_other() => {
            PortFailure::retryable(format!("{operation}: {}", DisplayErrorContext(err)))
        }
        // A user error in dispatch (bad endpoint URL, TLS config) or a construction failure
        // (a required field missing) will fail the same way every time.
        _ => PortFailure::permanent(format!("{operation}: {}", DisplayErrorContext(err))),
    };
    tracing::debug!(operation, retryable = failure.retryable, error = %failure.message, "AWS call failed");
    failure
}

/// The retry classifier the KVS clients carry: the SDK's standard classifiers do not know
/// `ClientLimitExceededException`, KVS's throttle (HTTP 400, see the KVS API reference's
/// "Errors" sections and the WebRTC quotas page), so a throttled call would fail at once. This
/// one reads the error code from the response (the `x-amzn-ErrorType` header, else the JSON
/// body's `__type`) and calls it throttling, so that the standard strategy retries it with
/// exponential backoff and jitter. One type serves both KVS SDK crates (they share the runtime).
#[derive(Debug, Default, Clone, Copy)]
pub struct KvsThrottleClassifier;

/// The error code in a KVS error response, without the namespace KVS may append or prepend.
fn kvs_error_code(resp: &HttpResponse) -> Option<String> {
    let strip = |c: &str| {
        let c = c.split(':').next().unwrap_or(c);
        c.rsplit('#').next().unwrap_or(c).trim().to_owned()
    };
    if let Some(h) = resp.headers().get("x-amzn-errortype") {
        return Some(strip(h));
    }
    let body: serde_json::Value = serde_json::from_slice(resp.body().bytes()?).ok()?;
    body.get("__type")
        .or_else(|| body.get("code"))
        .and_then(serde_json::Value::as_str)
        .map(strip)
}

impl ClassifyRetry for KvsThrottleClassifier {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response() {
            Some(resp)
                if resp.status().as_u16() == 400
                    && kvs_error_code(resp).as_deref() == Some("ClientLimitExceededException") =>
            {
                RetryAction::throttling_error()
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "KVS ClientLimitExceededException is throttling"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        assert!(is_retryable_code(Some("ThrottlingException"), Some(400)));
        assert!(is_retryable_code(
            Some("ClientLimitExceededException"),
            Some(400)
        ));
        assert!(is_retryable_code(
            Some("ProvisionedThroughputExceededException"),
            Some(400)
        ));
        assert!(is_retryable_code(None, Some(503)));
        assert!(is_retryable_code(Some("Whatever"), Some(429)));
        assert!(is_retryable_code(Some("InternalServerError"), None));
    }

    #[test]
    fn client_errors_are_permanent() {
        assert!(!is_retryable_code(Some("AccessDeniedException"), Some(403)));
        assert!(!is_retryable_code(Some("ValidationException"), Some(400)));
        assert!(!is_retryable_code(
            Some("InvalidArgumentException"),
            Some(400)
        ));
        assert!(!is_retryable_code(None, None));
    }
}
