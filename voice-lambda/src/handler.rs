//! The handler: translates API Gateway WebSocket route events and scheduled events into
//! [`VoiceService`] calls, and their results into [`Reply`] JSON with an HTTP status.
//!
//! It holds no logic of its own beyond that translation: parsing goes through
//! [`VoiceRequest`]/[`VoiceCommand`], refusals through [`UseCaseError`]/[`WireError`], data
//! through the protocol's views. Every outcome of a WebSocket event, including a malformed event
//! and a panic below, is a response with a status and a `{code, message}`; only a failed sweep
//! fails the invocation, so that it shows in the function's error metrics.

use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use http::header::CONTENT_TYPE;
use http::HeaderValue;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{error, info, warn, Instrument, Span};
use voice_domain::errors::{ErrorClass, SweepError};
use voice_domain::ports::Ports;
use voice_domain::protocol::{
    Reply, VoiceCommand, VoiceGrantView, VoiceRequest, VoiceRoomView, WireError, VOICE_ACTIONS,
};
use voice_domain::service::{DisconnectReport, SweepReport};
use voice_domain::{ConnectionId, UseCaseError, VoiceService};

use crate::event::{classify, Invocation};
use voice_adapters_aws::{derive_endpoint, with_request_endpoint};

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

/// `getVoiceRoom` reply data: `{"voiceRoom": VoiceRoomView | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveVoiceRoomView {
    /// The chat room's active voice room, or `null`.
    pub voice_room: Option<VoiceRoomView>,
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

/// The Lambda function over one set of adapters. Cheap to clone (one `Arc`).
pub struct VoiceLambda<P: Ports> {
    service: Arc<VoiceService<P>>,
}

impl<P: Ports> Clone for VoiceLambda<P> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
        }
    }
}

impl<P: Ports> VoiceLambda<P> {
    /// A handler over `service`, which is built once per instance (cold start).
    pub fn new(service: Arc<VoiceService<P>>) -> Self {
        Self { service }
    }

