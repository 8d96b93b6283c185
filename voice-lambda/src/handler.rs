//! The handler: adapts API Gateway WebSocket route events and scheduled events to the shared
//! [`Executor`] (the same one the self-hosted server calls), and its reply frames to proxy
//! responses with an HTTP status.
//!
//! It holds no logic of its own beyond that translation: the body of every route but
//! `$connect`/`$disconnect` is handed to [`Executor::handle`] as a text frame, so a request gets
//! the same reply bytes as on the self-hosted server. Every outcome of a WebSocket event,
//! including a malformed event and a panic below, is a response with a status and a reply
//! frame; only a failed sweep fails the invocation, so that it shows in the function's error
//! metrics.

use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use http::header::CONTENT_TYPE;
use http::HeaderValue;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, Instrument, Span};
use voice_domain::errors::{ErrorClass, SweepError};
use voice_domain::ports::Ports;
use voice_domain::protocol::{Reply, WireError};
use voice_domain::service::{DisconnectReport, SweepReport};
use voice_domain::{ConnectionId, UseCaseError as _};
use voice_executor::{binary_frame_reply, Executor};

use crate::custom_resource::{
    delete_reason, is_delete, send_answer, CustomResourceAnswer, TEARDOWN_BUDGET,
};
use crate::event::{classify, Invocation};
use voice_adapters_aws::{derive_endpoint, with_request_endpoint, with_source_ip};

/// Route key of API Gateway's connect notification.
pub const CONNECT_ROUTE: &str = "$connect";
/// Route key of API Gateway's disconnect notification.
pub const DISCONNECT_ROUTE: &str = "$disconnect";
/// Route key API Gateway uses when no route matches the body's `action`.
pub const DEFAULT_ROUTE: &str = "$default";

/// What an invocation returns: a proxy response for a WebSocket event, the sweep's report for a
/// scheduled event. Serialised without a tag, as Lambda expects the bare object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LambdaOutput {
    /// The reply to a WebSocket route event.
    WebSocket(ApiGatewayProxyResponse),
    /// What a scheduled sweep changed.
    Sweep(SweepReportView),
    /// The answer sent to CloudFormation for a custom resource request (returned too, for
    /// logs and tests).
    CustomResource(CustomResourceAnswer),
}

/// The sweep's report on the wire (the domain's report is not a wire type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReportView {
    /// Rooms ended because nobody live was in them.
    pub rooms_ended: Vec<String>,
    /// Participants removed because their reconnect grace had passed.
    pub participants_removed: usize,
    /// Participants marked reconnecting because their connection was found gone.
    pub participants_reconnecting: usize,
    /// Orphan channels deleted.
    pub channels_deleted: usize,
    /// Pooled channels nobody held, put back into the pool in quarantine.
    pub leases_reclaimed: usize,
    /// Pooled channels deleted after being idle longer than `CHANNEL_POOL_IDLE_HOURS`.
    pub channels_evicted: usize,
    /// Steps that failed; the next sweep retries them.
    pub failures: usize,
}

impl From<&SweepReport> for SweepReportView {
    fn from(r: &SweepReport) -> Self {
        Self {
            rooms_ended: r.rooms_ended.iter().map(ToString::to_string).collect(),
            participants_removed: r.participants_removed,
            participants_reconnecting: r.participants_reconnecting,
            channels_deleted: r.channels_deleted,
            leases_reclaimed: r.leases_reclaimed,
            channels_evicted: r.channels_evicted,
            failures: r.failures,
        }
    }
}

/// `$disconnect` reply data (API Gateway discards it; it is for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectView {
    /// Voice rooms the connection was removed from (only with a zero reconnect grace).
    pub rooms_left: Vec<String>,
    /// Voice rooms in which its participant is now reconnecting (resumable for the grace).
    pub rooms_reconnecting: Vec<String>,
}

