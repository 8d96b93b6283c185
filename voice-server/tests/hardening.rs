//! Hostile clients and bad networks against the self-hosted server, over real sockets: what
//! `tests/api` does not already cover (there: malformed frames, the frame size limit, the
//! action rate limit, Origin, CSP, abrupt disconnects and master hand-over).

#[path = "api/support.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use support::{room_with_member, spawn_app_with, TestApp, WAIT};

fn unlimited() -> voice_server::RateLimit {
    voice_server::RateLimit {
        burst: 1_000_000,
        per_second: 1_000_000.0,
    }
}

/// A request that makes the server write two frames to the caller back to back (the `message`
/// event, then the reply) must not wait for the client's delayed ACK: with Nagle's algorithm
/// on the server's socket every such round trip took ~40 ms (it was, before TCP_NODELAY).
#[tokio::test]
async fn back_to_back_frames_to_one_connection_are_not_held_back() {
    let app = spawn_app_with(|c| c.rate_limit = unlimited()).await;
    let (mut ada, _bo, room) = room_with_member(&app).await;
    let mut samples = Vec::new();
    for i in 0..41 {
        let t = Instant::now();
        ada.ok(
            "sendMessage",
            json!({"roomId": room, "text": format!("m{i}")}),
        )
        .await;
        samples.push(t.elapsed());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    assert!(
        median < Duration::from_millis(15),
        "median round trip {median:?} (all: {samples:?}): frames are being delayed (Nagle?)"
    );
}

/// A WebSocket client on a socket with a tiny receive buffer that never reads after it joined:
/// the slowest possible reader.
struct Sluggard {
    ws: WebSocketStream<TcpStream>,
    local: SocketAddr,
    user_id: String,
}

async fn sluggard(app: &TestApp) -> Sluggard {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(app.addr()).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (ws, _) = tokio_tungstenite::client_async(app.ws_url(), stream)
        .await
        .unwrap();
    let mut s = Sluggard {
        ws,
        local,
        user_id: String::new(),
    };
    let hello = s.request(json!({"action": "hello", "name": "Slow"})).await;
    s.user_id = hello["data"]["userId"].as_str().unwrap().to_owned();
    s
}

impl Sluggard {
    async fn request(&mut self, frame: Value) -> Value {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("reply in time")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "reply" {
                    return v;
                }
            }
        }
    }
}

/// The TCP state (`/proc/net/tcp`, hex) of the server's end of the connection from `client`.
#[cfg(target_os = "linux")]
fn server_side_state(server: SocketAddr, client: SocketAddr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |field: &str| {
        field
            .split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (port(f[1]) == Some(server.port()) && port(f[2]) == Some(client.port()))
            .then(|| f[3].to_owned())
    })
}

/// A reader that stops reading fills its bounded queue and is dropped (close 1008), while the
/// sender and the other members get every frame without delay; and the server really lets go
/// of the dropped connection instead of keeping its socket and writer alive for as long as the
/// client stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_dropped_without_stalling_anyone() {
    let app = spawn_app_with(|c| {
        c.rate_limit = unlimited();
        c.queue_capacity = 16;
    })
    .await;
    let (mut ada, mut bo, room) = room_with_member(&app).await;
    let mut slow = sluggard(&app).await;
    slow.request(json!({"action": "requestJoin", "roomId": room}))
        .await;
    ada.event("joinRequested").await;
    ada.ok(
        "approveJoin",
        json!({"roomId": room, "userId": slow.user_id}),
    )
    .await;
    // From here on the sluggard never reads.

    // Bo reads everything, concurrently, and checks the order.
    let bo_task = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let ev = bo.event("message").await;
            let text = ev["text"].as_str().unwrap().to_owned();
            if text == "end" {
                return n;
            }
            assert!(
                text.starts_with(&format!("{n}:")),
                "bo got message {text:.20} as #{n}"
            );
            n += 1;
        }
    });

    let pad = "x".repeat(1900);
    let mut sent = 0u64;
    let mut slowest = Duration::ZERO;
    let mut dropped = false;
    while sent < 20_000 {
        let t = Instant::now();
        ada.ok(
            "sendMessage",
            json!({"roomId": room, "text": format!("{sent}:{pad}")}),
        )
        .await;
        slowest = slowest.max(t.elapsed());
        sent += 1;
        if sent % 25 == 0 {
            let members = ada.ok("listMembers", json!({"roomId": room})).await;
            let slow_online = members["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["userId"] == slow.user_id.as_str())
                .map(|m| m["online"].clone());
            if slow_online == Some(json!(false)) {
                dropped = true;
                break;
            }
        }
    }
    assert!(
        dropped,
        "the sluggard was never dropped after {sent} messages"
    );
    ada.ok("sendMessage", json!({"roomId": room, "text": "end"}))
        .await;
    let bo_got = tokio::time::timeout(WAIT, bo_task).await.unwrap().unwrap();
    assert_eq!(bo_got, sent, "bo got every message, in order");
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?}: the slow reader stalled the sender"
    );
    eprintln!("slow reader dropped after {sent} messages of 2 KB; slowest round trip {slowest:?}");

    // The server closed its end although the client still does not read: no socket and no
    // writer task kept alive by a silent client.
    #[cfg(target_os = "linux")]
    {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut state = server_side_state(app.addr(), slow.local);
        while state.as_deref() == Some("01") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            state = server_side_state(app.addr(), slow.local);
        }
        assert_ne!(
            state.as_deref(),
            Some("01"),
            "the server's socket to the dropped client is still ESTABLISHED"
        );
    }

    // When the sluggard finally reads, what was queued drains and the close says why.
    let code = loop {
        match tokio::time::timeout(WAIT, slow.ws.next())
            .await
            .expect("frames in time")
        {
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => break None,
        }
    };
    assert!(
        code.is_none() || code == Some(1008),
        "closed with {code:?}, not 1008 (policy: too slow)"
    );
}
