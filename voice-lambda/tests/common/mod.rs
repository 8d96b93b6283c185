//! Helpers shared by the handler tests: building invocation events as API Gateway and
//! EventBridge send them, and reading the handler's output.
#![allow(dead_code)]

pub mod aws_world;
pub mod management;

use aws_lambda_events::encodings::Body;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use voice_domain::ports::Ports;
use voice_lambda::{HandlerError, LambdaOutput, VoiceLambda};

/// A WebSocket route event shaped like API Gateway's (MESSAGE event with a text frame).
pub fn ws_event(route: &str, connection: &str, body: Option<Value>) -> Value {
    let mut event = json!({
        "requestContext": {
            "routeKey": route,
            "eventType": if route == "$disconnect" { "DISCONNECT" } else { "MESSAGE" },
            "extendedRequestId": "Xk2Ibd3FoAMFhDg=",
            "requestTime": "25/Nov/2026:06:00:00 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": 1_795_000_000_000_i64,
            "requestTimeEpoch": 1_795_000_001_000_i64,
            "identity": {"sourceIp": "203.0.113.7"},
            "requestId": "Xk2IbF_doAMFhDg=",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "connectionId": connection,
            "apiId": "abc123"
        },
        "isBase64Encoded": false
    });
    if let Some(mut b) = body {
        // API Gateway picks the route from the body's `action` (the API's route selection
        // expression is `$request.body.action`), so a body on an action's route names it.
        if !route.starts_with('$') && b.get("action").is_none() {
            if let Some(obj) = b.as_object_mut() {
                obj.insert("action".into(), Value::from(route));
            }
        }
        event["body"] = Value::String(b.to_string());
    }
    event
}

/// The same event with a raw (possibly invalid) body string.
pub fn ws_event_raw(route: &str, connection: &str, body: &str) -> Value {
    let mut e = ws_event(route, connection, None);
    e["body"] = Value::String(body.to_owned());
    e
}

/// An EventBridge scheduled event, as the 5-minute rule sends it.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-25T06:05:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/voice-sweep"],
        "detail": {}
    })
}

/// The handler's reply to a WebSocket event.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: i64,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Reply` JSON.
    pub body: Value,
}

impl Response {
    /// `error.code`, for refusals.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    /// `error.message`, for refusals.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    /// `data`, for successes.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

/// Invokes the handler as `lambda_runtime` would.
pub async fn invoke<P: Ports>(
    lambda: &VoiceLambda<P>,
    payload: Value,
) -> Result<LambdaOutput, HandlerError> {
    lambda
        .handle(LambdaEvent::new(payload, Context::default()))
        .await
}

/// Invokes with a WebSocket event and decodes the response (failing the test if the output is
/// not a proxy response with a JSON body).
pub async fn call<P: Ports>(lambda: &VoiceLambda<P>, payload: Value) -> Response {
    match invoke(lambda, payload).await {
        Ok(LambdaOutput::WebSocket(r)) => {
            let body = match r.body {
                Some(Body::Text(t)) => t,
                other => panic!("expected a text body, got {other:?}"),
            };
            Response {
                status: r.status_code,
                content_type: r
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: serde_json::from_str(&body).expect("the body is JSON"),
            }
        }
        other => panic!("expected a WebSocket response, got {other:?}"),
    }
}

/// Asserts a refusal's status, code, envelope and content type.
pub fn assert_refused(r: &Response, status: i64, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.code(), code, "{r:?}");
    assert_eq!(r.body["type"], "reply", "{r:?}");
    assert_eq!(r.body["ok"], false, "{r:?}");
    assert!(!r.message().is_empty(), "{r:?}");
    assert!(r.body.get("data").is_none(), "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
}

/// Asserts a success's status, envelope and content type.
pub fn assert_ok(r: &Response, action: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["type"], "reply", "{r:?}");
    assert_eq!(r.body["ok"], true, "{r:?}");
    assert_eq!(r.body["action"], action, "{r:?}");
    assert!(r.body.get("error").is_none(), "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
}

/// Logs to the test's captured output (shown when a test fails); `RUST_LOG` filters, default
/// `info`. Safe to call from every test.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}
