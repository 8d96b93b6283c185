//! ApiGatewayNotifier: the happy path against moto (which serves the management API at its root
//! and never answers "gone"), and the error mapping against a small fake of the management API
//! on a stage path, since moto cannot produce `GoneException`.

use std::sync::{Arc, Mutex};

use aws_config::retry::RetryConfig;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use chat_domain::{ChatEvent, ChatEvents};
use voice_adapters_aws::notifier::CHAT_FAN_OUT_CONCURRENCY;
use voice_adapters_aws::testing::test_sdk_config;
use voice_adapters_aws::{
    ApiGatewayChatEvents, ApiGatewayNotifier, ChatTables, DynamoChat, EndpointNotifier,
};
use voice_domain::ports::{Notifier, NotifyError};
use voice_domain::protocol::EventEnvelope;
use voice_domain::VoiceEvent;

use crate::support::*;

fn event() -> VoiceEvent {
    VoiceEvent::MuteChanged {
        voice_room_id: vr("vr-1"),
        chat_room_id: chat("chat-1"),
        user: user("bob"),
        muted: true,
        server_muted: false,
    }
}

#[tokio::test]
async fn post_to_connection_sends_the_event_envelope() {
    let Some(m) = moto().await else { return };
    let capture = Capture::default();
    let conf = aws_sdk_apigatewaymanagement::config::Builder::from(&m.server.sdk_config())
        .endpoint_url(m.server.endpoint())
        .interceptor(capture.clone())
        .build();
    let notifier = ApiGatewayNotifier::new(aws_sdk_apigatewaymanagement::Client::from_conf(conf));
    notifier
        .send(&conn("L0SM9cOFvHcCIhw="), &event())
        .await
        .unwrap();

    let bodies = capture.bodies();
    assert_eq!(bodies.len(), 1);
    let sent: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    let want = serde_json::to_value(EventEnvelope::new(&event())).unwrap();
    assert_eq!(sent, want);
    assert_eq!(sent["type"], "event");
    assert_eq!(sent["event"], "muteChanged");
}

/// Received (connection id, body) pairs.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn fake_management(
    State(seen): State<Seen>,
    Path(id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    seen.lock().unwrap().push((id.clone(), body.to_vec()));
    let (status, kind) = match id.as_str() {
        "gone=" => (StatusCode::GONE, "GoneException"),
        "busy" => (StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"),
        "forbidden" => (StatusCode::FORBIDDEN, "ForbiddenException"),
        "broken" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
        ),
        _ => {
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{}".to_owned(),
            )
        }
    };
    (
        status,
        [("x-amzn-ErrorType", kind)],
        format!("{{\"message\":\"{kind}\"}}"),
    )
}

/// Serves `app` on 127.0.0.1 as a management API stage: its endpoint (`/prod`), an SDK config
/// pointing there without retries (each post is seen once), and the server task.
async fn serve_management(
    app: Router,
) -> (
    String,
    aws_config::SdkConfig,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = format!("http://{addr}/prod");
    let sdk = test_sdk_config(&endpoint)
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .build();
    (endpoint, sdk, server)
}

#[tokio::test]
async fn gone_and_other_errors_map_to_the_port_contract() {
    let seen: Seen = Arc::default();
    let (_, sdk, server) = serve_management(
        Router::new()
            .route("/prod/@connections/{id}", post(fake_management))
            .with_state(seen.clone()),
    )
    .await;
    let notifier = ApiGatewayNotifier::new(aws_sdk_apigatewaymanagement::Client::new(&sdk));

    notifier.send(&conn("live"), &event()).await.unwrap();
    assert_eq!(
        notifier.send(&conn("gone="), &event()).await,
        Err(NotifyError::Gone)
    );
    match notifier.send(&conn("busy"), &event()).await {
        Err(NotifyError::Unavailable(f)) => assert!(f.retryable, "{f:?}"),
        other => panic!("expected retryable, got {other:?}"),
    }
    match notifier.send(&conn("broken"), &event()).await {
        Err(NotifyError::Unavailable(f)) => assert!(f.retryable, "{f:?}"),
        other => panic!("expected retryable, got {other:?}"),
    }
    match notifier.send(&conn("forbidden"), &event()).await {
        Err(NotifyError::Unavailable(f)) => {
            assert!(!f.retryable, "{f:?}");
            assert!(f.message.contains("ForbiddenException"), "{}", f.message);
        }
        other => panic!("expected permanent, got {other:?}"),
    }
    let seen = seen.lock().unwrap().clone();
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["live", "gone=", "busy", "broken", "forbidden"],
        "stage path and id encoding"
    );
    server.abort();
}

/// How many posts the slow management API below holds at once, and the most it ever held.
#[derive(Default)]
struct InFlight {
    now: usize,
    max: usize,
    done: usize,
}

/// A management API that holds each post until `CHAT_FAN_OUT_CONCURRENCY` are in flight (or a
/// 2 s safety deadline passes), so the bound, not the machine's speed, decides the maximum.
async fn holding_management(
    State(state): State<Arc<(Mutex<InFlight>, tokio::sync::Notify)>>,
) -> impl IntoResponse {
    let (counts, changed) = &*state;
    {
        let mut c = counts.lock().unwrap();
        c.now += 1;
        c.max = c.max.max(c.now);
    }
    changed.notify_waiters();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let notified = changed.notified();
        if counts.lock().unwrap().now >= CHAT_FAN_OUT_CONCURRENCY
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
    {
        let mut c = counts.lock().unwrap();
        c.now -= 1;
        c.done += 1;
    }
    changed.notify_waiters();
    (StatusCode::OK, [("content-type", "application/json")], "{}")
}

/// One chat event to 24 connections (three batches of the bound): every one gets it, never more than
/// `CHAT_FAN_OUT_CONCURRENCY` posts at once (and that many do run together).
#[tokio::test]
async fn chat_events_fan_out_with_bounded_concurrency() {
    let state: Arc<(Mutex<InFlight>, tokio::sync::Notify)> = Arc::default();
    let (endpoint, sdk, server) = serve_management(
        Router::new()
            .route("/prod/@connections/{id}", post(holding_management))
            .with_state(Arc::clone(&state)),
    )
    .await;
    let notifier = EndpointNotifier::new(Some(endpoint), move |_: &str| {
        ApiGatewayNotifier::new(aws_sdk_apigatewaymanagement::Client::new(&sdk))
    });
    // Never called here (no connection is gone): a store on a closed port.
    let store = DynamoChat::new(
        aws_sdk_dynamodb::Client::new(&test_sdk_config("http://127.0.0.1:9")),
        ChatTables::new("Conns", "Rooms", "Users", "Messages"),
    );
    let events = ApiGatewayChatEvents::new(notifier, Arc::new(store));
    let to: Vec<_> = (0..24).map(|i| conn(&format!("c{i:02}"))).collect();
    events
        .push(
            &to,
            &ChatEvent::JoinDenied {
                room_id: "room-1".into(),
                user_id: "bob".into(),
            },
        )
        .await;
    let c = state.0.lock().unwrap();
    assert_eq!(c.done, 24, "every connection got the event");
    assert_eq!(
        c.max, CHAT_FAN_OUT_CONCURRENCY,
        "at most the bound at once, and the bound is used"
    );
    drop(c);
    server.abort();
}
