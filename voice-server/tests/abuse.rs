//! The attacks of issue 13 (and the dead links of issue 12), re-run over real loopback sockets,
//! each bounded in count and time: a reader that never reads, slow or silent clients at every
//! stage (TCP, HTTP head, WebSocket before `hello`, WebSocket in voice), too many connections
//! from one address, oversized and non-UTF-8 frames. Every test here failed before the limit it
//! checks existed.

mod server_process;
#[path = "api/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use support::{room_with_member, spawn_app_with, TestApp};

/// The longest any one of these tests waits for the server to act.
const DEADLINE: Duration = Duration::from_secs(30);

fn unlimited() -> voice_server::RateLimit {
    voice_server::RateLimit {
        burst: 1_000_000,
        per_second: 1_000_000.0,
    }
}

/// `getMessages` a slow reader sends: ~24 MB of replies in all. Issue 13 finding 1 asked for
/// 240 replies of 1.2 MB; a reply is now cut to the newest messages within 96 KiB
/// (`ChatLimits::history_bytes`), so it takes more asks to pile up as much.
const ASKS: usize = 250;

/// Sends `frame` and returns the next reply (events in between are skipped).
async fn request(ws: &mut WebSocketStream<TcpStream>, frame: Value) -> Value {
    ws.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
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

/// A WebSocket on a socket with a 4 KiB receive buffer, identified, owning a room with 100
/// messages of 2 000 `\u0001` (each JSON-escaped to 6 bytes), as in issue 13 finding 1.
async fn heavy_reader(app: &TestApp) -> (WebSocketStream<TcpStream>, String) {
    heavy_reader_at(app.addr(), &app.ws_url()).await
}

async fn heavy_reader_at(
    addr: std::net::SocketAddr,
    url: &str,
) -> (WebSocketStream<TcpStream>, String) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    request(&mut ws, json!({"action": "hello", "name": "Hog"})).await;
    static ROOMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = ROOMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let room = request(
        &mut ws,
        json!({"action": "createRoom", "name": format!("Heavy {n}")}),
    )
    .await;
    let room_id = room["data"]["roomId"].as_str().unwrap().to_owned();
    let text = "\u{1}".repeat(2000);
    for _ in 0..100 {
        let r = request(
            &mut ws,
            json!({"action": "sendMessage", "roomId": room_id, "text": text}),
        )
        .await;
        assert_eq!(r["ok"], true, "{r}");
    }
    (ws, room_id)
}

/// Sends `n` `getMessages` without reading anything (stops early if the server has already
/// closed the connection).
async fn ask_for_history(ws: &mut WebSocketStream<TcpStream>, room_id: &str, n: usize) {
    for i in 0..n {
        let frame =
            json!({"action": "getMessages", "roomId": room_id, "requestId": format!("g{i}")});
        if ws.send(Message::text(frame.to_string())).await.is_err() {
            return;
        }
    }
}

/// Reads until the server ends the connection; returns how many `getMessages` replies came
/// and the close code if one was sent. Panics if the connection is still open at the deadline.
async fn drain_until_closed(ws: &mut WebSocketStream<TcpStream>) -> (usize, Option<CloseCode>) {
    let mut replies = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!("the server did not close the slow reader ({replies} replies read)")
            });
        match m {
            Some(Ok(Message::Text(t))) => {
                if t.as_str().contains("\"action\":\"getMessages\"") {
                    replies += 1;
                }
            }
            Some(Ok(Message::Close(f))) => return (replies, f.map(|f| f.code)),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (replies, None),
        }
    }
}

/// Finding 1: ~24 MB of replies for a client that reads nothing. The queue used to be bounded
/// only in messages (256), so all of it stayed queued for as long as the client wished; now
/// a queue over 1 MiB closes the connection, and the client gets at most what was already
/// being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_closed_once_its_queue_passes_the_byte_limit() {
    let app = spawn_app_with(|c| c.rate_limit = unlimited()).await;
    let (mut ws, room_id) = heavy_reader(&app).await;
    ask_for_history(&mut ws, &room_id, ASKS).await;
    // Let the replies pile up before reading anything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (replies, _) = drain_until_closed(&mut ws).await;
    assert!(
        replies < ASKS,
        "the slow reader got all {replies} replies: its queue was never bounded in bytes"
    );
    eprintln!("slow reader closed after {replies} of {ASKS} replies of ~96 KiB");
}

