//! The real `bootstrap` binary (`src/main.rs`) under a minimal Lambda Runtime API on 127.0.0.1:
//! what an operator sees when the function's environment is incomplete, and what API Gateway gets
//! back for bad input when everything between the runtime and the handler is real (the runtime
//! crate's polling, the event deserialisation, `main`'s wiring and its JSON logs).
//!
//! No event here reaches AWS: each is refused before any port is called, and every AWS endpoint
//! points at a closed loopback port so a regression fails instead of leaving the machine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::Notify;

const BOOTSTRAP: &str = env!("CARGO_BIN_EXE_voice-lambda");

/// What the binary posted back for one invocation: the response or an invocation error.
#[derive(Debug, Clone)]
enum Posted {
    Response(Value),
    Error(String),
}

#[derive(Default)]
struct RuntimeApi {
    events: Mutex<VecDeque<(String, Value)>>,
    posted: Mutex<Vec<(String, Posted)>>,
    init_error: Mutex<Option<String>>,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    let Some((id, event)) = lock(&api.events).pop_front() else {
        // Nothing left: hold the poll until the test kills the process.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 30_000;
    let mut h = HeaderMap::new();
    h.insert(
        "Lambda-Runtime-Aws-Request-Id",
        HeaderValue::from_str(&id).unwrap(),
    );
    h.insert(
        "Lambda-Runtime-Deadline-Ms",
        HeaderValue::from_str(&deadline.to_string()).unwrap(),
    );
    h.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:voice-lambda"),
    );
    h.insert("Content-Type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, h, event.to_string()).into_response()
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    lock(&api.posted).push((id, Posted::Response(value)));
    api.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    lock(&api.posted).push((id, Posted::Error(body)));
    api.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: String) -> StatusCode {
    *lock(&api.init_error) = Some(body);
    api.changed.notify_waiters();
    StatusCode::ACCEPTED
}

/// A Runtime API on an ephemeral loopback port, handing out `events` in order.
async fn runtime_api(events: Vec<(&str, Value)>) -> (SocketAddr, Arc<RuntimeApi>, Server) {
    let api = Arc::new(RuntimeApi::default());
    lock(&api.events).extend(events.into_iter().map(|(id, e)| (id.to_owned(), e)));
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(api.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, api, Server(task))
}

/// Stops the Runtime API when the test ends, however it ends.
struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The binary with a clean environment: only what a Lambda instance would set, plus `extra`.
fn bootstrap(runtime: SocketAddr, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BOOTSTRAP);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "voice-lambda")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/voice-lambda")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-only-not-a-secret")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

const FULL_ENV: &[(&str, &str)] = &[
    ("AWS_REGION", "us-east-1"),
    ("CONNECTIONS_TABLE", "ChatConnections"),
    ("ROOMS_TABLE", "ChatRooms"),
    ("VOICE_ROOMS_TABLE", "VoiceRooms"),
    (
        "KVS_ROLE_ARN",
        "arn:aws:iam::123456789012:role/voice-kvs-client",
    ),
    ("APIGW_MANAGEMENT_ENDPOINT", "http://127.0.0.1:9/prod"),
    // Voice only: the built-in chat would read its key from Secrets Manager at cold start.
    ("CHAT_MODE", "existing"),
];

#[tokio::test]
async fn a_cold_start_without_its_environment_exits_naming_every_missing_variable() {
    let (addr, _api, _server) = runtime_api(vec![]).await;
    let child = bootstrap(addr, &[("AWS_REGION", "us-east-1")])
        .spawn()
        .expect("start the bootstrap");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the bootstrap must exit by itself, not wait for events")
        .unwrap();
    assert!(!out.status.success(), "exited {:?}", out.status);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for var in [
        "CONNECTIONS_TABLE",
        "ROOMS_TABLE",
        "VOICE_ROOMS_TABLE",
        "KVS_ROLE_ARN",
    ] {
        assert!(text.contains(var), "{var} not named in: {text}");
    }
    // The log line CloudWatch shows is JSON, at level ERROR.
    let logged = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no JSON error log line in: {text}"));
    assert!(
        logged.to_string().contains("KVS_ROLE_ARN"),
        "the error log line names the variables: {logged}"
    );
}

