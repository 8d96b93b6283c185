//! Test harness: a real server on 127.0.0.1:0 (through the library API), a WebSocket client that
//! speaks the protocol (request ids, replies, buffered events), and a tiny HTTP/1.1 client.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voice_server::{Config, RunningServer};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running server; dropping it shuts the server down.
pub struct TestApp {
    pub server: RunningServer,
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// A connected, not yet identified client.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A client that said hello as `name`.
    pub async fn user(&self, name: &str) -> Client {
        let mut c = self.connect().await;
        let d = c.ok("hello", json!({ "name": name })).await;
        c.user_id = d["userId"].as_str().expect("userId").to_owned();
        c.connection_id = d["connectionId"].as_str().unwrap_or_default().to_owned();
        c.name = name.to_owned();
        c
    }
}

/// Spawns a server with the defaults on an ephemeral port.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns a server after `tweak` adjusted the config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::ephemeral();
    config.token_secret = Some(voice_domain::ports::Secret::new(
        "integration-test-token-secret-0123",
    ));
    // Every test client comes from 127.0.0.1, and the tests' traffic is not what the
    // cross-connection abuse limits are about: those are off unless a test sets them
    // (abuse.rs does; the browser tests run the binary with the defaults).
    config.new_users_per_ip_per_hour = u32::MAX;
    config.user_rate_limit = voice_server::RateLimit {
        burst: u32::MAX,
        per_second: 1e12,
    };
    config.user_byte_limit = config.user_rate_limit;
    config.user_message_limit = config.user_rate_limit;
    tweak(&mut config);
    let server = voice_server::spawn(config).await.expect("server starts");
    TestApp { server }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client over a real WebSocket.
