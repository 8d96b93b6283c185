//! The scenarios. Each takes a running [`Target`], drives it over real WebSockets and returns a
//! [`Report`]. Setup (connecting, joining chat rooms) is never inside the measured window except
//! for `idle`, whose setup *is* the measurement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use futures_util::SinkExt as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{find_ts, is_reply, next_text, Conn, Dialer};
use crate::report::{Meter, Report};
use crate::stats::summarize;
use crate::targets::{Kind, Target};

/// Server CPU µs per unit of work (`n` units in the window); `NaN` when there were none.
fn per_unit(server: &crate::report::ServerFigures, n: f64) -> f64 {
    if n > 0.0 {
        server.cpu_secs * 1e6 / n
    } else {
        f64::NAN
    }
}

/// A unique-enough tag so that chat room names never collide within one server process.
fn tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn timed<T>(
    lat: &mut Vec<u64>,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let t = Instant::now();
    let r = f.await?;
    lat.push(t.elapsed().as_nanos() as u64);
    Ok(r)
}

/// A chat room whose members are all approved (voice) or joined (node).
pub struct Group {
    /// The admin's connection (voice) / the first member's (node, echo).
    pub admin: Conn,
    /// The admin's user id.
    pub admin_id: String,
    /// The other members, if kept (otherwise they drain in the background).
    pub members: Vec<(Conn, String)>,
    /// Background readers of members not kept.
    pub drains: Vec<JoinHandle<()>>,
    /// Chat room id (voice) / room name (node).
    pub room_id: String,
}

/// Sets up one chat room of `size` connections: on voice, `hello` + `createRoom` for the admin,
/// `hello` + `requestJoin` for each member, then `approveJoin` of each; on node, `hello` +
/// `joinRoom`; on echo, bare connections. Request latencies go to `lat`. Members are kept
/// (`keep`) or handed to background readers right after joining (so pushed events never pile
/// up unread).
///
/// # Errors
/// Any refusal or socket failure.
pub async fn group(
    kind: Kind,
    d: &Dialer,
    size: usize,
    keep: bool,
    lat: &mut Vec<u64>,
) -> anyhow::Result<Group> {
    let t = tag();
    let room_name = format!("bench-{t}");
    let mut admin = d.conn().await?;
    let (admin_id, room_id) = match kind {
        Kind::Voice => {
            let h = timed(
                lat,
                admin.request("hello", json!({"name": format!("a{t}")})),
            )
            .await?;
            let r = timed(lat, admin.request("createRoom", json!({"name": room_name}))).await?;
            (str_of(&h, "userId")?, str_of(&r, "roomId")?)
        }
        Kind::Node => {
            let h = timed(
                lat,
                admin.request("hello", json!({"name": format!("a{t}")})),
            )
            .await?;
            timed(lat, admin.request("joinRoom", json!({"roomId": room_name}))).await?;
            (str_of(&h, "userId")?, room_name.clone())
        }
        Kind::Echo => ("u0".to_owned(), room_name.clone()),
    };
    let mut members = Vec::new();
    let mut ids = Vec::new();
    let mut drains = Vec::new();
    for i in 1..size {
        let mut c = d.conn().await?;
        let uid = match kind {
            Kind::Voice => {
                let h = timed(
                    lat,
                    c.request("hello", json!({"name": format!("m{t}-{i}")})),
                )
                .await?;
                timed(lat, c.request("requestJoin", json!({"roomId": room_id}))).await?;
                str_of(&h, "userId")?
            }
            Kind::Node => {
                let h = timed(
                    lat,
                    c.request("hello", json!({"name": format!("m{t}-{i}")})),
                )
                .await?;
                timed(lat, c.request("joinRoom", json!({"roomId": room_id}))).await?;
                str_of(&h, "userId")?
            }
            Kind::Echo => format!("u{i}"),
        };
        ids.push(uid.clone());
        if keep {
            members.push((c, uid));
        } else {
            drains.push(tokio::spawn(c.drain()));
        }
    }
    if kind == Kind::Voice {
        for uid in &ids {
            timed(
                lat,
                admin.request("approveJoin", json!({"roomId": room_id, "userId": uid})),
            )
            .await?;
        }
    }
    Ok(Group {
        admin,
        admin_id,
        members,
        drains,
        room_id,
    })
}