/// Finding 1, the reply itself: a room of 100 heavily escaped messages answers `getMessages`
/// with the newest that fit in the history budget (default 96 KiB), oldest first, not 1.2 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_reply_carries_the_newest_messages_within_its_byte_budget() {
    let app = spawn_app_with(|c| c.rate_limit = unlimited()).await;
    let (mut ws, room_id) = heavy_reader(&app).await;
    request(
        &mut ws,
        json!({"action": "sendMessage", "roomId": room_id, "text": "the newest"}),
    )
    .await;
    let frame = json!({"action": "getMessages", "roomId": room_id, "requestId": "h"});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let reply = loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            if t.as_str().contains("\"requestId\":\"h\"") {
                break t.as_str().to_owned();
            }
        }
    };
    let budget = chat_domain::MESSAGE_HISTORY_BYTES;
    assert!(
        reply.len() <= budget + 1024,
        "a getMessages reply of {} bytes (budget {budget})",
        reply.len()
    );
    let v: Value = serde_json::from_str(&reply).unwrap();
    let msgs = v["data"]["messages"].as_array().unwrap();
    assert!(
        (2..100).contains(&msgs.len()),
        "{} messages in the reply",
        msgs.len()
    );
    assert_eq!(msgs.last().unwrap()["text"], "the newest", "newest last");
}

/// A client whose queue stays under the byte limit but that stops reading: the write makes no
/// progress and the connection is closed after `write_timeout` instead of being kept forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_makes_no_progress_closes_the_connection() {
    let app = spawn_app_with(|c| {
        c.rate_limit = unlimited();
        c.queue_bytes = 256 * 1024 * 1024;
        c.write_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(600);
        c.ping_interval = Duration::from_secs(300);
    })
    .await;
    let (mut ws, room_id) = heavy_reader(&app).await;
    // ~24 MB: far more than the kernel buffers between the two sockets hold.
    ask_for_history(&mut ws, &room_id, ASKS).await;
    // Read nothing for a while: the server's write is stuck.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (replies, _) = drain_until_closed(&mut ws).await;
    assert!(
        replies < ASKS,
        "the stalled connection was kept open: all {replies} replies arrived once it read"
    );
}

/// Issue 12, item 1: a participant whose link is dead (it sends nothing, not even pongs) is
/// closed after the idle timeout and leaves the voice room like any disconnect; a live client
/// that answers the pings stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_participant_is_closed_and_leaves_everyones_list() {
    let app = spawn_app_with(|c| {
        c.ping_interval = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(3);
        c.reconnect_grace = Duration::from_secs(2);
    })
    .await;
    let (mut ada, mut bo, room_id) = room_with_member(&app).await;
    let vr = ada.ok("createVoiceRoom", json!({"roomId": room_id})).await["voiceRoomId"]
        .as_str()
        .unwrap()
        .to_owned();
    bo.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    ada.clear_events();
    let bo_id = bo.user_id.clone();
    // Bo's link dies: his client no longer reads, so it never answers a ping. (Kept alive, not
    // dropped: the server must find out by itself.)
    // First shown as reconnecting (the grace for a blip), then gone when the grace runs out.
    let ev = ada.event_within("participantReconnecting", DEADLINE).await;
    assert_eq!(ev["user"], bo_id.as_str());
    let ev = ada.event_within("participantLeft", DEADLINE).await;
    assert_eq!(ev["user"], bo_id.as_str());
    assert_eq!(ev["reason"], "disconnected");
    // Ada, who kept reading (and so answered every ping), is still connected.
    ada.ok("getVoiceRoom", json!({"roomId": room_id})).await;
    drop(bo);
}

/// A WebSocket that never says `hello` is closed (1008) after the hello timeout.
#[tokio::test]
async fn a_websocket_that_never_identifies_is_closed() {
    let app = spawn_app_with(|c| c.hello_timeout = Duration::from_secs(1)).await;
    let mut anon = app.connect().await;
    assert_eq!(anon.closed_within(DEADLINE).await, Some(CloseCode::Policy));
    // One that identified in time stays.
    let mut ada = app.user("Ada").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ada.ok("listRooms", json!({})).await;
}

/// Reads a raw TCP connection until the server closes it; panics at the deadline.
async fn until_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the server closes the idle connection")
        .ok();
    out
}