#[tokio::test]
async fn bad_events_get_json_refusals_through_the_real_runtime() {
    let ws = |route: Option<&str>, body: &str| {
        let mut ctx = json!({
            "eventType": "MESSAGE", "messageDirection": "IN", "stage": "prod",
            "connectedAt": 1_795_000_000_000_i64, "requestTimeEpoch": 1_795_000_001_000_i64,
            "requestId": "r", "extendedRequestId": "r", "requestTime": "25/Nov/2026:06:00:00 +0000",
            "identity": {"sourceIp": "127.0.0.1"},
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "connectionId": "L0SM9cOFvHcCIhw=", "apiId": "abc"
        });
        if let Some(r) = route {
            ctx["routeKey"] = json!(r);
        }
        json!({"requestContext": ctx, "isBase64Encoded": false, "body": body})
    };
    let original: Value = serde_json::from_str(
        r#"{"requestContext":{"connectionId":"test"},"body":"{\"roomId\":\"test-room\"}"}"#,
    )
    .unwrap();
    let events = vec![
        ("original-console-test", original),
        ("not-json-body", ws(Some("createVoiceRoom"), "{not json")),
        (
            "unknown-action",
            ws(Some("$default"), r#"{"action":"launchRockets"}"#),
        ),
        ("not-an-event", json!([1, 2, 3])),
    ];
    let expected = events.len();
    let (addr, api, _server) = runtime_api(events).await;
    let mut child = bootstrap(addr, FULL_ENV).spawn().expect("start bootstrap");

    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let changed = api.changed.notified();
            if lock(&api.posted).len() >= expected || lock(&api.init_error).is_some() {
                return;
            }
            changed.await;
        }
    })
    .await;
    let _ = child.kill().await;
    assert!(
        lock(&api.init_error).is_none(),
        "init failed: {:?}",
        lock(&api.init_error)
    );
    waited.expect("the bootstrap answered every event within 30 s");

    let posted: Vec<(String, Posted)> = lock(&api.posted).clone();
    let reply = |id: &str| -> (u16, Value) {
        let (_, p) = posted
            .iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("nothing posted for {id}: {posted:?}"));
        let r = match p {
            Posted::Response(r) => r,
            Posted::Error(e) => panic!("{id} became an invocation error, not a JSON reply: {e}"),
        };
        let status = r["statusCode"].as_u64().expect("statusCode") as u16;
        let body: Value = serde_json::from_str(r["body"].as_str().expect("a string body"))
            .unwrap_or_else(|e| panic!("{id}: body is not JSON ({e}): {r}"));
        (status, body)
    };
    let code = |b: &Value| b["error"]["code"].as_str().map(str::to_owned);
    let message = |b: &Value| b["error"]["message"].as_str().unwrap_or("").to_owned();

    let (s, b) = reply("original-console-test");
    assert_eq!(s, 400, "{b}");
    assert_eq!(code(&b).as_deref(), Some("BAD_REQUEST"), "{b}");
    assert!(message(&b).contains("routeKey"), "{b}");

    let (s, b) = reply("not-json-body");
    assert_eq!(s, 400, "{b}");
    assert!(code(&b).is_some() && !message(&b).is_empty(), "{b}");

    let (s, b) = reply("unknown-action");
    assert_eq!(s, 400, "{b}");
    assert_eq!(code(&b).as_deref(), Some("UNKNOWN_ACTION"), "{b}");

    let (s, b) = reply("not-an-event");
    assert_eq!(s, 400, "{b}");
    assert!(code(&b).is_some(), "{b}");
}

/// A Secrets Manager stand-in (awsJson1_1, `POST /` with `X-Amz-Target`): answers
/// `GetSecretValue` with a 64-character key and records the target and the SigV4 credential
/// scope of each request.
async fn secrets_manager() -> (SocketAddr, Arc<Mutex<Vec<String>>>, Server) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/",
            post(
                |State(seen): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap| async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let auth = header("authorization");
                    let scope = auth
                        .split("Credential=")
                        .nth(1)
                        .and_then(|c| c.split(',').next())
                        .unwrap_or("")
                        .to_owned();
                    lock(&seen).push(format!("{} {scope}", header("x-amz-target")));
                    let body = json!({
                        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:resume-key-AbCdEf",
                        "Name": "resume-key",
                        "VersionId": "v1",
                        "SecretString": "k".repeat(64),
                        "VersionStages": ["AWSCURRENT"],
                        "CreatedDate": 1_795_000_000
                    });
                    (
                        StatusCode::OK,
                        [("content-type", "application/x-amz-json-1.1")],
                        body.to_string(),
                    )
                },
            ),
        )
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen, Server(task))
}

/// A per-service endpoint (`AWS_ENDPOINT_URL_SECRETS_MANAGER`) wins over the global
/// `AWS_ENDPOINT_URL`, as the SDK documents ("service-specific endpoints"). It once did not: the
/// Lambda copied the global endpoint onto every client, so a local stack with moto for DynamoDB
/// and its own stand-ins for the rest sent every call to moto. Here the global endpoint is a
/// closed port: the builtin cold start (which reads its resume key from Secrets Manager before
/// taking any event) only succeeds if the per-service one is used.
#[tokio::test]
async fn a_per_service_endpoint_overrides_the_global_aws_endpoint_url() {
    let (runtime, api, _runtime_server) = runtime_api(vec![]).await;
    let (secrets, seen, _secrets_server) = secrets_manager().await;
    let secrets_url = format!("http://{secrets}");
    let mut env: Vec<(&str, &str)> = FULL_ENV
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CHAT_MODE")
        .collect();
    env.extend([
        ("CHAT_MODE", "builtin"),
        ("USERS_TABLE", "ChatUsers"),
        ("MESSAGES_TABLE", "ChatMessages"),
        (
            "RESUME_KEY_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:resume-key-AbCdEf",
        ),
        // bootstrap() sets AWS_ENDPOINT_URL to a closed port.
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_url.as_str()),
    ]);
    let mut child = bootstrap(runtime, &env).spawn().expect("start bootstrap");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut log = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("voice-lambda ready") {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    assert!(
        matches!(ready, Ok(true)),
        "the cold start did not get ready (init error {:?}); log:\n{log}",
        lock(&api.init_error)
    );
    let seen = lock(&seen).clone();
    assert_eq!(
        seen.len(),
        1,
        "exactly one GetSecretValue, at the per-service endpoint: {seen:?}"
    );
    assert!(
        seen[0].starts_with("secretsmanager.GetSecretValue AKIDTESTONLY/")
            && seen[0].ends_with("/us-east-1/secretsmanager/aws4_request"),
        "a SigV4-signed GetSecretValue for us-east-1: {seen:?}"
    );
}