pub struct Client {
    ws: Ws,
    next_id: u64,
    events: VecDeque<Value>,
    pub user_id: String,
    pub name: String,
    /// The connection id the server gave this socket (from `hello`; empty before).
    pub connection_id: String,
    /// The last text frame read, byte for byte (for comparing replies across entrypoints).
    pub last_text: String,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket connects");
        Self {
            ws,
            next_id: 0,
            events: VecDeque::new(),
            user_id: String::new(),
            name: String::new(),
            connection_id: String::new(),
            last_text: String::new(),
        }
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send frame");
    }

    /// Sends a raw text frame; `Err` when the server has already closed or reset the socket
    /// (a flood test keeps sending until the server cuts it off).
    #[allow(dead_code)] // used by log_hygiene.rs, which includes this module; not by every test
    pub async fn try_send_text(
        &mut self,
        text: impl Into<String>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(Message::text(text.into())).await
    }

    /// Sends a raw binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send frame");
    }

    /// Reads the next JSON frame from the socket; `None` when the socket closed.
    async fn read_json(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame arrives in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    self.last_text = t.as_str().to_owned();
                    return Some(serde_json::from_str(t.as_str()).expect("server sends JSON"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next reply (any request id), buffering events seen before it.
    pub async fn next_reply(&mut self) -> Value {
        loop {
            let v = self
                .read_json()
                .await
                .expect("socket open while awaiting a reply");
            if v["type"] == "reply" {
                return v;
            }
            assert_eq!(v["type"], "event", "frames are replies or events: {v}");
            self.events.push_back(v);
        }
    }

    /// Sends `action` with `fields` and a fresh request id; returns the reply with that id.
    pub async fn request(&mut self, action: &str, fields: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let mut frame = fields;
        frame["action"] = json!(action);
        frame["requestId"] = json!(id);
        self.send_text(frame.to_string()).await;
        loop {
            let reply = self.next_reply().await;
            if reply["requestId"] == json!(id) {
                assert_eq!(reply["action"], json!(action));
                return reply;
            }
        }
    }

    /// A request that must succeed; returns its data.
    pub async fn ok(&mut self, action: &str, fields: Value) -> Value {
        let reply = self.request(action, fields).await;
        assert_eq!(reply["ok"], json!(true), "{action} should succeed: {reply}");
        reply["data"].clone()
    }

    /// A request that must be refused; returns its error code.
    pub async fn err(&mut self, action: &str, fields: Value) -> String {
        let reply = self.request(action, fields).await;
        assert_eq!(
            reply["ok"],
            json!(false),
            "{action} should be refused: {reply}"
        );
        assert!(reply.get("data").is_none());
        let e = &reply["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "every refusal says why: {reply}"
        );
        assert!(e["retryable"].is_boolean());
        e["code"].as_str().expect("error code").to_owned()
    }

    /// Waits for the next event named `name` (earlier events of other names stay buffered).
    pub async fn event(&mut self, name: &str) -> Value {
        self.event_within(name, WAIT).await
    }

    /// [`Client::event`] with a longer (or shorter) wait than [`WAIT`].
    pub async fn event_within(&mut self, name: &str, wait: Duration) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i).expect("index is valid");
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = tokio::time::timeout(left, self.read_json())
                .await
                .unwrap_or_else(|_| {
                    panic!("event {name} did not arrive; buffered: {:?}", self.events)
                })
                .unwrap_or_else(|| panic!("socket closed while waiting for event {name}"));
            if v["type"] == "event" && v["event"] == name {
                return v;
            }
            self.events.push_back(v);
        }
    }

    /// Asserts that no event named `name` arrives within `wait` (a round trip through the
    /// server first, so anything already sent is seen).
    pub async fn no_event(&mut self, name: &str, wait: Duration) {
        tokio::time::sleep(wait).await;
        // Flush: a round trip guarantees that frames queued before it have arrived.
        let _ = self.request("ping-flush", json!({})).await;
        assert!(
            !self.events.iter().any(|e| e["event"] == name),
            "unexpected {name} event: {:?}",
            self.events
        );
    }

    /// Drops buffered events.
    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    /// Waits for the server to close the socket; returns the close code if one was sent.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        self.closed_within(WAIT).await
    }

    /// [`Client::closed`] with another wait.
    pub async fn closed_within(&mut self, wait: Duration) -> Option<CloseCode> {
        loop {
            let msg = tokio::time::timeout(wait, self.ws.next())
                .await
                .expect("server closes in time");
            match msg {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Drops the TCP connection without a close handshake (a crashed tab).
    pub fn abort(self) {
        drop(self.ws);
    }
}

/// Opens the WebSocket with an `Origin` header; `Err((status, body))` when refused.
pub async fn connect_with_origin(url: &str, origin: &str) -> Result<Ws, (u16, String)> {
    let mut req = url.into_client_request().expect("valid url");
    req.headers_mut()
        .insert("Origin", origin.parse().expect("valid header"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected connect error {e}"),
    }
}

/// An HTTP response: status, lower-cased headers, body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// `GET path` over a fresh TCP connection (HTTP/1.1, `Connection: close`).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        headers.iter().all(|(k, _)| k != "transfer-encoding"),
        "this helper reads only content-length bodies"
    );
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// An admin with a chat room and an approved member: `(admin, member, room_id)`.
pub async fn room_with_member(app: &TestApp) -> (Client, Client, String) {
    let mut admin = app.user("Ada").await;
    let mut member = app.user("Bo").await;
    let room = admin.ok("createRoom", json!({"name": "General"})).await;
    let room_id = room["roomId"].as_str().expect("roomId").to_owned();
    approve(&mut admin, &mut member, &room_id).await;
    (admin, member, room_id)
}

/// `member` asks to join `room_id`, `admin` approves.
pub async fn approve(admin: &mut Client, member: &mut Client, room_id: &str) {
    let d = member.ok("requestJoin", json!({"roomId": room_id})).await;
    assert_eq!(d["state"], "pending");
    admin.event("joinRequested").await;
    admin
        .ok(
            "approveJoin",
            json!({"roomId": room_id, "userId": member.user_id}),
        )
        .await;
    member.event("joinApproved").await;
}
