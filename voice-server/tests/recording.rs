//! Recording with consent over real sockets: who may start and stop, that every member is told
//! and a joiner sees it before joining, the upload route's limits, and who may download.

#[path = "api/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use support::{approve, spawn_app_with, Client, TestApp, WAIT};
use voice_server::recordings::RecordingLimits;

/// The first bytes of a WebM file: an EBML header.
const EBML: &[u8] = &[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01];

struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "JSON body expected, got {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

async fn http(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Resp {
    let addr = app.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Resp { status, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line + 2..line + 2 + n]);
        b = &b[line + 2 + n + 2..];
    }
}

async fn upload(app: &TestApp, grant: &Value, seq: u64, body: &[u8]) -> Resp {
    http(
        app,
        "POST",
        grant["uploadUrl"].as_str().unwrap(),
        &[
            (
                "Authorization",
                format!("Bearer {}", grant["uploadToken"].as_str().unwrap()),
            ),
            ("X-Chunk-Seq", seq.to_string()),
        ],
        body,
    )
    .await
}

async fn app_with(limits: RecordingLimits) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recordings");
    let app = spawn_app_with(move |c| {
        c.recordings = Some(path);
        c.recording_limits = limits;
    })
    .await;
    (app, dir)
}

/// Ada is the chat admin; Bo starts voice (its master); Cy joins it; Dee asked to join the chat
/// room and is still pending.
async fn world(app: &TestApp) -> (Client, Client, Client, Client, String, String) {
    let mut ada = app.user("Ada").await;
    let mut bo = app.user("Bo").await;
    let mut cy = app.user("Cy").await;
    let mut dee = app.user("Dee").await;
    let room = ada.ok("createRoom", json!({"name": "General"})).await;
    let room = room["roomId"].as_str().unwrap().to_owned();
    approve(&mut ada, &mut bo, &room).await;
    approve(&mut ada, &mut cy, &room).await;
    dee.ok("requestJoin", json!({"roomId": room})).await;
    let vr = bo.ok("createVoiceRoom", json!({"roomId": room})).await;
    let vr = vr["voiceRoomId"].as_str().unwrap().to_owned();
    cy.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    for c in [&mut ada, &mut bo, &mut cy, &mut dee] {
        c.clear_events();
    }
    (ada, bo, cy, dee, room, vr)
}