fn str_of(v: &Value, field: &str) -> anyhow::Result<String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("reply data has no {field}: {v}"))
}

fn dialer(target: &Target, sources: u8) -> Dialer {
    Dialer::new(target.addr, target.path(), sources)
}

// ---------------------------------------------------------------------------------------------
// idle capacity

/// Knobs of `idle`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleOpts {
    /// Connections to hold.
    pub n: usize,
    /// Connections per chat room (admin included).
    pub group: usize,
    /// Chat rooms set up at once.
    pub concurrency: usize,
    /// Source addresses 127.0.0.2.. to spread client sockets over.
    pub sources: u8,
    /// How long to hold them before reading RSS, seconds.
    pub hold_secs: f64,
}

/// N connections, each `hello` + joined (approved) to a chat room, held open. Reports setup
/// rate (connections/s), request latency during setup, and server RSS per connection.
///
/// # Errors
/// A setup failure.
pub async fn idle(target: &Target, o: &IdleOpts) -> anyhow::Result<Report> {
    let d = Arc::new(dialer(target, o.sources));
    let base = target.sample();
    let meter = Meter::start(target.pid);
    let groups = o.n.div_ceil(o.group);
    let results: Vec<(Group, Vec<u64>)> = stream::iter(0..groups)
        .map(|g| {
            let d = d.clone();
            let size = o.group.min(o.n - g * o.group);
            let kind = target.kind;
            async move {
                let mut lat = Vec::new();
                let grp = group(kind, &d, size, false, &mut lat).await?;
                Ok::<_, anyhow::Error>((grp, lat))
            }
        })
        .buffer_unordered(o.concurrency)
        .try_collect()
        .await
        .context("idle setup")?;
    let setup_secs = meter.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(o.hold_secs)).await;
    let (server, gen, load) = meter.finish();
    let held = target.sample();
    let mut lat = Vec::new();
    let mut drains = Vec::new();
    let mut admins = Vec::new();
    let mut conns = 0;
    for (g, l) in results {
        lat.extend(l);
        conns += 1 + g.drains.len();
        drains.extend(g.drains);
        admins.push(g.admin);
    }
    let per_conn_kib = (held.rss_kib.saturating_sub(base.rss_kib)) as f64 / conns.max(1) as f64;
    let gen_rss = crate::sys::sample(std::process::id()).unwrap_or_default();
    let report = Report {
        scenario: "idle".into(),
        target: target.name.clone(),
        params: serde_json::to_value(o)?,
        throughput: conns as f64 / setup_secs,
        unit: "conn/s".into(),
        latency: summarize(lat),
        server,
        pinning: String::new(),
        server_cpu_us_each: None,
        generator_cpu_pct: gen,
        load,
        errors: 0,
        extra: json!({
            "connections": conns,
            "setupSecs": setup_secs,
            "serverRssBaseMib": base.rss_kib as f64 / 1024.0,
            "serverRssHeldMib": held.rss_kib as f64 / 1024.0,
            "serverKibPerConnection": per_conn_kib,
            "projectedMibAt50k": base.rss_kib as f64 / 1024.0 + per_conn_kib * 50_000.0 / 1024.0,
            "generatorRssMib": gen_rss.rss_kib as f64 / 1024.0,
        }),
    };
    for h in drains {
        h.abort();
    }
    drop(admins);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// room operations

