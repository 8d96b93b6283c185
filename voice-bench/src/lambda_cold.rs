//! Lambda cold start without AWS: the release `bootstrap` binary (voice-lambda) is started
//! against a minimal Lambda Runtime API on loopback (GET .../invocation/next, POST
//! .../invocation/{id}/response). Measured: process spawn to the first event handed out (init:
//! config, SDK clients) and to its response posted (first handled event). What AWS adds on top
//! (fetching the code, the micro-VM, the first DynamoDB round trip) is not in it.
//!
//! The event is a `$default` WebSocket event with an unknown action: the handler answers
//! `UNKNOWN_ACTION` without touching DynamoDB, so no request leaves the box (AWS endpoints are
//! also pointed at a closed loopback port).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::Notify;

use crate::report::{Report, ServerFigures};
use crate::stats::summarize;

#[derive(Default)]
struct Api {
    t0: Mutex<Option<Instant>>,
    handed_out: Mutex<Option<Duration>>,
    response: Mutex<Option<(Duration, String)>>,
    error: Mutex<Option<String>>,
    served: Mutex<bool>,
    done: Notify,
}

fn event() -> Value {
    json!({
        "requestContext": {
            "routeKey": "$default", "eventType": "MESSAGE", "messageDirection": "IN",
            "stage": "prod", "connectedAt": 1_795_000_000_000_i64,
            "requestTimeEpoch": 1_795_000_001_000_i64, "requestId": "bench-1",
            "extendedRequestId": "bench-1", "requestTime": "25/Nov/2026:06:00:00 +0000",
            "identity": {"sourceIp": "127.0.0.1"},
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "connectionId": "L0SM9cOFvHcCIhw=", "apiId": "bench"
        },
        "isBase64Encoded": false,
        "body": "{\"action\":\"benchColdStart\",\"requestId\":\"cold\"}"
    })
}

async fn next(State(api): State<Arc<Api>>) -> Response {
    let first = {
        let mut s = api.served.lock().unwrap_or_else(|p| p.into_inner());
        !std::mem::replace(&mut *s, true)
    };
    if !first {
        // One invocation per process: later polls wait until the process is killed.
        std::future::pending::<()>().await;
    }
    if let Some(t0) = *api.t0.lock().unwrap_or_else(|p| p.into_inner()) {
        *api.handed_out.lock().unwrap_or_else(|p| p.into_inner()) = Some(t0.elapsed());
    }
    let mut h = HeaderMap::new();
    h.insert(
        "Lambda-Runtime-Aws-Request-Id",
        HeaderValue::from_static("bench-1"),
    );
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 30_000;
    h.insert(
        "Lambda-Runtime-Deadline-Ms",
        HeaderValue::from_str(&deadline.to_string()).unwrap_or(HeaderValue::from_static("0")),
    );
    h.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:voice-lambda"),
    );
    h.insert("Content-Type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, h, event().to_string()).into_response()
}

async fn response(
    State(api): State<Arc<Api>>,
    UrlPath(_id): UrlPath<String>,
    body: String,
) -> StatusCode {
    if let Some(t0) = *api.t0.lock().unwrap_or_else(|p| p.into_inner()) {
        *api.response.lock().unwrap_or_else(|p| p.into_inner()) = Some((t0.elapsed(), body));
    }
    api.done.notify_one();
    StatusCode::ACCEPTED
}

async fn invocation_error(State(api): State<Arc<Api>>, body: String) -> StatusCode {
    *api.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
    api.done.notify_one();
    StatusCode::ACCEPTED
}

/// One cold start: (spawn → event handed out, spawn → response posted, the response body,
/// peak RSS KiB of the process).
async fn once(bootstrap: &Path) -> anyhow::Result<(Duration, Duration, String, u64)> {
    let api = Arc::new(Api::default());
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
        .route("/2018-06-01/runtime/init/error", post(invocation_error))
        .with_state(api.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cmd = Command::new(bootstrap);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "voice-lambda")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/voice-lambda")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCHONLY")
        .env("AWS_SECRET_ACCESS_KEY", "bench-only-not-a-secret")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CONNECTIONS_TABLE", "ChatConnections")
        .env("ROOMS_TABLE", "ChatRooms")
        .env("VOICE_ROOMS_TABLE", "VoiceRooms")
        .env("CHAT_MODE", "existing")
        .env(
            "KVS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/voice-kvs-client",
        )
        .env("APIGW_MANAGEMENT_ENDPOINT", "http://127.0.0.1:9/prod")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let t0 = Instant::now();
    *api.t0.lock().unwrap_or_else(|p| p.into_inner()) = Some(t0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bootstrap.display()))?;
    let pid = child.id().unwrap_or(0);
    let waited = tokio::time::timeout(Duration::from_secs(30), api.done.notified()).await;
    let hwm = crate::sys::sample(pid).map_or(0, |s| s.hwm_kib);
    let _ = child.kill().await;
    server.abort();
    if waited.is_err() {
        bail!("the bootstrap did not answer its first event in 30 s");
    }
    if let Some(e) = api.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        bail!("the bootstrap reported an error: {e}");
    }
    let handed = api
        .handed_out
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| anyhow!("no event handed out"))?;
    let (answered, body) = api
        .response
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| anyhow!("no response"))?;
    Ok((handed, answered, body, hwm))
}

/// `runs` cold starts of `bootstrap`; the headline latency is spawn → first response.
///
/// # Errors
/// A start that failed or answered something other than the expected refusal.
pub async fn cold_start(bootstrap: &Path, runs: usize) -> anyhow::Result<Report> {
    let load0 = crate::sys::loadavg();
    let mut init = Vec::new();
    let mut first = Vec::new();
    let mut hwm = 0;
    let mut sample_body = String::new();
    for _ in 0..runs.max(1) {
        let (h, a, body, peak) = once(bootstrap).await?;
        if !body.contains("UNKNOWN_ACTION") {
            bail!("unexpected first response: {body}");
        }
        init.push(h.as_nanos() as u64);
        first.push(a.as_nanos() as u64);
        hwm = hwm.max(peak);
        sample_body = body;
    }
    let size = std::fs::metadata(bootstrap)?.len();
    let latency = summarize(first);
    Ok(Report {
        scenario: "lambda-cold".into(),
        target: "lambda".into(),
        params: json!({"runs": runs, "bootstrap": bootstrap.display().to_string()}),
        throughput: 0.0,
        unit: "-".into(),
        latency,
        server: ServerFigures {
            rss_peak_mib: hwm as f64 / 1024.0,
            rss_end_mib: hwm as f64 / 1024.0,
            ..ServerFigures::default()
        },
        pinning: String::new(),
        server_cpu_us_each: None,
        generator_cpu_pct: 0.0,
        load: (load0, crate::sys::loadavg()),
        errors: 0,
        extra: json!({
            "spawnToEventHandedOut": summarize(init),
            "spawnToFirstResponse": latency,
            "binaryBytes": size,
            "firstResponse": sample_body,
        }),
    })
}