/// Finding 2: bare TCP, a dribbled request head and an idle keep-alive connection are all
/// closed after the header-read timeout (they used to stay open indefinitely).
#[tokio::test]
async fn bare_dribbling_and_idle_http_connections_are_closed() {
    let app = spawn_app_with(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let mut bare = TcpStream::connect(app.addr()).await.unwrap();
    let mut dribble = TcpStream::connect(app.addr()).await.unwrap();
    dribble
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut keepalive = TcpStream::connect(app.addr()).await.unwrap();
    keepalive
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr()).as_bytes())
        .await
        .unwrap();
    assert!(until_eof(&mut bare).await.is_empty());
    until_eof(&mut dribble).await;
    let answered = String::from_utf8_lossy(&until_eof(&mut keepalive).await).into_owned();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

/// Finding 2: one address may hold at most `max_connections_per_ip` connections; the next one
/// gets a 503 (before any upgrade), and a slot frees when a connection closes.
#[tokio::test]
async fn connections_over_the_per_address_cap_get_503() {
    let app = spawn_app_with(|c| c.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app.connect().await);
    }
    let refused = support::http_get(app.addr(), "/healthz").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["code"], "TOO_MANY_CONNECTIONS");
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
    let upgrade = tokio_tungstenite::connect_async(app.ws_url()).await;
    assert!(upgrade.is_err(), "the upgrade is refused too");
    held.pop().unwrap().abort();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = support::http_get(app.addr(), "/healthz").await;
        if r.status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding 12: a frame over the size limit closes with 1009, text that is not UTF-8 with 1007
/// (both used to close with 1000).
#[tokio::test]
async fn oversized_and_non_utf8_frames_close_with_1009_and_1007() {
    let app = spawn_app_with(|_| {}).await;
    let mut big = app.user("Big").await;
    big.send_text("x".repeat(voice_server::ws::MAX_FRAME_BYTES + 1))
        .await;
    assert_eq!(big.closed_within(DEADLINE).await, Some(CloseCode::Size));

    let (mut raw, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    let frame = Frame::message(vec![0xff, 0xfe, b'{'], OpCode::Data(Data::Text), true);
    raw.send(Message::Frame(frame)).await.unwrap();
    let code = loop {
        match tokio::time::timeout(DEADLINE, raw.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.map(|f| f.code),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::Invalid));
}

/// The application-level `ping` is answered, before and after `hello`.
#[tokio::test]
async fn the_ping_action_is_answered_before_and_after_hello() {
    let app = spawn_app_with(|_| {}).await;
    let mut c = app.connect().await;
    c.send_text(r#"{"action":"ping","requestId":"p1"}"#).await;
    let reply = c.next_reply().await;
    assert_eq!(
        reply,
        json!({"type":"reply","requestId":"p1","action":"ping","ok":true,"data":{}})
    );
    let mut ada = app.user("Ada").await;
    assert_eq!(ada.ok("ping", json!({})).await, json!({}));
}

/// `GET <metrics-addr>/metrics` in the Prometheus text format, over a fresh TCP connection.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = support::http_get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The value of the sample line starting with `name` (labels included), 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Operator visibility: `/metrics` on its own address (not on the public one) counts open
/// connections, refusals by reason and slow-reader closes, and shows this server's voice rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_refusals_and_slow_readers_on_their_own_address() {
    let app = spawn_app_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c.max_connections_per_ip = 4;
        c.rate_limit = unlimited();
    })
    .await;
    let maddr = app.server.metrics_addr().expect("metrics are served");
    assert_eq!(support::http_get(app.addr(), "/metrics").await.status, 404);
    let before = scrape(maddr).await;
    assert_eq!(sample(&before, "voice_active_voice_rooms"), 0.0, "{before}");
    assert!(before.contains("voice_participants 0"), "{before}");
    let (mut ada, mut bo, room_id) = room_with_member(&app).await;
    let vr = ada.ok("createVoiceRoom", json!({"roomId": room_id})).await["voiceRoomId"].clone();
    ada.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    bo.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let during = scrape(maddr).await;
    assert!(sample(&during, "voice_open_websockets") >= 2.0, "{during}");
    assert_eq!(sample(&during, "voice_active_voice_rooms"), 1.0, "{during}");
    assert_eq!(sample(&during, "voice_participants"), 2.0, "{during}");
    assert_eq!(
        sample(&during, "voice_reconnecting_participants"),
        0.0,
        "{during}"
    );
    assert!(
        during.ends_with("# EOF\n"),
        "still one OpenMetrics document:\n{during}"
    );
    ada.ok("endVoiceRoom", json!({"voiceRoomId": vr})).await;
    let ended = scrape(maddr).await;
    assert_eq!(sample(&ended, "voice_active_voice_rooms"), 0.0, "{ended}");
    // Ada's and Bo's sockets and two bare ones fill the per-address cap of 4.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(app.addr()).await.unwrap());
    }
    assert_eq!(support::http_get(app.addr(), "/healthz").await.status, 503);
    let refused = r#"voice_rejected_connections_total{reason="max_connections_per_ip"}"#;
    let after = scrape(maddr).await;
    assert!(
        sample(&after, refused) >= sample(&before, refused) + 1.0,
        "{after}"
    );
    drop(held);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while support::http_get(app.addr(), "/healthz").await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ws, room_id) = heavy_reader(&app).await;
    ask_for_history(&mut ws, &room_id, ASKS).await;
    drain_until_closed(&mut ws).await;
    let end = scrape(maddr).await;
    for name in [
        "voice_slow_reader_closes_total",
        "voice_queued_bytes",
        "voice_signals_relayed_total",
        "voice_rate_limited_frames_total",
        "voice_open_connections",
    ] {
        assert!(end.contains(name), "{name} missing:\n{end}");
    }
    assert!(
        sample(&end, "voice_slow_reader_closes_total") >= 1.0,
        "{end}"
    );
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// A measurement, not a check (run with `--ignored --nocapture`; figures go to SECURITY.md):
/// the real binary's memory while the per-address maximum of slow readers (64, less the one
/// connection the cap leaves) each ask for ~24 MB of history and never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for SECURITY.md"]
async fn measure_memory_under_a_one_address_slow_reader_attack() {
    let mut server = server_process::ServerProcess::start_command(server_process::base_command(&[
        "--in-memory",
    ]))
    .await;
    let (url, addr, pid) = (server.ws_url(), server.addr(), server.pid());
    let (before, _) = rss_mib(pid);
    let mut socks = Vec::new();
    for _ in 0..60 {
        socks.push(heavy_reader_at(addr, &url).await);
    }
    let (loaded, _) = rss_mib(pid);
    for (ws, room) in &mut socks {
        ask_for_history(ws, room, ASKS).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (attacked, _) = rss_mib(pid);
    for (ws, _) in &mut socks {
        drain_until_closed(ws).await;
    }
    drop(socks);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, peak) = rss_mib(pid);
    eprintln!(
        "RSS MiB: start {before:.1}, 60 sockets with 100 big messages each {loaded:.1}, \
         under attack {attacked:.1}, after close {after:.1}, peak {peak:.1}"
    );
    server.terminate();
}