/// Knobs of `rooms`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomsOpts {
    /// Chat rooms cycling at once (one driver each).
    pub rooms: usize,
    /// Approved members per chat room who only listen (they receive every voice event).
    pub passive: usize,
    /// Warm-up, seconds (not counted).
    pub warmup_secs: f64,
    /// Measured window, seconds.
    pub secs: f64,
    /// Idle approved connections held on the server meanwhile, in chat rooms of 20.
    pub background: usize,
    /// Source addresses.
    pub sources: u8,
}

const ROOM_ACTIONS: [&str; 6] = [
    "createVoiceRoom",
    "getVoiceCredentials(master)",
    "getVoiceCredentials(join)",
    "setMute",
    "leaveVoiceRoom",
    "endVoiceRoom",
];

/// Many chat rooms, each cycling createVoiceRoom → getVoiceCredentials (master) →
/// getVoiceCredentials (second member joins) → setMute → leaveVoiceRoom → endVoiceRoom,
/// with `passive` more members hearing every event. Voice only.
///
/// # Errors
/// A setup failure, or the target is not voice.
pub async fn rooms(target: &Target, o: &RoomsOpts) -> anyhow::Result<Report> {
    if target.kind != Kind::Voice {
        bail!("rooms runs against voice-server only");
    }
    let d = Arc::new(dialer(target, o.sources));
    let mut setup_lat = Vec::new();
    let mut background = Vec::new();
    for _ in 0..o.background.div_ceil(20) {
        background.push(group(Kind::Voice, &d, 20, false, &mut setup_lat).await?);
    }
    let groups: Vec<Group> = stream::iter(0..o.rooms)
        .map(|_| {
            let d = d.clone();
            let size = 2 + o.passive;
            async move {
                let mut lat = Vec::new();
                let mut g = group(Kind::Voice, &d, size, true, &mut lat).await?;
                // Keep one member to drive; the passive ones just read.
                let rest: Vec<_> = g.members.drain(1..).collect();
                for (c, _) in rest {
                    g.drains.push(tokio::spawn(c.drain()));
                }
                Ok::<_, anyhow::Error>(g)
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await
        .context("rooms setup")?;
    let epoch = Instant::now();
    let measure_from = Duration::from_secs_f64(o.warmup_secs);
    let measure_to = measure_from + Duration::from_secs_f64(o.secs);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut drains = Vec::new();
    for mut g in groups {
        drains.append(&mut g.drains);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<Vec<u64>> = vec![Vec::new(); ROOM_ACTIONS.len()];
            let mut errors = 0u64;
            let (mut b, _) = g.members.pop().ok_or_else(|| anyhow!("no member"))?;
            let mut a = g.admin;
            let room = g.room_id;
            while !stop.load(Ordering::Relaxed) {
                let mut one = |i: usize, t: Instant, ok: bool| {
                    let since = t.duration_since(epoch);
                    if since >= measure_from && since < measure_to {
                        if ok {
                            lat[i].push(t.elapsed().as_nanos() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                };
                let t = Instant::now();
                let v = a.request("createVoiceRoom", json!({"roomId": room})).await;
                one(0, t, v.is_ok());
                let vr = match v.as_ref().map(|v| str_of(v, "voiceRoomId")) {
                    Ok(Ok(vr)) => vr,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let steps: [(usize, bool, &str, Value); 5] = [
                    (1, true, "getVoiceCredentials", json!({"voiceRoomId": vr})),
                    (2, false, "getVoiceCredentials", json!({"voiceRoomId": vr})),
                    (
                        3,
                        false,
                        "setMute",
                        json!({"voiceRoomId": vr, "muted": true}),
                    ),
                    (4, false, "leaveVoiceRoom", json!({"voiceRoomId": vr})),
                    (5, true, "endVoiceRoom", json!({"voiceRoomId": vr})),
                ];
                for (i, by_admin, action, fields) in steps {
                    let c = if by_admin { &mut a } else { &mut b };
                    let t = Instant::now();
                    let r = c.request(action, fields).await;
                    one(i, t, r.is_ok());
                }
            }
            Ok::<_, anyhow::Error>((lat, errors, a, b))
        }));
    }
    tokio::time::sleep(measure_from).await;
    let meter = Meter::start(target.pid);
    tokio::time::sleep(measure_to - measure_from).await;
    let (server, gen, load) = meter.finish();
    stop.store(true, Ordering::Relaxed);
    let mut per: Vec<Vec<u64>> = vec![Vec::new(); ROOM_ACTIONS.len()];
    let mut errors = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (lat, e, a, b) = t.await??;
        for (i, l) in lat.into_iter().enumerate() {
            per[i].extend(l);
        }
        errors += e;
        keep.push((a, b));
    }
    let all: Vec<u64> = per.iter().flatten().copied().collect();
    let ops = all.len();
    let by_action: serde_json::Map<String, Value> = ROOM_ACTIONS
        .iter()
        .zip(per)
        .map(|(name, l)| {
            (
                (*name).to_owned(),
                serde_json::to_value(summarize(l)).unwrap(),
            )
        })
        .collect();
    for h in drains {
        h.abort();
    }
    for g in background {
        for h in g.drains {
            h.abort();
        }
    }
    let cpu_each = per_unit(&server, ops as f64);
    Ok(Report {
        scenario: "rooms".into(),
        target: target.name.clone(),
        params: serde_json::to_value(o)?,
        throughput: ops as f64 / o.secs,
        unit: "ops/s".into(),
        latency: summarize(all),
        server,
        pinning: String::new(),
        server_cpu_us_each: Some(cpu_each),
        generator_cpu_pct: gen,
        load,
        errors,
        extra: json!({
            "cyclesPerSec": ops as f64 / o.secs / ROOM_ACTIONS.len() as f64,
            "byAction": by_action,
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// signaling relay

/// Knobs of `relay`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayOpts {
    /// Rooms in full mesh.
    pub rooms: usize,
    /// Participants per room.
    pub per_room: usize,
    /// Signals a participant may have awaiting their reply (echo: their echo).
    pub window: usize,
    /// Every `sdp_every`-th signal on a link is an offer/answer (1–4 KB SDP); the rest are
    /// ICE candidates (~200 B).
    pub sdp_every: usize,
    /// Warm-up, seconds.
    pub warmup_secs: f64,
    /// Measured window, seconds.
    pub secs: f64,
    /// Source addresses.
    pub sources: u8,
}

/// An SDP-like body of about `bytes` bytes (JSON-escaped CRLF lines).
fn sdp(bytes: usize) -> String {
    let mut s = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\na=group:BUNDLE 0\\r\\na=msid-semantic: WMS\\r\\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\\r\\nc=IN IP4 0.0.0.0\\r\\n",
    );
    let lines = [
        "a=rtcp:9 IN IP4 0.0.0.0\\r\\n",
        "a=ice-ufrag:Xk3v\\r\\na=ice-pwd:8bWq3kq7h0pXvX3bWq9kqz7T\\r\\n",
        "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF\\r\\n",
        "a=setup:actpass\\r\\na=mid:0\\r\\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\\r\\n",
        "a=sendrecv\\r\\na=rtcp-mux\\r\\na=rtpmap:111 opus/48000/2\\r\\na=rtcp-fb:111 transport-cc\\r\\na=fmtp:111 minptime=10;useinbandfec=1\\r\\n",
        "a=ssrc:1001 cname:q1w2e3r4t5y6u7i8\\r\\na=ssrc:1001 msid:stream track\\r\\n",
    ];
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(lines[i % lines.len()]);
        i += 1;
    }
    s
}

const CANDIDATE: &str = "\"candidate\":\"candidate:842163049 1 udp 1677729535 192.0.2.10 54321 typ srflx raddr 10.0.0.5 rport 54321 generation 0 ufrag Xk3v network-cost 999\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0,\"usernameFragment\":\"Xk3v\"}";

/// A participant ready to signal: its socket and its pre-built frames, split around the
/// timestamp.
struct Signaller {
    conn: Conn,
    frames: Vec<(String, String)>,
}

/// The mesh of one room: connections in join order, user ids, the voice room and each one's
/// token.
async fn relay_room(kind: Kind, d: &Dialer, o: &RelayOpts) -> anyhow::Result<Vec<Signaller>> {
    let mut lat = Vec::new();
    let g = group(kind, d, o.per_room, true, &mut lat).await?;
    let mut conns: Vec<(Conn, String)> = vec![(g.admin, g.admin_id)];
    conns.extend(g.members);
    let (voice_room, tokens) = match kind {
        Kind::Voice => {
            let v = conns[0]
                .0
                .request("createVoiceRoom", json!({"roomId": g.room_id}))
                .await?;
            let vr = str_of(&v, "voiceRoomId")?;
            let mut tokens = Vec::new();
            for (c, _) in &mut conns {
                let grant = c
                    .request("getVoiceCredentials", json!({"voiceRoomId": vr}))
                    .await?;
                tokens.push(
                    grant["credentials"]["token"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no token"))?
                        .to_owned(),
                );
            }
            (vr, tokens)
        }
        Kind::Node | Kind::Echo => (g.room_id.clone(), vec!["none".to_owned(); conns.len()]),
    };
    let ids: Vec<String> = conns.iter().map(|(_, u)| u.clone()).collect();
    let sizes = [1024, 2048, 3072, 4096];
    let mut out = Vec::new();
    for (me, (conn, _)) in conns.into_iter().enumerate() {
        let mut frames = Vec::new();
        for step in 0..o.sdp_every * sizes.len() {
            for (peer, to) in ids.iter().enumerate() {
                if peer == me {
                    continue;
                }
                // The later joiner is the viewer on the link: it offers, the master answers.
                let (kind_s, body) = if step % o.sdp_every == 0 {
                    let k = if me > peer { "offer" } else { "answer" };
                    let size = sizes[(step / o.sdp_every) % sizes.len()];
                    (k, format!(",\"type\":\"{k}\",\"sdp\":\"{}\"}}", sdp(size)))
                } else {
                    ("candidate", format!(",{CANDIDATE}"))
                };
                let head = format!(
                    "{{\"action\":\"signal\",\"voiceRoomId\":\"{voice_room}\",\"token\":\"{}\",\"to\":\"{to}\",\"kind\":\"{kind_s}\",\"payload\":{{\"ts\":",
                    tokens[me]
                );
                frames.push((head, format!("{body}}}")));
            }
        }
        out.push(Signaller { conn, frames });
    }
    Ok(out)
}

/// Rooms of `per_room` in full mesh, each participant signalling its peers in turn (offers or
/// answers as its role on the link allows, mostly candidates), at most `window` unanswered each.
/// Latency: send time (in the payload) to arrival at the peer. Echo: the frame comes back to
/// the sender, one frame out per frame in (the relay sends two: the event and the reply).
///
/// # Errors
/// A setup failure.
pub async fn relay(target: &Target, o: &RelayOpts) -> anyhow::Result<Report> {
    let d = Arc::new(dialer(target, o.sources));
    let kind = target.kind;
    let rooms: Vec<Vec<Signaller>> = stream::iter(0..o.rooms)
        .map(|_| {
            let d = d.clone();
            let o = o.clone();
            async move { relay_room(kind, &d, &o).await }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
        .context("relay setup")?;
    let epoch = Instant::now();
    let from_ns = Duration::from_secs_f64(o.warmup_secs).as_nanos() as u64;
    let to_ns = from_ns + Duration::from_secs_f64(o.secs).as_nanos() as u64;
    let read_until = epoch + Duration::from_nanos(to_ns) + Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for s in rooms.into_iter().flatten() {
        let (mut sink, mut stream) = futures_util::StreamExt::split(s.conn.ws);
        let permits = Arc::new(Semaphore::new(o.window));
        let p = permits.clone();
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let msg = match tokio::time::timeout_at(read_until.into(), stream.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(_) => {
                        errors += 1;
                        break;
                    }
                    Err(_) => break,
                };
                let Message::Text(t) = msg else { continue };
                let text = t.as_str();
                let now = epoch.elapsed().as_nanos() as u64;
                if kind == Kind::Echo {
                    p.add_permits(1);
                } else if is_reply(text) {
                    if !text.contains("\"ok\":true") {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(text.chars().take(300).collect::<String>());
                        }
                    }
                    p.add_permits(1);
                    continue;
                }
                if let Some(ts) = find_ts(text) {
                    if ts >= from_ns && ts < to_ns {
                        lat.push(now.saturating_sub(ts));
                    }
                }
            }
            // Wake a writer waiting for a permit that can no longer come back.
            p.close();
            (lat, errors, first_error)
        }));
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            let mut sent_in_window = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(permit) = permits.acquire().await else {
                    break;
                };
                permit.forget();
                let (head, tail) = &s.frames[i % s.frames.len()];
                i += 1;
                let ts = epoch.elapsed().as_nanos() as u64;
                if ts >= from_ns && ts < to_ns {
                    sent_in_window += 1;
                }
                let frame = format!("{head}{ts}{tail}");
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            (sent_in_window, sink)
        }));
    }
    tokio::time::sleep(Duration::from_nanos(from_ns)).await;
    let meter = Meter::start(target.pid);
    tokio::time::sleep(Duration::from_nanos(to_ns - from_ns)).await;
    let (server, gen, load) = meter.finish();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for r in readers {
        let (l, e, f) = r.await?;
        lat.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let mut sent = 0;
    let mut sinks = Vec::new();
    for w in writers {
        if let Ok((n, sink)) = w.await {
            sent += n;
            sinks.push(sink);
        }
    }
    let delivered = lat.len() as u64;
    let missing = if kind == Kind::Echo || sent == 0 {
        0
    } else {
        sent.saturating_sub(delivered)
    };
    let cpu_each = per_unit(&server, delivered as f64);
    Ok(Report {
        scenario: "relay".into(),
        target: target.name.clone(),
        params: serde_json::to_value(o)?,
        throughput: delivered as f64 / o.secs,
        unit: "msg/s".into(),
        latency: summarize(lat),
        server,
        pinning: String::new(),
        server_cpu_us_each: Some(cpu_each),
        generator_cpu_pct: gen,
        load,
        errors: errors + missing,
        extra: json!({
            "participants": o.rooms * o.per_room,
            "sentInWindow": sent,
            "delivered": delivered,
            "firstError": first_error,
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// fan-out

/// Knobs of `fanout`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FanoutOpts {
    /// Approved members of the chat room, admin included.
    pub members: usize,
    /// Start/end cycles measured.
    pub runs: usize,
    /// Source addresses.
    pub sources: u8,
}

enum Seen {
    Started,
    Ended,
}

/// One chat room of `members` approved members; the admin starts a voice room and every other
/// member's socket waits for `voiceStarted`. Per run: the time from sending createVoiceRoom
/// until the last member has the event ("all delivered"); per member: until it has it.
/// Voice only.
///
/// # Errors
/// Setup failure, or a member missing the event for 30 s.
pub async fn fanout(target: &Target, o: &FanoutOpts) -> anyhow::Result<Report> {
    if target.kind != Kind::Voice {
        bail!("fanout runs against voice-server only");
    }
    let d = Arc::new(dialer(target, o.sources));
    let t = tag();
    let mut admin = d.conn().await?;
    admin.request("hello", json!({"name": "admin"})).await?;
    let room = str_of(
        &admin
            .request("createRoom", json!({"name": format!("fanout-{t}")}))
            .await?,
        "roomId",
    )?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(Seen, Instant)>();
    let others = o.members.saturating_sub(1);
    let joined: Vec<(String, JoinHandle<()>)> = stream::iter(0..others)
        .map(|i| {
            let d = d.clone();
            let room = room.clone();
            let tx = tx.clone();
            async move {
                let mut c = d.conn().await?;
                let h = c.request("hello", json!({"name": format!("m{i}")})).await?;
                c.request("requestJoin", json!({"roomId": room})).await?;
                let uid = str_of(&h, "userId")?;
                let listener = tokio::spawn(async move {
                    while let Ok(Some(text)) = next_text(&mut c.ws).await {
                        let seen = if text.contains("\"event\":\"voiceStarted\"") {
                            Seen::Started
                        } else if text.contains("\"event\":\"voiceEnded\"") {
                            Seen::Ended
                        } else {
                            continue;
                        };
                        if tx.send((seen, Instant::now())).is_err() {
                            return;
                        }
                    }
                });
                Ok::<_, anyhow::Error>((uid, listener))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await
        .context("fanout setup")?;
    drop(tx);
    for (uid, _) in &joined {
        admin
            .request("approveJoin", json!({"roomId": room, "userId": uid}))
            .await?;
    }
    let mut per_member = Vec::new();
    let mut all_delivered = Vec::new();
    let mut create_reply = Vec::new();
    let mut meter = None;
    let wait = Duration::from_secs(30);
    for run in 0..=o.runs {
        // Run 0 warms up (allocations, caches) and is not counted.
        if run == 1 {
            meter = Some(Meter::start(target.pid));
        }
        let t0 = Instant::now();
        let v = admin
            .request("createVoiceRoom", json!({"roomId": room}))
            .await?;
        let replied = t0.elapsed();
        let vr = str_of(&v, "voiceRoomId")?;
        let mut got = 0;
        let mut last = t0;
        let mut this_run = Vec::with_capacity(others);
        while got < others {
            let (seen, at) = tokio::time::timeout(wait, rx.recv())
                .await
                .map_err(|_| {
                    anyhow!("run {run}: {got}/{others} members had voiceStarted after {wait:?}")
                })?
                .ok_or_else(|| anyhow!("listeners ended"))?;
            if let Seen::Started = seen {
                got += 1;
                last = last.max(at);
                this_run.push(at.duration_since(t0).as_nanos() as u64);
            }
        }
        if run > 0 {
            per_member.extend(this_run);
            all_delivered.push(last.duration_since(t0).as_nanos() as u64);
            create_reply.push(replied.as_nanos() as u64);
        }
        admin
            .request("endVoiceRoom", json!({"voiceRoomId": vr}))
            .await?;
        let mut ended = 0;
        while ended < others {
            let (seen, _) = tokio::time::timeout(wait, rx.recv())
                .await
                .map_err(|_| anyhow!("run {run}: voiceEnded missing"))?
                .ok_or_else(|| anyhow!("listeners ended"))?;
            if let Seen::Ended = seen {
                ended += 1;
            }
        }
    }
    let meter = meter.ok_or_else(|| anyhow!("no runs"))?;
    let (server, gen, load) = meter.finish();
    for (_, h) in joined {
        h.abort();
    }
    let all = summarize(all_delivered);
    Ok(Report {
        scenario: "fanout".into(),
        target: target.name.clone(),
        params: serde_json::to_value(o)?,
        throughput: if all.mean_us > 0.0 {
            others as f64 / (all.mean_us / 1e6)
        } else {
            0.0
        },
        unit: "ev/s".into(),
        latency: all,
        server,
        pinning: String::new(),
        server_cpu_us_each: None,
        generator_cpu_pct: gen,
        load,
        errors: 0,
        extra: json!({
            "allDeliveredPerRun": all,
            "perMemberDelivery": summarize(per_member),
            "createVoiceRoomReply": summarize(create_reply),
        }),
    })
}
