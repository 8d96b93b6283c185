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

use support::{room_with_member, spawn_app, spawn_app_with, TestApp, WAIT};

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

// ---------------------------------------------------------------------------------------------
// Rate limit on signaling
// ---------------------------------------------------------------------------------------------

/// The per-connection limit covers `signal` frames like any other: a flood of ICE candidates
/// gets `RATE_LIMITED` (retryable) past the burst, exactly the accepted ones reach the peer,
/// the flooder's connection stays open, and its peer is not limited by it.
#[tokio::test]
async fn signal_floods_are_rate_limited_and_nothing_over_the_limit_is_relayed() {
    const BURST: u32 = 20;
    let app = spawn_app_with(|c| {
        c.rate_limit = voice_server::RateLimit {
            burst: BURST,
            per_second: 1.0,
        }
    })
    .await;
    let (mut ada, mut bo, room) = room_with_member(&app).await;
    let vr = ada.ok("createVoiceRoom", json!({"roomId": room})).await["voiceRoomId"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let token = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await["credentials"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bo has used 3 frames (hello, requestJoin, getVoiceCredentials) of its burst.
    const FLOOD: usize = 40;
    for i in 0..FLOOD {
        bo.send_text(
            json!({"action": "signal", "requestId": format!("s{i}"), "voiceRoomId": vr,
                   "token": token, "to": ada.user_id, "kind": "candidate",
                   "payload": {"candidate": format!("candidate:{i}")}})
            .to_string(),
        )
        .await;
    }
    let mut accepted = Vec::new();
    let mut limited = 0;
    for _ in 0..FLOOD {
        let r = bo.next_reply().await;
        let i: usize = r["requestId"].as_str().unwrap()[1..].parse().unwrap();
        if r["ok"] == true {
            accepted.push(i);
        } else {
            assert_eq!(r["error"]["code"], "RATE_LIMITED", "{r}");
            assert_eq!(r["error"]["retryable"], true);
            limited += 1;
        }
    }
    // The bucket may have refilled by a token or two while the flood went out.
    assert!(
        (BURST as usize - 3..=BURST as usize).contains(&accepted.len()),
        "accepted {} of {FLOOD}",
        accepted.len()
    );
    assert_eq!(accepted.len() + limited, FLOOD);
    // Exactly the accepted ones were relayed, in order.
    let mut relayed = Vec::new();
    for _ in 0..accepted.len() {
        let ev = ada.event("signal").await;
        let c = ev["payload"]["candidate"].as_str().unwrap().to_owned();
        relayed.push(c["candidate:".len()..].parse::<usize>().unwrap());
    }
    assert_eq!(relayed, accepted);
    ada.no_event("signal", Duration::from_millis(50)).await;
    // Ada was not limited by Bo's flood.
    ada.ok("listRooms", json!({})).await;
    // Bo's connection is still usable once the bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bo.ok(
        "signal",
        json!({"voiceRoomId": vr, "token": token, "to": ada.user_id, "kind": "candidate",
               "payload": {"candidate": "after"}}),
    )
    .await;
    assert_eq!(ada.event("signal").await["payload"]["candidate"], "after");
}

/// Issue 13, finding 3: legal offers at 40/s made the victim's page build a peer connection per
/// offer until Chromium's cap. The relay passes at most 5 offers/answers at once per link and
/// then one a second; the rest get `RATE_LIMITED` (retryable) and never reach the victim, while
/// ICE candidates on the same link still flow.
#[tokio::test]
async fn offer_floods_on_one_link_are_paced_and_candidates_still_flow() {
    let app = spawn_app().await;
    let (mut ada, mut bo, room) = room_with_member(&app).await;
    let vr = ada.ok("createVoiceRoom", json!({"roomId": room})).await["voiceRoomId"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await;
    let token = bo
        .ok("getVoiceCredentials", json!({"voiceRoomId": vr}))
        .await["credentials"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    const FLOOD: usize = 40;
    for i in 0..FLOOD {
        bo.send_text(
            json!({"action": "signal", "requestId": format!("o{i}"), "voiceRoomId": vr,
                   "token": token, "to": ada.user_id, "kind": "offer",
                   "payload": {"type": "offer", "sdp": format!("v=0 {i}")}})
            .to_string(),
        )
        .await;
    }
    let mut accepted = 0;
    for _ in 0..FLOOD {
        let r = bo.next_reply().await;
        if r["ok"] == true {
            accepted += 1;
        } else {
            assert_eq!(r["error"]["code"], "RATE_LIMITED", "{r}");
            assert_eq!(r["error"]["retryable"], true);
        }
    }
    // Five at once, plus at most one or two refilled while the flood went out.
    assert!(
        (5..=7).contains(&accepted),
        "accepted {accepted} of {FLOOD} offers"
    );
    for _ in 0..accepted {
        ada.event("signal").await;
    }
    ada.no_event("signal", Duration::from_millis(50)).await;
    bo.ok(
        "signal",
        json!({"voiceRoomId": vr, "token": token, "to": ada.user_id, "kind": "candidate",
               "payload": {"candidate": "still"}}),
    )
    .await;
    assert_eq!(ada.event("signal").await["payload"]["candidate"], "still");
}

// ---------------------------------------------------------------------------------------------
// Malformed and near-miss frames, at random
// ---------------------------------------------------------------------------------------------

/// Every code a self-hosted reply may carry (docs/protocol.md).
const CODES: &[&str] = &[
    "BAD_REQUEST",
    "UNKNOWN_ACTION",
    "NOT_IDENTIFIED",
    "CHAT_ROOM_NOT_FOUND",
    "NOT_MEMBER",
    "NOT_APPROVED",
    "ALREADY_ACTIVE",
    "VOICE_ROOM_NOT_FOUND",
    "VOICE_ROOM_ENDED",
    "ROOM_FULL",
    "NOT_PARTICIPANT",
    "NOT_ALLOWED",
    "UNAVAILABLE",
    "INTERNAL",
    "UNAUTHORIZED",
    "NOT_PEER",
    "NOT_ADMIN",
    "ROOM_EXISTS",
    "NO_PENDING_REQUEST",
    "QUOTA_EXCEEDED",
    "BANNED",
    "RATE_LIMITED",
    "TOO_LARGE",
];

fn random_value(rng: &mut impl rand::Rng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 2 { 7 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<f64>()),
        4 => json!(["", " ", "a b", "x", "General", "vr-1", "nobody"][rng.gen_range(0..7)]),
        5 => {
            let n = [0, 1, 64, 65, 129, 2001][rng.gen_range(0..6)];
            json!("y".repeat(n))
        }
        6 => json!((0..rng.gen_range(0..20))
            .map(|_| char::from_u32(rng.gen_range(0..0x3000)).unwrap_or('?'))
            .collect::<String>()),
        7 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.gen_range(0..4))
                .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// 400 random frames on one identified connection: real actions with fields of random types
/// and sizes, unknown actions, JSON that is not an object, text that is not JSON, binary
/// frames. Each gets exactly one reply, with the request id echoed when it was a valid one and
/// a documented code on refusal; the connection is usable afterwards.
#[tokio::test]
async fn random_near_miss_frames_each_get_one_reply_and_the_connection_survives() {
    use rand::{Rng as _, SeedableRng as _};
    let app = spawn_app_with(|c| c.rate_limit = unlimited()).await;
    let mut c = app.user("Fuzz").await;
    let room = c.ok("createRoom", json!({"name": "Fuzzed"})).await["roomId"].clone();
    let seed = std::env::var("VOICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let actions = [
        "hello",
        "createRoom",
        "listRooms",
        "requestJoin",
        "approveJoin",
        "denyJoin",
        "listMembers",
        "sendMessage",
        "getMessages",
        "createVoiceRoom",
        "getVoiceCredentials",
        "endVoiceRoom",
        "leaveVoiceRoom",
        "setMute",
        "getVoiceRoom",
        "signal",
        "fly",
        "",
    ];
    let fields = [
        "name",
        "roomId",
        "userId",
        "text",
        "voiceRoomId",
        "muted",
        "token",
        "to",
        "kind",
        "payload",
        "resumeToken",
    ];
    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    for n in 0..400 {
        let shape = rng.gen_range(0..10);
        let (frame, sent_id) = if shape < 7 {
            let mut obj = serde_json::Map::new();
            obj.insert(
                "action".into(),
                json!(actions[rng.gen_range(0..actions.len())]),
            );
            let id = match rng.gen_range(0..4) {
                0 => None,
                1 => Some(random_value(&mut rng, 0)),
                _ => Some(json!(format!("f{n}"))),
            };
            if let Some(id) = &id {
                obj.insert("requestId".into(), id.clone());
            }
            for f in fields {
                match rng.gen_range(0..4) {
                    0 => {}
                    1 if f == "roomId" => {
                        obj.insert(f.into(), room.clone());
                    }
                    _ => {
                        obj.insert(f.into(), random_value(&mut rng, 0));
                    }
                }
            }
            let valid_id = id
                .as_ref()
                .and_then(Value::as_str)
                .filter(|s| s.chars().count() <= 128)
                .map(str::to_owned);
            (Value::Object(obj).to_string(), valid_id)
        } else if shape < 8 {
            (random_value(&mut rng, 0).to_string(), None)
        } else if shape < 9 {
            let bytes: Vec<u8> = (0..rng.gen_range(0..100)).map(|_| rng.gen()).collect();
            (String::from_utf8_lossy(&bytes).into_owned(), None)
        } else {
            c.send_binary((0..rng.gen_range(0..100)).map(|_| rng.gen()).collect())
                .await;
            let r = c.next_reply().await;
            assert_eq!(
                r["error"]["code"], "BAD_REQUEST",
                "seed {seed}: binary frame: {r}"
            );
            *codes.entry("BAD_REQUEST".into()).or_default() += 1;
            continue;
        };
        c.send_text(frame.clone()).await;
        let r = c.next_reply().await;
        let ctx = format!("seed {seed}, frame #{n} {frame:.300} -> {r}");
        assert_eq!(r["type"], "reply", "{ctx}");
        assert!(r["action"].is_string(), "{ctx}");
        if let Some(id) = &sent_id {
            assert_eq!(r["requestId"], id.as_str(), "{ctx}");
        }
        match r["ok"].as_bool() {
            Some(true) => *codes.entry("ok".into()).or_default() += 1,
            Some(false) => {
                let code = r["error"]["code"].as_str().unwrap_or("");
                assert!(CODES.contains(&code), "undocumented code: {ctx}");
                assert!(
                    r["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{ctx}"
                );
                assert!(r["error"]["retryable"].is_boolean(), "{ctx}");
                *codes.entry(code.to_owned()).or_default() += 1;
            }
            None => panic!("no ok flag: {ctx}"),
        }
    }
    eprintln!("random frames (seed {seed}): {codes:?}");
    // Still the same, usable connection (a random hello may have renamed it).
    let rooms = c.ok("listRooms", json!({})).await;
    assert!(rooms["rooms"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(codes.contains_key("BAD_REQUEST") && codes.contains_key("UNKNOWN_ACTION"));
}

// ---------------------------------------------------------------------------------------------
// The sweep, over real sockets
// ---------------------------------------------------------------------------------------------

mod sweep {
    use std::sync::Arc;
    use std::time::Duration;

    use chat_domain::SessionTokens as _;
    use chat_domain::{ChatStore as _, RoomRecord};
    use serde_json::json;
    use voice_adapters_memory::MemoryChat;
    use voice_adapters_memory::MemoryStore;
    use voice_adapters_std::{HmacKey, ResumeTokens};
    use voice_domain::ports::{Secret, VoiceRoomStore as _};
    use voice_domain::room::EndReason;
    use voice_domain::{
        Capacity, ChannelArn, ChannelName, ChatRoomId, ConnectionId, SignalingChannel, Timestamp,
        UserId, VoiceRoom, VoiceRoomId,
    };
    use voice_server::adapters::store::ServerStore;
    use voice_server::Backends;

    use super::support::{approve, Client};

    const SECRET: &str = "sweep-test-token-secret-0123";

    /// A resume token for `user` as the server would issue it now (generation 0: never signed out
    /// everywhere).
    fn fresh_resume_token(user: &UserId) -> Secret {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        let tokens = ResumeTokens::new(HmacKey::new(Secret::new(SECRET)));
        Secret::new(tokens.issue(&chat_domain::ResumeClaims {
            user: user.clone(),
            issued_at_ms: u64::try_from(now.as_millis()).expect("ms fit u64"),
            generation: 0,
        }))
    }

    fn ghost_channel(tag: &str) -> SignalingChannel {
        SignalingChannel {
            name: ChannelName::from_unique(tag).unwrap(),
            arn: ChannelArn::parse(format!("arn:local:voice:channel/voice-{tag}")).unwrap(),
        }
    }

    /// An active voice room whose only participant is on a connection no server knows (its
    /// process died, or its disconnect was never processed).
    fn ghost_room(id: &str, chat: &ChatRoomId, master: &UserId) -> VoiceRoom {
        VoiceRoom::start(
            VoiceRoomId::parse(id).unwrap(),
            chat.clone(),
            master.clone(),
            ConnectionId::parse(format!("gone-{id}")).unwrap(),
            ghost_channel(id),
            Capacity::default(),
            Timestamp::from_millis(1_700_000_000_000),
        )
        .0
    }

    async fn serve(
        chat: MemoryChat,
        store: MemoryStore,
        sweep_every: Duration,
        reconnect_grace: Duration,
    ) -> voice_server::RunningServer {
        let mut config = voice_server::Config::ephemeral();
        config.token_secret = Some(Secret::new(SECRET));
        config.sweep_interval = sweep_every;
        config.reconnect_grace = reconnect_grace;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        voice_server::spawn_with(
            config,
            listener,
            Backends {
                chat: Arc::new(chat),
                store: ServerStore::Memory(store),
                token_secret: None,
            },
        )
        .await
        .unwrap()
    }

    /// A voice room left active by a previous process (its participants' sockets died with
    /// it) is kept at start-up, its participants reconnecting: one who comes back within the
    /// grace resumes into the same voice room; a room nobody comes back to is ended by the sweep
    /// once the grace has passed.
    #[tokio::test]
    async fn rooms_left_active_by_a_previous_process_are_kept_for_their_participants_to_resume() {
        let chat = MemoryChat::new();
        let ada = UserId::parse("ada-from-before").unwrap();
        let bob = UserId::parse("bob-from-before").unwrap();
        let room = ChatRoomId::parse("kept-room").unwrap();
        let other = ChatRoomId::parse("other-room").unwrap();
        for (id, name) in [(&room, "Kept"), (&other, "Other")] {
            chat.create_room(
                &RoomRecord {
                    id: id.clone(),
                    name: name.into(),
                    admin: ada.clone(),
                },
                usize::MAX,
            )
            .await
            .unwrap();
        }
        let store = MemoryStore::new();
        store
            .create_if_none_active(&ghost_room("vr-before", &room, &ada))
            .await
            .unwrap();
        // Bob's voice room in Ada's other chat room: Bob never comes back.
        store
            .create_if_none_active(&ghost_room("vr-no-show", &other, &bob))
            .await
            .unwrap();
        let server = serve(
            chat,
            store.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(2),
        )
        .await;

        // Ada comes back (her page kept its resume token) and finds her voice room waiting.
        let resume = fresh_resume_token(&ada);
        let mut c = Client::connect(&server.ws_url()).await;
        let d = c
            .ok(
                "hello",
                json!({"name": "Ada", "resumeToken": resume.expose()}),
            )
            .await;
        assert_eq!(d["resumed"], true);
        let view = c.ok("getVoiceRoom", json!({"roomId": "kept-room"})).await;
        assert_eq!(view["voiceRoom"]["voiceRoomId"], "vr-before");
        assert_eq!(
            view["voiceRoom"]["participants"][0]["connection"],
            "reconnecting"
        );
        let g = c
            .ok("getVoiceCredentials", json!({"voiceRoomId": "vr-before"}))
            .await;
        assert_eq!(g["voiceRoomId"], "vr-before");
        assert_eq!(g["newlyJoined"], false);
        let stored = store
            .get(&VoiceRoomId::parse("vr-before").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(stored.is_active());
        assert!(!stored.participants()[0].is_reconnecting());
        assert_ne!(
            stored.participants()[0].connection.as_str(),
            "gone-vr-before"
        );

        // Bob's room ends once the grace has passed (Ada, the chat admin, hears it).
        let ev = c.event("voiceEnded").await;
        assert_eq!(ev["voiceRoomId"], "vr-no-show");
        assert_eq!(ev["reason"], json!({"kind": "lastParticipantLeft"}));
        let stored = store
            .get(&VoiceRoomId::parse("vr-no-show").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            stored.status(),
            voice_domain::room::RoomStatus::Ended {
                reason: EndReason::LastParticipantLeft,
                ..
            }
        ));
        // Ada's resumed room lives on, and a new room may start where Bob's ended.
        assert!(store
            .get(&VoiceRoomId::parse("vr-before").unwrap())
            .await
            .unwrap()
            .unwrap()
            .is_active());
        c.ok("createVoiceRoom", json!({"roomId": "other-room"}))
            .await;
        server.shutdown().await.unwrap();
    }

    /// With a zero reconnect grace, a voice room left active by a previous process is ended,
    /// as abandoned, before the first connection is served.
    #[tokio::test]
    async fn with_a_zero_grace_rooms_left_active_by_a_previous_process_are_ended_at_start_up() {
        let chat = MemoryChat::new();
        let ada = UserId::parse("ada-from-before").unwrap();
        let room = ChatRoomId::parse("kept-room").unwrap();
        chat.create_room(
            &RoomRecord {
                id: room.clone(),
                name: "Kept".into(),
                admin: ada.clone(),
            },
            usize::MAX,
        )
        .await
        .unwrap();
        let store = MemoryStore::new();
        store
            .create_if_none_active(&ghost_room("vr-before", &room, &ada))
            .await
            .unwrap();
        let server = serve(
            chat,
            store.clone(),
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .await;
        let resume = fresh_resume_token(&ada);
        let mut c = Client::connect(&server.ws_url()).await;
        c.ok(
            "hello",
            json!({"name": "Ada", "resumeToken": resume.expose()}),
        )
        .await;
        assert_eq!(
            c.ok("getVoiceRoom", json!({"roomId": "kept-room"})).await,
            json!({"voiceRoom": null})
        );
        let stored = store
            .get(&VoiceRoomId::parse("vr-before").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                stored.status(),
                voice_domain::room::RoomStatus::Ended {
                    reason: EndReason::Abandoned,
                    ..
                }
            ),
            "{:?}",
            stored.status()
        );
        server.shutdown().await.unwrap();
    }

    /// While the server runs: the periodic sweep marks participants whose connection is gone
    /// reconnecting (`participantReconnecting`), and once the reconnect grace has passed removes
    /// them (`participantLeft`, `disconnected`), leaving the live ones; a room whose participants
    /// are all gone ends (`voiceEnded`, `lastParticipantLeft`).
    #[tokio::test]
    async fn the_periodic_sweep_ends_abandoned_rooms_and_removes_dead_participants() {
        let store = MemoryStore::new();
        let server = serve(
            MemoryChat::new(),
            store.clone(),
            Duration::from_millis(200),
            Duration::from_millis(400),
        )
        .await;
        let url = server.ws_url();
        let user = |c: &Client| UserId::parse(c.user_id.clone()).unwrap();
        let mut ada = Client::connect(&url).await;
        ada.user_id = ada.ok("hello", json!({"name": "Ada"})).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut bo = Client::connect(&url).await;
        bo.user_id = bo.ok("hello", json!({"name": "Bo"})).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        let r1 = ada.ok("createRoom", json!({"name": "Live"})).await["roomId"]
            .as_str()
            .unwrap()
            .to_owned();
        let r2 = ada.ok("createRoom", json!({"name": "Deserted"})).await["roomId"]
            .as_str()
            .unwrap()
            .to_owned();
        approve(&mut ada, &mut bo, &r1).await;

        // Room 1: Ada and Bo live, plus a ghost who joined from a connection that is gone.
        let vr1 = ada.ok("createVoiceRoom", json!({"roomId": r1})).await["voiceRoomId"]
            .as_str()
            .unwrap()
            .to_owned();
        bo.ok("getVoiceCredentials", json!({"voiceRoomId": vr1}))
            .await;
        let vr1 = VoiceRoomId::parse(vr1).unwrap();
        let mut room = store.get(&vr1).await.unwrap().unwrap();
        let ghost = UserId::parse("ghost").unwrap();
        room.join(
            ghost.clone(),
            ConnectionId::parse("gone-conn").unwrap(),
            ghost_channel("ghost"),
            Timestamp::from_millis(1_700_000_000_000),
        )
        .unwrap();
        room.bump_version();
        store.update(&room).await.unwrap();
        // Room 2: nobody live in it.
        let r2_id = ChatRoomId::parse(r2.clone()).unwrap();
        store
            .create_if_none_active(&ghost_room("vr-deserted", &r2_id, &ghost))
            .await
            .unwrap();
        ada.clear_events();
        bo.clear_events();

        // Ada hears of both rooms (in either order), Bo only of room 1.
        let mut heard = Vec::new();
        for _ in 0..2 {
            let ev = ada.event("participantReconnecting").await;
            assert_eq!(ev["user"], "ghost");
            heard.push(ev["voiceRoomId"].as_str().unwrap().to_owned());
        }
        heard.sort();
        let mut want = vec![vr1.to_string(), "vr-deserted".to_owned()];
        want.sort();
        assert_eq!(heard, want);
        let ev = bo.event("participantReconnecting").await;
        assert_eq!(ev["voiceRoomId"], vr1.as_str());
        let ev = ada.event("voiceEnded").await;
        assert_eq!(ev["voiceRoomId"], "vr-deserted");
        assert_eq!(ev["reason"], json!({"kind": "lastParticipantLeft"}));
        let mut heard = Vec::new();
        for _ in 0..2 {
            let ev = ada.event("participantLeft").await;
            assert_eq!(ev["user"], "ghost");
            assert_eq!(ev["reason"], "disconnected");
            heard.push(ev["voiceRoomId"].as_str().unwrap().to_owned());
        }
        heard.sort();
        assert_eq!(heard, want);
        let ev = bo.event("participantLeft").await;
        assert_eq!(ev["user"], "ghost");
        assert_eq!(ev["voiceRoomId"], vr1.as_str());
        let live = store.get(&vr1).await.unwrap().unwrap();
        assert!(live.is_active());
        let users: Vec<_> = live.participants().iter().map(|p| p.user.clone()).collect();
        assert_eq!(users, vec![user(&ada), user(&bo)]);
        assert_eq!(
            ada.ok("getVoiceRoom", json!({"roomId": r2})).await,
            json!({"voiceRoom": null})
        );
        // Idempotent: the next sweeps change nothing more.
        tokio::time::sleep(Duration::from_millis(500)).await;
        ada.no_event("participantLeft", Duration::ZERO).await;
        ada.no_event("voiceEnded", Duration::ZERO).await;
        server.shutdown().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Constant-time comparison of signatures
// ---------------------------------------------------------------------------------------------

/// Tokens (voice and resume) are checked by `Mac::verify_slice`, which compares in constant
/// time (`subtle::ConstantTimeEq`), and no secret or signature is compared with `==` anywhere
/// in the server. A timing measurement would be flaky on a shared machine; this reads the
/// source, so replacing `verify_slice` with a plain comparison fails here.
#[test]
fn signatures_and_secrets_are_never_compared_with_eq() {
    let token = include_str!("../src/adapters/token.rs");
    let resume = include_str!("../../voice-adapters-std/src/resume.rs");
    let code = |src: &str| -> String {
        src.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        code(token).matches(".verify_slice(&sig)").count(),
        1,
        "voice tokens are verified with verify_slice"
    );
    assert_eq!(
        code(resume).matches(".verify_slice(&sig)").count(),
        2,
        "resume tokens (both shapes) are verified with verify_slice"
    );
    let sources = [
        ("token.rs", token),
        ("voice-adapters-std resume.rs", resume),
        (
            "voice-adapters-std key.rs",
            include_str!("../../voice-adapters-std/src/key.rs"),
        ),
        ("relay.rs", include_str!("../src/adapters/relay.rs")),
        ("chat.rs", include_str!("../src/adapters/chat.rs")),
        (
            "executor.rs",
            include_str!("../../voice-executor/src/executor.rs"),
        ),
        ("http.rs", include_str!("../src/http.rs")),
        ("ice.rs", include_str!("../src/adapters/ice.rs")),
        ("config.rs", include_str!("../src/config.rs")),
    ];
    for (file, src) in sources {
        for (n, line) in src.lines().enumerate() {
            let l = line.replace(' ', "");
            if l.starts_with("//") {
                continue;
            }
            for bad in [
                "sig==",
                "==sig",
                "sig!=",
                "!=sig",
                "expose()==",
                "expose()!=",
                "finalize()==",
                "into_bytes()==",
                "==expected_sig",
                "token==",
                "==token",
            ] {
                assert!(
                    !l.contains(bad),
                    "{file}:{}: `{}` compares a secret or signature with {bad:?}; use Mac::verify_slice or subtle",
                    n + 1,
                    line.trim()
                );
            }
        }
    }
}
