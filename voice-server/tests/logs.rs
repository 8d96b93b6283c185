//! What the server writes to its logs, captured while a whole session runs over real sockets:
//! no secret, token or credential ever appears (at `trace` level, dependencies included: the
//! WebSocket library logs whole frames at `trace`, which `log_subscriber` drops), and
//! refused signals are reported (one line each, with why). Its own test binary, because the
//! capture is the process's global subscriber.

#[path = "api/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt as _;
use voice_domain::ports::Secret;

use support::{approve, spawn_app_with, Client};

const TOKEN_SECRET: &str = "log-test-token-secret-0123456789";
const TURN_SECRET: &str = "log-test-turn-secret-abcdefghij";

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

fn s(v: &serde_json::Value) -> String {
    v.as_str().expect("a string").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_or_credential_reaches_the_logs_and_refused_signals_are_reported() {
    let capture = Capture::default();
    let writer = capture.clone();
    // What the binary installs, at the most verbose level an operator could ask for.
    voice_server::log_subscriber(voice_server::LogFormat::Text, "trace", false, move || {
        writer.clone()
    })
    .try_init()
    .expect("this binary's only subscriber");

    let app = spawn_app_with(|c| {
        c.token_secret = Some(Secret::new(TOKEN_SECRET));
        c.turn_secret = Some(Secret::new(TURN_SECRET));
        c.ice_servers = vec![
            "stun:stun.example.test:3478".into(),
            "turn:turn.example.test:3478".into(),
        ];
    })
    .await;
    let mut secrets: Vec<String> = vec![TOKEN_SECRET.into(), TURN_SECRET.into()];

    // A session: chat, voice, credentials, signals (good and bad), a reload with a resume token.
    let mut ada = app.user("Ada").await;
    let mut bo = Client::connect(&app.ws_url()).await;
    let hello = bo.ok("hello", json!({"name": "Bo"})).await;
    bo.user_id = s(&hello["userId"]);
    let bo_resume = s(&hello["resumeToken"]);
    secrets.push(bo_resume.clone());
    let room = s(&ada.ok("createRoom", json!({"name": "Logged"})).await["roomId"]);
    approve(&mut ada, &mut bo, &room).await;
    let vr = s(&ada.ok("createVoiceRoom", json!({"roomId": room})).await["voiceRoomId"]);
    let mut tokens = Vec::new();
    for c in [&mut ada, &mut bo] {
        let g = c
            .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
            .await;
        tokens.push(s(&g["credentials"]["token"]));
        for ice in g["self"]["iceServers"].as_array().unwrap() {
            if let Some(cred) = ice["credential"].as_str() {
                secrets.push(cred.to_owned());
            }
        }
    }
    let (ada_token, bo_token) = (tokens[0].clone(), tokens[1].clone());
    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    bo.ok(
        "signal",
        json!({"voiceRoomId": vr, "token": bo_token, "to": ada.user_id, "kind": "offer", "payload": offer}),
    )
    .await;
    ada.event("signal").await;
    // Refused: a tampered token, another user's token, a signal outside the mesh.
    let tampered = format!("{bo_token}x");
    let (ada_id, bo_id) = (ada.user_id.clone(), bo.user_id.clone());
    for (token, to, kind, code) in [
        (&tampered, &ada_id, "offer", "UNAUTHORIZED"),
        (&ada_token, &ada_id, "offer", "UNAUTHORIZED"),
        (&bo_token, &bo_id, "candidate", "NOT_PEER"),
    ] {
        assert_eq!(
            bo.err(
                "signal",
                json!({"voiceRoomId": vr, "token": token, "to": to, "kind": kind, "payload": {}})
            )
            .await,
            code
        );
    }
    // A reload: resume token accepted; a forged one ignored.
    let mut bo2 = Client::connect(&app.ws_url()).await;
    let again = bo2
        .ok("hello", json!({"name": "Bo", "resumeToken": bo_resume}))
        .await;
    assert_eq!(again["resumed"], true);
    let mut eve = Client::connect(&app.ws_url()).await;
    eve.ok(
        "hello",
        json!({"name": "Eve", "resumeToken": format!("{bo_resume}Z")}),
    )
    .await;
    // A refresh issues a new token.
    let g = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    tokens.push(s(&g["credentials"]["token"]));
    ada.ok("endVoiceRoom", json!({"voiceRoomId": vr})).await;
    // Abrupt disconnects and shutdown are logged too.
    bo.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.server.shutdown().await.unwrap();

    let logs = capture.text();
    assert!(
        logs.lines().count() > 30,
        "the capture works ({} lines):\n{logs}",
        logs.lines().count()
    );
    for t in &tokens {
        secrets.push(t.clone());
        // The signature alone is the secret part of a token; the claims are not secret but a
        // whole token in a log is still a usable credential.
        secrets.push(t.split_once('.').unwrap().1.to_owned());
    }
    secrets.push(bo_resume.split_once('.').unwrap().1.to_owned());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret or token ({}…) is in the logs:\n{}",
            &secret[..secret.len().min(12)],
            logs.lines()
                .filter(|l| l.contains(secret.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Refused signals are reported, each with its reason.
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("signal refused"))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("bad token") && l.contains("signature")),
        "the tampered token is logged as such: {refused:?}"
    );
    assert!(
        refused.iter().any(|l| l.contains("another room or user")),
        "the borrowed token is logged as such: {refused:?}"
    );
    assert!(
        logs.lines().any(|l| l.contains("request refused")
            && l.contains("NOT_PEER")
            && l.contains("action=signal")),
        "the out-of-mesh signal is logged"
    );
    eprintln!(
        "{} log lines captured at trace level, {} secrets and tokens checked",
        logs.lines().count(),
        secrets.len()
    );
}