#[tokio::test]
async fn the_master_records_everyone_is_told_and_members_download_the_file() {
    let (app, dir) = app_with(RecordingLimits::default()).await;
    let (mut ada, mut bo, mut cy, mut dee, room, vr) = world(&app).await;

    // A participant who is not the master may not start; the admin must be in the room.
    assert_eq!(
        cy.err("startRecording", json!({"voiceRoomId": vr})).await,
        "NOT_ALLOWED"
    );
    assert_eq!(
        ada.err("startRecording", json!({"voiceRoomId": vr})).await,
        "NOT_PARTICIPANT"
    );
    assert_eq!(
        dee.err("startRecording", json!({"voiceRoomId": vr})).await,
        "NOT_APPROVED"
    );
    let started = bo.ok("startRecording", json!({"voiceRoomId": vr})).await;
    let grant = started["upload"].clone();
    let rid = grant["recordingId"].as_str().unwrap().to_owned();
    assert_eq!(started["room"]["recording"]["by"], bo.user_id.as_str());
    assert_eq!(
        bo.err("startRecording", json!({"voiceRoomId": vr})).await,
        "ALREADY_RECORDING"
    );
    // Every member hears it, participant or not.
    for c in [&mut cy, &mut ada] {
        let ev = c.event("recordingStarted").await;
        assert_eq!(ev["recordingId"], rid.as_str());
        assert_eq!(ev["by"], bo.user_id.as_str());
    }
    // A joiner is told in the grant, before any audio of theirs flows.
    let joined = ada
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert_eq!(joined["room"]["recording"]["recordingId"], rid.as_str());

    // Chunks in order; a repeat is taken as done; a gap is refused.
    let r = upload(&app, &grant, 0, EBML).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = upload(&app, &grant, 1, b"opus-audio").await;
    assert_eq!(r.status, 200);
    let r = upload(&app, &grant, 1, b"opus-audio").await;
    assert_eq!((r.status, r.json()["chunks"].as_u64()), (200, Some(2)));
    let r = upload(&app, &grant, 5, b"x").await;
    assert_eq!((r.status, r.code()), (409, "OUT_OF_ORDER".into()));

    // Bad uploads: a typed refusal with a body, never a panic.
    let mut forged = grant.clone();
    forged["uploadToken"] = json!(format!("{}x", grant["uploadToken"].as_str().unwrap()));
    let r = upload(&app, &forged, 2, b"x").await;
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
    let r = http(
        &app,
        "POST",
        grant["uploadUrl"].as_str().unwrap(),
        &[],
        b"x",
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
    let r = http(
        &app,
        "POST",
        "/recordings/..%2Fvoice.sqlite3/chunks",
        &[("X-Chunk-Seq", "0".into())],
        b"x",
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "BAD_REQUEST".into()));
    let r = http(
        &app,
        "POST",
        grant["uploadUrl"].as_str().unwrap(),
        &[(
            "Authorization",
            format!("Bearer {}", grant["uploadToken"].as_str().unwrap()),
        )],
        b"x",
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "BAD_REQUEST".into()));

    // Only the master, the admin or the recorder stops it.
    assert_eq!(
        cy.err("stopRecording", json!({"voiceRoomId": vr})).await,
        "NOT_ALLOWED"
    );
    ada.ok("stopRecording", json!({"voiceRoomId": vr})).await;
    let ev = cy.event("recordingStopped").await;
    assert_eq!(ev["reason"]["kind"], "stopped");
    assert_eq!(
        bo.err("stopRecording", json!({"voiceRoomId": vr})).await,
        "NOT_RECORDING"
    );
    // The last chunk after the stop is still taken (the final-chunk grace).
    let r = upload(&app, &grant, 2, b"-last").await;
    assert_eq!(r.status, 200);

    // Files are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let rec_dir = dir.path().join("recordings");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&rec_dir), 0o700);
        assert_eq!(mode(&rec_dir.join(format!("{rid}.webm"))), 0o600);
        assert_eq!(mode(&rec_dir.join(format!("{rid}.json"))), 0o600);
    }

    // An approved member lists and downloads it.
    let list = cy.ok("listRecordings", json!({"roomId": room})).await;
    let entry = &list["recordings"][0];
    assert_eq!(entry["recordingId"], rid.as_str());
    assert_eq!(entry["bytes"], (EBML.len() + 15) as u64);
    let url = entry["downloadUrl"].as_str().unwrap().to_owned();
    let r = http(&app, "GET", &url, &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(EBML));
    assert!(r.body.ends_with(b"opus-audio-last"));

    // A pending requester and a stranger may not list.
    assert_eq!(
        dee.err("listRecordings", json!({"roomId": room})).await,
        "NOT_APPROVED"
    );
    let mut eve = app.user("Eve").await;
    assert_eq!(
        eve.err("listRecordings", json!({"roomId": room})).await,
        "NOT_MEMBER"
    );

    // A link is for one recording: changing the id in it breaks it.
    let other = url.replacen(&rid, "rec-someone-else", 1);
    let r = http(&app, "GET", &other, &[], b"").await;
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
    // A download token cannot upload, and an upload token cannot download.
    let token = url.split("token=").nth(1).unwrap();
    let mut swapped = grant.clone();
    swapped["uploadToken"] = json!(token);
    let r = upload(&app, &swapped, 3, b"x").await;
    assert_eq!(r.status, 401);
    let r = http(
        &app,
        "GET",
        &format!(
            "/recordings/{rid}?token={}",
            grant["uploadToken"].as_str().unwrap()
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(&app, "GET", &format!("/recordings/{rid}"), &[], b"").await;
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
    // Garbage in the query or the path: a JSON refusal, never the framework's plain text.
    let r = http(
        &app,
        "GET",
        &format!("/recordings/{rid}?token=%ZZ&&="),
        &[],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
    let r = http(
        &app,
        "GET",
        "/recordings/%2E%2E%2Fvoice.sqlite3?token=x",
        &[],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "BAD_REQUEST".into()));

    // A member removed since the link was handed out is refused when using it (a stolen
    // link of a removed member is worth nothing).
    ada.ok(
        "removeMember",
        json!({"roomId": room, "userId": cy.user_id}),
    )
    .await;
    let r = http(&app, "GET", &url, &[], b"").await;
    assert_eq!((r.status, r.code()), (403, "NOT_MEMBER".into()));
}

#[tokio::test]
async fn the_recording_stops_when_the_recorder_leaves_and_uploads_close() {
    let (app, _dir) = app_with(RecordingLimits::default()).await;
    let (_ada, mut bo, mut cy, _dee, _room, vr) = world(&app).await;
    let started = bo.ok("startRecording", json!({"voiceRoomId": vr})).await;
    let grant = started["upload"].clone();
    assert_eq!(upload(&app, &grant, 0, EBML).await.status, 200);
    bo.ok("leaveVoiceRoom", json!({"voiceRoomId": vr})).await;
    let ev = cy.event("recordingStopped").await;
    assert_eq!(ev["reason"]["kind"], "recorderLeft");
    // The room goes on, not recorded; the new master may record again.
    let room = cy
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    assert!(room["room"].get("recording").is_none());
    let again = cy.ok("startRecording", json!({"voiceRoomId": vr})).await;
    assert_ne!(again["upload"]["recordingId"], grant["recordingId"]);
    // The old recording's token now uploads nothing once its grace is over; its own
    // recording is no longer the room's (a new one runs), so it is refused at once.
    let r = upload(&app, &grant, 1, b"late").await;
    assert_eq!((r.status, r.code()), (409, "RECORDING_CLOSED".into()));
    // The room ending stops the running one.
    bo.clear_events();
    cy.ok("endVoiceRoom", json!({"voiceRoomId": vr})).await;
    let ev = bo.event("recordingStopped").await;
    assert_eq!(ev["reason"]["kind"], "roomEnded");
}

#[tokio::test]
async fn uploads_over_the_chunk_or_recording_cap_are_refused_and_links_expire() {
    let limits = RecordingLimits {
        max_bytes: 1000,
        max_chunk_bytes: 600,
        download_ttl: Duration::from_millis(300),
        ..RecordingLimits::default()
    };
    let (app, _dir) = app_with(limits).await;
    let (_ada, mut bo, mut cy, _dee, room, vr) = world(&app).await;
    let started = bo.ok("startRecording", json!({"voiceRoomId": vr})).await;
    let grant = started["upload"].clone();
    assert_eq!(grant["maxBytes"], 1000);
    let r = upload(&app, &grant, 0, &[7u8; 700]).await;
    assert_eq!((r.status, r.code()), (413, "CHUNK_TOO_LARGE".into()));
    assert_eq!(upload(&app, &grant, 0, &[7u8; 500]).await.status, 200);
    assert_eq!(upload(&app, &grant, 1, &[7u8; 500]).await.status, 200);
    let r = upload(&app, &grant, 2, &[7u8; 1]).await;
    assert_eq!((r.status, r.code()), (413, "RECORDING_TOO_LARGE".into()));
    // What was taken is kept.
    let list = cy.ok("listRecordings", json!({"roomId": room})).await;
    assert_eq!(list["recordings"][0]["bytes"], 1000);
    // An expired link is refused.
    let url = list["recordings"][0]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = http(&app, "GET", &url, &[], b"").await;
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
}

#[tokio::test]
async fn without_a_recordings_dir_recording_is_unavailable_and_nothing_changes() {
    let app = spawn_app_with(|_| {}).await;
    let (_ada, mut bo, mut cy, _dee, room, vr) = world(&app).await;
    assert_eq!(
        bo.err("startRecording", json!({"voiceRoomId": vr})).await,
        "RECORDING_UNAVAILABLE"
    );
    cy.no_event("recordingStarted", Duration::from_millis(200))
        .await;
    assert_eq!(
        cy.err("listRecordings", json!({"roomId": room})).await,
        "RECORDING_UNAVAILABLE"
    );
    let r = http(&app, "POST", "/recordings/rec-1/chunks", &[], b"x").await;
    assert_eq!((r.status, r.code()), (404, "RECORDING_UNAVAILABLE".into()));
}

#[tokio::test]
async fn recordings_past_their_retention_are_deleted_and_their_links_die() {
    let limits = RecordingLimits {
        retention: Duration::from_secs(2),
        ..RecordingLimits::default()
    };
    let (app, dir) = app_with(limits).await;
    let (_ada, mut bo, mut cy, _dee, room, vr) = world(&app).await;
    let started = bo.ok("startRecording", json!({"voiceRoomId": vr})).await;
    let grant = started["upload"].clone();
    let rid = grant["recordingId"].as_str().unwrap().to_owned();
    assert_eq!(upload(&app, &grant, 0, EBML).await.status, 200);
    bo.ok("stopRecording", json!({"voiceRoomId": vr})).await;
    let list = cy.ok("listRecordings", json!({"roomId": room})).await;
    let url = list["recordings"][0]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = dir.path().join("recordings").join(format!("{rid}.webm"));
    assert!(file.exists());
    // The pruner runs every quarter of the retention (at least every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the recording outlived its retention"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!dir
        .path()
        .join("recordings")
        .join(format!("{rid}.json"))
        .exists());
    let list = cy.ok("listRecordings", json!({"roomId": room})).await;
    assert_eq!(list["recordings"], json!([]));
    let r = http(&app, "GET", &url, &[], b"").await;
    assert_eq!((r.status, r.code()), (404, "RECORDING_NOT_FOUND".into()));
}