/// Finding 4: a per-connection limit is bypassed by opening more connections. The frames and
/// bytes of all of one user's connections come out of one budget; another user's is their own.
#[tokio::test]
async fn a_users_connections_share_one_frame_and_byte_budget() {
    let app = spawn_app_with(|c| {
        c.user_rate_limit = voice_server::RateLimit {
            burst: 12,
            per_second: 0.001,
        };
    })
    .await;
    let mut first = app.user("Mallory").await;
    let token = first.ok("hello", json!({ "name": "Mallory" })).await["resumeToken"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    // Two more tabs of the same user. A connection's frames count for its user from the frame
    // after its `hello`, so of these only the re-hello above (on an identified tab) was charged.
    let mut tabs = vec![first];
    for _ in 0..2 {
        let mut c = app.connect().await;
        c.ok("hello", json!({ "name": "Mallory", "resumeToken": token }))
            .await;
        tabs.push(c);
    }
    // 12 - 1 = 11 frames left for the user, whichever tab sends them.
    let (mut passed, mut limited) = (0, 0);
    for round in 0..5 {
        for tab in &mut tabs {
            let reply = tab.request("ping", json!({ "round": round })).await;
            if reply["ok"] == json!(true) {
                passed += 1;
            } else {
                assert_eq!(reply["error"]["code"], "RATE_LIMITED", "{reply}");
                let message = reply["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("all your connections together"),
                    "{message}"
                );
                limited += 1;
            }
        }
    }
    assert_eq!(
        (passed, limited),
        (11, 4),
        "one budget across three connections"
    );
    let mut other = app.user("Bystander").await;
    other.ok("ping", json!({})).await;

    // Bytes: two 40 KB frames from two connections of one user pass one connection's
    // limit each, but not the user's 64 KiB.
    let app = spawn_app_with(|c| {
        c.user_byte_limit = voice_server::RateLimit {
            burst: 64 * 1024,
            per_second: 1.0,
        };
    })
    .await;
    let mut a = app.user("Big").await;
    let token = a.ok("hello", json!({ "name": "Big" })).await["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut b = app.connect().await;
    b.ok("hello", json!({ "name": "Big", "resumeToken": token }))
        .await;
    let pad = "x".repeat(40_000);
    a.ok("ping", json!({ "pad": pad })).await;
    let reply = b.request("ping", json!({ "pad": pad })).await;
    assert_eq!(reply["error"]["code"], "RATE_LIMITED", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too much data")),
        "{reply}"
    );
}

/// A chat message costs the server a durable write and one frame per member of its room, so
/// the user's frame budget (100/s) let one script post 100 messages a second to a full room,
/// and a bystander's p99 doubled (BENCHMARKS.md "One-user floods"). Messages have a budget of
/// their own per user, across connections; other requests of that user still pass, and other
/// users are not affected.
#[tokio::test]
async fn a_users_chat_messages_have_their_own_budget_across_connections() {
    let app = spawn_app_with(|c| {
        c.user_message_limit = voice_server::RateLimit {
            burst: 3,
            per_second: 0.001,
        };
    })
    .await;
    let (mut ada, mut bo, room) = room_with_member(&app).await;
    let token = bo.ok("hello", json!({ "name": "Bo" })).await["resumeToken"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    let mut bo2 = app.connect().await;
    bo2.ok("hello", json!({ "name": "Bo", "resumeToken": token }))
        .await;
    let (mut posted, mut limited) = (0, 0);
    for i in 0..6 {
        let tab = if i % 2 == 0 { &mut bo } else { &mut bo2 };
        let reply = tab
            .request(
                "sendMessage",
                json!({ "roomId": room, "text": format!("m{i}") }),
            )
            .await;
        if reply["ok"] == json!(true) {
            posted += 1;
        } else {
            assert_eq!(reply["error"]["code"], "RATE_LIMITED", "{reply}");
            assert_eq!(reply["error"]["retryable"], true, "{reply}");
            let message = reply["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("sending messages too fast"), "{message}");
            limited += 1;
        }
    }
    assert_eq!(
        (posted, limited),
        (3, 3),
        "one message budget for both tabs"
    );
    // Other requests of the same user are not messages.
    bo2.ok("ping", json!({})).await;
    // Only what was acknowledged is stored, and the admin still posts.
    ada.ok(
        "sendMessage",
        json!({ "roomId": room, "text": "still here" }),
    )
    .await;
    let history = ada.ok("getMessages", json!({ "roomId": room })).await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2", "still here"], "{history}");
}

/// Finding 5: every `hello` without a resume token made a user row forever, so one address
/// could mint users (and a join request per user) without end. Past the per-address quota a
/// new user is refused and nothing is stored; a returning user with a saved session still
/// signs in.
#[tokio::test]
async fn new_users_per_address_are_capped_and_returning_users_are_not() {
    let app = spawn_app_with(|c| c.new_users_per_ip_per_hour = 2).await;
    let mut ann = app.user("Ann").await;
    let token = ann.ok("hello", json!({ "name": "Ann" })).await["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.user("Bob").await;
    let mut third = app.connect().await;
    assert_eq!(
        third.err("hello", json!({ "name": "Eve" })).await,
        "QUOTA_EXCEEDED"
    );
    assert_eq!(
        third.err("listRooms", json!({})).await,
        "NOT_IDENTIFIED",
        "a refused sign-up leaves the connection anonymous"
    );
    // A forged or stale token is no way around it: it would make a new user too.
    assert_eq!(
        third
            .err("hello", json!({ "name": "Eve", "resumeToken": "forged" }))
            .await,
        "QUOTA_EXCEEDED"
    );
    let mut back = app.connect().await;
    let d = back
        .ok("hello", json!({ "name": "Ann", "resumeToken": token }))
        .await;
    assert_eq!(
        d["userId"],
        json!(ann.user_id),
        "a saved session is not a sign-up"
    );
}