impl From<&DisconnectReport> for DisconnectView {
    fn from(r: &DisconnectReport) -> Self {
        Self {
            rooms_left: r.rooms_left.iter().map(ToString::to_string).collect(),
            rooms_reconnecting: r
                .rooms_reconnecting
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

/// Why an invocation failed instead of replying. Only scheduled sweeps fail invocations:
/// WebSocket callers always get a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The sweep could not list rooms or channels; the next schedule retries.
    #[error("scheduled sweep failed: {0}")]
    Sweep(#[from] SweepError),
    /// The sweep panicked (a bug); the next schedule retries.
    #[error("scheduled sweep failed: internal error (see the preceding log line)")]
    Panicked,
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Self {
        Diagnostic {
            error_type: match e {
                HandlerError::Sweep(_) => "SweepFailed",
                HandlerError::Panicked => "SweepPanicked",
            }
            .into(),
            error_message: e.to_string(),
        }
    }
}

/// The HTTP status for a refusal class.
pub fn status_of(class: ErrorClass) -> u16 {
    match class {
        ErrorClass::BadRequest => 400,
        ErrorClass::Unauthenticated => 401,
        ErrorClass::Forbidden => 403,
        ErrorClass::NotFound => 404,
        ErrorClass::Conflict => 409,
        ErrorClass::Unavailable => 503,
        ErrorClass::Internal => 500,
    }
}

/// The Lambda function over one set of adapters. Cheap to clone.
pub struct VoiceLambda<P: Ports> {
    executor: Executor<P>,
}

impl<P: Ports> Clone for VoiceLambda<P> {
    fn clone(&self) -> Self {
        Self {
            executor: self.executor.clone(),
        }
    }
}

impl<P: Ports> VoiceLambda<P> {
    /// A handler over `executor`, which is built once per instance (cold start).
    pub fn new(executor: Executor<P>) -> Self {
        Self { executor }
    }

    /// Handles one invocation.
    ///
    /// # Errors
    /// [`HandlerError`] only for a scheduled sweep that could not run; every WebSocket event
    /// gets `Ok` with a response, malformed or not.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<LambdaOutput, HandlerError> {
        let (payload, context) = event.into_parts();
        let invocation = match classify(payload) {
            Ok(i) => i,
            Err(e) => {
                return Ok(LambdaOutput::WebSocket(refuse(
                    None,
                    String::new(),
                    400,
                    WireError::bad_request(e.0),
                )))
            }
        };
        match invocation {
            Invocation::CustomResource(request) => {
                info!(aws_request_id = %context.request_id, delete = is_delete(&request), "custom resource request");
                let reason = if is_delete(&request) {
                    let voice = Arc::clone(self.executor.voice());
                    let teardown = guarded(async move {
                        tokio::time::timeout(TEARDOWN_BUDGET, voice.teardown()).await
                    })
                    .await;
                    let outcome = match teardown {
                        Some(Ok(Ok(report))) => Some(Ok(report)),
                        Some(Ok(Err(e))) => {
                            error!(error = %e, code = e.code(), "teardown could not list the channels");
                            Some(Err(e.to_string()))
                        }
                        Some(Err(_elapsed)) => {
                            error!(
                                budget_secs = TEARDOWN_BUDGET.as_secs(),
                                "teardown ran out of time"
                            );
                            None
                        }
                        None => Some(Err("internal error (see the preceding log line)".into())),
                    };
                    delete_reason(outcome)
                } else {
                    "nothing to do until the stack is deleted".to_owned()
                };
                let answer = CustomResourceAnswer::success(&request, reason);
                send_answer(&request.response_url, &answer).await;
                Ok(LambdaOutput::CustomResource(answer))
            }
            Invocation::Scheduled => {
                info!(aws_request_id = %context.request_id, "scheduled sweep");
                let voice = Arc::clone(self.executor.voice());
                match guarded(async move { voice.sweep().await }).await {
                    Some(Ok(report)) => {
                        info!(
                            rooms_ended = report.rooms_ended.len(),
                            participants_removed = report.participants_removed,
                            channels_deleted = report.channels_deleted,
                            leases_reclaimed = report.leases_reclaimed,
                            channels_evicted = report.channels_evicted,
                            failures = report.failures,
                            "sweep done"
                        );
                        Ok(LambdaOutput::Sweep((&report).into()))
                    }
                    Some(Err(e)) => {
                        error!(error = %e, code = e.code(), "sweep failed");
                        Err(e.into())
                    }
                    None => Err(HandlerError::Panicked),
                }
            }
            Invocation::WebSocket(request) => {
                let request_id = body_request_id(&request);
                let action = request
                    .request_context
                    .route_key
                    .clone()
                    .unwrap_or_default();
                let executor = self.executor.clone();
                let response = guarded(async move { websocket(&executor, *request).await })
                    .await
                    .unwrap_or_else(|| {
                        refuse(
                            request_id,
                            action,
                            500,
                            WireError {
                                code: "INTERNAL".into(),
                                message: "internal error; the request may not have completed, \
                                    check the voice room's state before retrying"
                                    .into(),
                                retryable: false,
                            },
                        )
                    });
                Ok(LambdaOutput::WebSocket(response))
            }
        }
    }
}

/// Runs `fut` on its own task so that a panic below becomes `None` (and a log line) instead of
/// a failed invocation without a reply.
async fn guarded<T, F>(fut: F) -> Option<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(fut.instrument(Span::current())).await {
        Ok(v) => Some(v),
        Err(e) => {
            error!(error = %e, "handler panicked");
            None
        }
    }
}

/// The body's `requestId`, to echo in a refusal the executor never saw (only when the body is
/// an object and it is a string).
fn body_request_id(request: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    let body: Value = serde_json::from_str(request.body.as_deref()?).ok()?;
    body.get("requestId")?.as_str().map(str::to_owned)
}

async fn websocket<P: Ports>(
    executor: &Executor<P>,
    request: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let context = &request.request_context;
    let Some(route) = context.route_key.clone().filter(|r| !r.is_empty()) else {
        return refuse(
            body_request_id(&request),
            String::new(),
            400,
            WireError::bad_request(
                "requestContext.routeKey is missing: this function serves API Gateway WebSocket \
                 routes; invoke it through the WebSocket API or put the route in \
                 requestContext.routeKey",
            ),
        );
    };
    let caller = match context.connection_id.as_deref() {
        None | Some("") => {
            return refuse(
                body_request_id(&request),
                route,
                400,
                WireError::bad_request(
                    "requestContext.connectionId is missing: the caller is identified by its \
                     WebSocket connection",
                ),
            )
        }
        Some(c) => match ConnectionId::parse(c) {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    body_request_id(&request),
                    route,
                    400,
                    WireError::bad_request(format!("requestContext.connectionId is invalid: {e}")),
                )
            }
        },
    };
    let endpoint = derive_endpoint(context.domain_name.as_deref(), context.stage.as_deref());
    let span = tracing::info_span!("route", connection_id = %caller);
    let work = async {
        match route.as_str() {
            // Accepting the socket; who the caller is comes with `hello` (chat) or from the
            // chat app's connections table (voice only).
            CONNECT_ROUTE => respond(200, &Reply::ok(None, route.clone(), serde_json::json!({}))),
            DISCONNECT_ROUTE => match executor.disconnect(&caller).await {
                Ok(report) => {
                    info!(
                        rooms_reconnecting = report.rooms_reconnecting.len(),
                        rooms_left = report.rooms_left.len(),
                        "disconnected"
                    );
                    respond(
                        200,
                        &Reply::ok(None, route.clone(), DisconnectView::from(&report)),
                    )
                }
                Err(e) => {
                    error!(error = %e, "disconnect clean-up failed; the sweep will finish it");
                    refuse(None, route, 503, WireError::from_use_case(&e))
                }
            },
            // Every other route (an action's own route or `$default`) carries a request frame.
            _ if request.is_base64_encoded => text_response(400, binary_frame_reply()),
            _ => {
                let body = request.body.as_deref().unwrap_or_default();
                let handled = executor.handle(&caller, body).await;
                let status = handled.refused.map_or(200, status_of);
                text_response(status, handled.frame)
            }
        }
    };
    // API Gateway sets the caller's address on every WebSocket route event; the sign-up gate
    // charges new users to it.
    // https://docs.aws.amazon.com/apigateway/latest/developerguide/websocket-api-mapping-template-reference.html
    let source_ip = context.identity.source_ip.clone();
    with_request_endpoint(endpoint, with_source_ip(source_ip, work.instrument(span))).await
}

fn refuse(
    request_id: Option<String>,
    action: String,
    status: u16,
    error: WireError,
) -> ApiGatewayProxyResponse {
    let logged = voice_executor::logsafe::text(&action);
    match status {
        500.. => error!(action = %logged, status, code = %error.code, "refused"),
        _ => info!(action = %logged, status, code = %error.code, "refused"),
    }
    respond(status, &Reply::<()>::err(request_id, action, error))
}

/// A proxy response with a JSON body; falls back to a fixed 500 body if serialisation fails.
fn respond<T: Serialize>(status: u16, reply: &Reply<T>) -> ApiGatewayProxyResponse {
    match serde_json::to_string(reply) {
        Ok(body) => text_response(status, body),
        Err(e) => {
            error!(error = %e, "could not serialise the reply");
            text_response(
                500,
                r#"{"type":"reply","action":"","ok":false,"error":{"code":"INTERNAL","message":"the reply could not be encoded","retryable":false}}"#
                    .to_owned(),
            )
        }
    }
}

/// A proxy response carrying `body`, a JSON reply frame.
fn text_response(status: u16, body: String) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(body));
    response
}
