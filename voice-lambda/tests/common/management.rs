//! A recording stand-in of the API Gateway Management API, shared by the end-to-end tests:
//! `POST /{stage}/@connections/{connectionId}` records the posted frame; a connection marked
//! gone answers 410 `GoneException`, as API Gateway does for a closed socket
//! (<https://docs.aws.amazon.com/apigateway/latest/api/API_PostToConnection.html>: "GoneException
//! — The connection with the provided id no longer exists", HTTP 410). moto accepts posts but
//! exposes neither what was posted nor a `GoneException`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

#[derive(Default)]
struct Posts {
    /// (request path, connection id, event JSON)
    received: Vec<(String, String, Value)>,
    gone: HashSet<String>,
}

/// `POST /{stage}/@connections/{connectionId}` with the event as body; 410 `GoneException` for
/// connections marked gone, as API Gateway answers for a closed socket.
pub struct FakeManagement {
    addr: std::net::SocketAddr,
    posts: Arc<Mutex<Posts>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeManagement {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeManagement {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let posts: Arc<Mutex<Posts>> = Arc::default();
        let state = Arc::clone(&posts);
        let app = Router::new().fallback(move |uri: Uri, body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let path = percent_decode(uri.path());
                let Some((_, conn)) = path.split_once("/@connections/") else {
                    return (StatusCode::NOT_FOUND, "no such route").into_response();
                };
                let conn = conn.to_owned();
                let mut st = state.lock().unwrap();
                if st.gone.contains(&conn) {
                    return gone();
                }
                let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
                st.received.push((path.clone(), conn, event));
                StatusCode::OK.into_response()
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, posts, task }
    }

    pub fn endpoint(&self, stage: &str) -> String {
        format!("http://{}/{stage}", self.addr)
    }

    /// Takes the events posted to `connection` so far: (event name, full event).
    pub fn take(&self, connection: &str) -> Vec<Value> {
        let mut st = self.posts.lock().unwrap();
        let (mine, rest): (Vec<_>, Vec<_>) =
            st.received.drain(..).partition(|(_, c, _)| c == connection);
        st.received = rest;
        mine.into_iter().map(|(_, _, e)| e).collect()
    }

    pub fn paths(&self) -> Vec<String> {
        self.posts
            .lock()
            .unwrap()
            .received
            .iter()
            .map(|(p, _, _)| p.clone())
            .collect()
    }

    pub fn mark_gone(&self, connection: &str) {
        self.posts
            .lock()
            .unwrap()
            .gone
            .insert(connection.to_owned());
    }
}

fn gone() -> Response {
    (
        StatusCode::GONE,
        [
            ("x-amzn-ErrorType", "GoneException"),
            ("content-type", "application/json"),
        ],
        r#"{"message":"connection is gone"}"#,
    )
        .into_response()
}

/// The event names of posted frames, checking each is an event frame.
pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "event", "{e}");
            e["event"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}
