//! The generator's WebSocket client: real TCP sockets on loopback, spread over several
//! 127.0.0.x source addresses (each has its own ~28 000 ephemeral ports), speaking the JSON
//! protocol of docs/protocol.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A client WebSocket over a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// How long one request may wait for its reply before the run is declared broken.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens WebSockets to one server, rotating the source address.
#[derive(Debug)]
pub struct Dialer {
    addr: SocketAddr,
    url: String,
    sources: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

impl Dialer {
    /// Connections to `addr` (path `path`, e.g. `/ws`), from `sources` source addresses
    /// 127.0.0.2, 127.0.0.3, … (0: let the kernel pick, i.e. 127.0.0.1).
    pub fn new(addr: SocketAddr, path: &str, sources: u8) -> Self {
        Self {
            addr,
            url: format!("ws://{addr}{path}"),
            sources: (0..sources)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connects one WebSocket (TCP_NODELAY, as browsers do).
    ///
    /// # Errors
    /// Socket or handshake failure.
    pub async fn connect(&self) -> anyhow::Result<Ws> {
        let sock = TcpSocket::new_v4()?;
        if !self.sources.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            sock.bind(SocketAddr::new(IpAddr::V4(self.sources[i]), 0))
                .with_context(|| format!("bind {}", self.sources[i]))?;
        }
        let stream = tokio::time::timeout(REPLY_TIMEOUT, sock.connect(self.addr))
            .await
            .map_err(|_| anyhow!("connect timed out"))?
            .context("connect")?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default();
        let (ws, _) = tokio::time::timeout(
            REPLY_TIMEOUT,
            tokio_tungstenite::client_async_with_config(self.url.as_str(), stream, Some(config)),
        )
        .await
        .map_err(|_| anyhow!("handshake timed out"))?
        .context("WebSocket handshake")?;
        Ok(ws)
    }

    /// Connects a [`Conn`].
    ///
    /// # Errors
    /// As [`Dialer::connect`].
    pub async fn conn(&self) -> anyhow::Result<Conn> {
        Ok(Conn {
            ws: self.connect().await?,
            next_id: 0,
        })
    }
}

/// A protocol client: requests with ids, replies matched, events skipped.
pub struct Conn {
    /// The socket.
    pub ws: Ws,
    next_id: u64,
}

/// The next text frame, skipping pings; `None` when the socket closed.
///
/// # Errors
/// A socket error.
pub async fn next_text(ws: &mut Ws) -> anyhow::Result<Option<String>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Some(t.as_str().to_owned())),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

impl Conn {
    /// Sends `action` with `fields` and returns the reply's `data`, skipping events.
    ///
    /// # Errors
    /// A refusal (`action: CODE message`), a closed socket, or no reply in
    /// [`REPLY_TIMEOUT`].
    pub async fn request(&mut self, action: &str, fields: Value) -> anyhow::Result<Value> {
        match self.try_request(action, fields).await? {
            Ok(data) => Ok(data),
            Err((code, message)) => bail!("{action}: {code} {message}"),
        }
    }

    /// Sends `action` with `fields`: `Ok(Ok(data))` for an answer, `Ok(Err((code, message)))`
    /// for a refusal (which a flood expects: `RATE_LIMITED`, `QUOTA_EXCEEDED`).
    ///
    /// # Errors
    /// A closed socket, or no reply in [`REPLY_TIMEOUT`].
    pub async fn try_request(
        &mut self,
        action: &str,
        mut fields: Value,
    ) -> anyhow::Result<Result<Value, (String, String)>> {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        fields["action"] = json!(action);
        fields["requestId"] = json!(id);
        self.ws.send(Message::text(fields.to_string())).await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let text = tokio::time::timeout_at(deadline, next_text(&mut self.ws))
                .await
                .map_err(|_| anyhow!("{action}: no reply in {REPLY_TIMEOUT:?}"))??
                .ok_or_else(|| anyhow!("{action}: socket closed while awaiting the reply"))?;
            if !is_reply(&text) {
                continue;
            }
            let mut v: Value = serde_json::from_str(&text)?;
            if v["requestId"] != json!(id) {
                continue;
            }
            if v["ok"] == json!(true) {
                return Ok(Ok(v["data"].take()));
            }
            return Ok(Err((
                v["error"]["code"].as_str().unwrap_or("?").to_owned(),
                v["error"]["message"].as_str().unwrap_or("").to_owned(),
            )));
        }
    }

    /// Reads frames until an event named `event` arrives (replies and other events skipped).
    ///
    /// # Errors
    /// A closed socket or nothing within `wait`.
    pub async fn wait_event(&mut self, event: &str, wait: Duration) -> anyhow::Result<Value> {
        let needle = format!("\"event\":\"{event}\"");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let text = tokio::time::timeout_at(deadline, next_text(&mut self.ws))
                .await
                .map_err(|_| anyhow!("no {event} event in {wait:?}"))??
                .ok_or_else(|| anyhow!("socket closed while awaiting {event}"))?;
            if text.contains(&needle) {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// Reads and drops frames until the socket closes (a held, idle client still reads).
    pub async fn drain(mut self) {
        while let Ok(Some(_)) = next_text(&mut self.ws).await {}
    }
}

/// Whether a frame is a reply (cheap: the server and the Node relay both put `type` first).
pub fn is_reply(text: &str) -> bool {
    text.get(..40)
        .unwrap_or(text)
        .contains("\"type\":\"reply\"")
}

/// Reads the number after `"ts":` in a frame (the send timestamp the generator put in a signal
/// payload), without parsing the whole frame.
pub fn find_ts(text: &str) -> Option<u64> {
    let i = text.find("\"ts\":")? + 5;
    let digits = &text[i..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified_without_parsing() {
        assert!(is_reply(
            r#"{"type":"reply","requestId":"r1","action":"signal","ok":true,"data":{}}"#
        ));
        assert!(!is_reply(
            r#"{"type":"event","event":"signal","payload":{"type":"reply"}}"#
        ));
        assert_eq!(
            find_ts(r#"{"type":"event","payload":{"ts":12345,"sdp":"x"}}"#),
            Some(12345)
        );
        assert_eq!(find_ts(r#"{"payload":{}}"#), None);
    }
}