    /// The service, for callers that need it directly.
    pub fn service(&self) -> &Arc<VoiceService<P>> {
        &self.service
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
            Invocation::Scheduled => {
                info!(aws_request_id = %context.request_id, "scheduled sweep");
                let service = Arc::clone(&self.service);
                match guarded(async move { service.sweep().await }).await {
                    Some(Ok(report)) => {
                        info!(
                            rooms_ended = report.rooms_ended.len(),
                            participants_removed = report.participants_removed,
                            channels_deleted = report.channels_deleted,
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
                let service = Arc::clone(&self.service);
                let response = guarded(async move { websocket(&service, *request).await })
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

/// The body as a JSON object, or why it is not one.
fn body_object(request: &ApiGatewayWebsocketProxyRequest) -> Result<Map<String, Value>, String> {
    if request.is_base64_encoded {
        return Err(
            "binary frames are not supported; send the request as a JSON text frame".into(),
        );
    }
    let body = request.body.as_deref().unwrap_or_default();
    if body.trim().is_empty() {
        return Err(
            "the body is missing; send a JSON object such as {\"action\":\"createVoiceRoom\",\"roomId\":\"...\"}"
                .into(),
        );
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

/// The body's `requestId`, to echo (only when the body is an object and it is a string).
fn body_request_id(request: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    body_object(request)
        .ok()?
        .get("requestId")?
        .as_str()
        .map(str::to_owned)
}

async fn websocket<P: Ports>(
    service: &VoiceService<P>,
    request: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let body = body_object(&request);
    let request_id = body
        .as_ref()
        .ok()
        .and_then(|m| m.get("requestId"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let body_action = body
        .as_ref()
        .ok()
        .and_then(|m| m.get("action"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let context = &request.request_context;
    let Some(route) = context.route_key.clone().filter(|r| !r.is_empty()) else {
        return refuse(
            request_id,
            body_action.unwrap_or_default(),
            400,
            WireError::bad_request(format!(
                "requestContext.routeKey is missing: this function serves API Gateway WebSocket \
                 routes ({}, {DISCONNECT_ROUTE}, {DEFAULT_ROUTE}); invoke it through the \
                 WebSocket API or put the route in requestContext.routeKey",
                VOICE_ACTIONS.join(", ")
            )),
        );
    };
    let caller = match context.connection_id.as_deref() {
        None | Some("") => {
            return refuse(
                request_id,
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
                    request_id,
                    route,
                    400,
                    WireError::bad_request(format!("requestContext.connectionId is invalid: {e}")),
                )
            }
        },
    };
    let endpoint = derive_endpoint(context.domain_name.as_deref(), context.stage.as_deref());
    let span = tracing::info_span!("route", route = %route, connection_id = %caller);
    let work = async {
        if route == DISCONNECT_ROUTE {
            return match service.on_disconnect(&caller).await {
                Ok(report) => accept(request_id, route, &DisconnectView::from(&report)),
                Err(e) => refuse_use_case(request_id, route, &e),
            };
        }
        if !VOICE_ACTIONS.contains(&route.as_str()) {
            // `$default` (no route matched the body's action) or a route this function does not
            // serve: name what the caller asked for.
            let asked = if route == DEFAULT_ROUTE {
                body_action.unwrap_or(route)
            } else {
                route
            };
            return refuse(
                request_id,
                asked.clone(),
                400,
                WireError::unknown_action(&asked),
            );
        }
        let command = match parse_command(&route, body) {
            Ok(c) => c,
            Err(message) => return refuse(request_id, route, 400, WireError::bad_request(message)),
        };
        execute(service, &caller, request_id, command).await
    };
    with_request_endpoint(endpoint, work.instrument(span)).await
}

/// The body of a voice route as a validated command. The body's `action` may be absent (the
/// route says it) but must not contradict the route.
fn parse_command(
    route: &str,
    body: Result<Map<String, Value>, String>,
) -> Result<VoiceCommand, String> {
    let mut body = body?;
    match body.get("action") {
        None | Some(Value::Null) => {
            body.insert("action".into(), Value::from(route));
        }
        Some(Value::String(a)) if a == route => {}
        Some(other) => {
            return Err(format!(
                "the body's action {other} does not match the route {route:?}; omit it or send {route:?}"
            ))
        }
    }
    let request: VoiceRequest = serde_json::from_value(Value::Object(body))
        .map_err(|e| format!("invalid {route} request: {e}"))?;
    request
        .try_into_command()
        .map_err(|e| format!("invalid {route} request: {e}"))
}

async fn execute<P: Ports>(
    service: &VoiceService<P>,
    caller: &ConnectionId,
    request_id: Option<String>,
    command: VoiceCommand,
) -> ApiGatewayProxyResponse {
    let action = command.action().to_owned();
    match command {
        VoiceCommand::Create(chat_room) => match service.start_voice(caller, &chat_room).await {
            Ok(room) => accept(request_id, action, &VoiceRoomView::from(&room)),
            Err(e) => refuse_use_case(request_id, action, &e),
        },
        VoiceCommand::GetCredentials(voice_room) => {
            match service.join_voice(caller, &voice_room).await {
                Ok(grant) => accept(request_id, action, &VoiceGrantView::from(&grant)),
                Err(e) => refuse_use_case(request_id, action, &e),
            }
        }
        VoiceCommand::End(voice_room) => match service.end_voice(caller, &voice_room).await {
            Ok(room) => accept(request_id, action, &VoiceRoomView::from(&room)),
            Err(e) => refuse_use_case(request_id, action, &e),
        },
        VoiceCommand::Leave(voice_room) => match service.leave_voice(caller, &voice_room).await {
            Ok(room) => accept(request_id, action, &VoiceRoomView::from(&room)),
            Err(e) => refuse_use_case(request_id, action, &e),
        },
        VoiceCommand::SetMute(voice_room, muted) => {
            match service.set_mute(caller, &voice_room, muted).await {
                Ok(room) => accept(request_id, action, &VoiceRoomView::from(&room)),
                Err(e) => refuse_use_case(request_id, action, &e),
            }
        }
        VoiceCommand::Get(chat_room) => match service.active_voice(caller, &chat_room).await {
            Ok(room) => accept(
                request_id,
                action,
                &ActiveVoiceRoomView {
                    voice_room: room.as_ref().map(VoiceRoomView::from),
                },
            ),
            Err(e) => refuse_use_case(request_id, action, &e),
        },
    }
}

fn accept<T: Serialize>(
    request_id: Option<String>,
    action: String,
    data: &T,
) -> ApiGatewayProxyResponse {
    info!(action = %action, status = 200, "ok");
    respond(200, &Reply::ok(request_id, action, data))
}

fn refuse_use_case<E: UseCaseError>(
    request_id: Option<String>,
    action: String,
    e: &E,
) -> ApiGatewayProxyResponse {
    if let ErrorClass::Internal | ErrorClass::Unavailable = e.class() {
        // The use case's message hides the port's; the log keeps it (never with secrets).
        warn!(detail = ?e, "dependency failure");
    }
    refuse(
        request_id,
        action,
        status_of(e.class()),
        WireError::from_use_case(e),
    )
}

fn refuse(
    request_id: Option<String>,
    action: String,
    status: u16,
    error: WireError,
) -> ApiGatewayProxyResponse {
    match status {
        500.. => {
            error!(action = %action, status, code = %error.code, message = %error.message, "refused")
        }
        _ => {
            info!(action = %action, status, code = %error.code, message = %error.message, "refused")
        }
    }
    respond(status, &Reply::<()>::err(request_id, action, error))
}

/// A proxy response with a JSON body; falls back to a fixed 500 body if serialisation fails.
fn respond<T: Serialize>(status: u16, reply: &Reply<T>) -> ApiGatewayProxyResponse {
    let (status, body) = match serde_json::to_string(reply) {
        Ok(body) => (status, body),
        Err(e) => {
            error!(error = %e, "could not serialise the reply");
            (
                500,
                r#"{"type":"reply","action":"","ok":false,"error":{"code":"INTERNAL","message":"the reply could not be encoded","retryable":false}}"#
                    .to_owned(),
            )
        }
    };
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(body));
    response
}
