//! Issue 13 finding 6, over real sockets with the log captured: a forged newline in `action`
//! (or in any id) never starts a second log line, and a flood of frames over the rate limit
//! produces a bounded number of lines and ends with the flooder disconnected. Its own test
//! binary, because the capture is the process's global subscriber.

#[path = "api/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing_subscriber::util::SubscriberInitExt as _;

use support::spawn_app_with;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const FORGED: &str = "FORGED-LINE admin password reset";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_newlines_never_start_a_log_line_and_floods_are_logged_a_bounded_number_of_times() {
    let capture = Capture::default();
    let writer = capture.clone();
    voice_server::log_subscriber(
        voice_server::LogFormat::Text,
        "info,voice_server=debug",
        false,
        move || writer.clone(),
    )
    .try_init()
    .expect("this binary's only subscriber");
    let app = spawn_app_with(|c| {
        c.rate_limit = voice_server::RateLimit {
            burst: 20,
            per_second: 1.0,
        };
    })
    .await;
    let forged_action =
        format!("x\n2026-01-01T00:00:00.000000Z  WARN voice_server::auth: {FORGED}");

    // Forged lines in every user-controlled field the server reads for its logs.
    let mut ada = app.user("Ada").await;
    let room = ada.ok("createRoom", json!({"name": "Logs"})).await["roomId"]
        .as_str()
        .unwrap()
        .to_owned();
    for frame in [
        json!({"action": forged_action, "requestId": "f1"}),
        json!({"action": "listMembers", "requestId": format!("r\n{FORGED}"), "roomId": room}),
        json!({"action": "listMembers", "roomId": format!("{room}\n{FORGED}")}),
        json!({"action": "getVoiceRoom", "roomId": format!("x\r{FORGED}")}),
        json!({"action": "leaveVoiceRoom", "voiceRoomId": format!("v\u{2028}{FORGED}")}),
    ] {
        ada.send_text(frame.to_string()).await;
        ada.next_reply().await;
    }

    // A flood of 400 frames over the limit, each with the forged action.
    let mut flood = app.user("Flood").await;
    let frame = json!({"action": forged_action}).to_string();
    let mut sent = 0;
    let mut cut_off = false;
    for _ in 0..400 {
        // The server may close (and the kernel reset) the socket before all 400 are written.
        if flood.try_send_text(frame.clone()).await.is_err() {
            cut_off = true;
            break;
        }
        sent += 1;
    }
    let code = flood.closed_within(Duration::from_secs(30)).await;
    assert!(
        code == Some(CloseCode::Policy) || (cut_off && code.is_none()),
        "a connection that keeps flooding is closed with 1008 (or reset mid-flood): {code:?}"
    );
    // Ada is unaffected.
    ada.ok("listRooms", json!({})).await;
    drop(app);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = capture.text();
    assert!(logs.lines().count() > 5, "the capture works:\n{logs}");
    let forged: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("2026-01-01"))
        .collect();
    assert!(forged.is_empty(), "forged lines: {forged:?}");
    // No line is the forged text itself, and no raw forged action is logged at all.
    assert!(
        !logs.lines().any(|l| l.trim_start().starts_with(FORGED)),
        "{logs}"
    );
    assert!(!logs.contains("voice_server::auth"), "{logs}");
    let limited = logs.lines().filter(|l| l.contains("rate limited")).count();
    assert!(
        limited <= 2,
        "rate limiting is logged once per window, not per frame ({limited} lines for {sent} frames)"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("kept sending far over the rate limit")),
        "the disconnect is logged"
    );
    let total = logs.lines().count();
    assert!(
        total < 120,
        "{total} log lines for {sent} flooding frames: the log grows with the flood"
    );
    eprintln!("{total} log lines for {sent} flooding frames");
}
