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
use voice_adapters_aws::testing::test_sdk_config;
use voice_adapters_aws::ApiGatewayNotifier;
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

#[tokio::test]
async fn gone_and_other_errors_map_to_the_port_contract() {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/prod/@connections/{id}", post(fake_management))
        .with_state(seen.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let endpoint = format!("http://{addr}/prod");
    let sdk = test_sdk_config(&endpoint)
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .build();
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
