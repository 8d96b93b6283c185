//! `flood` (issue 13, "a server strangers cannot take down"): a bystander's request latency while
//! the server is quiet, then while **one user** floods it, with every abuse limit of the server
//! at its default (the server runs with `--real-limits`). Done when the bystander's p99 under
//! any one-user flood stays within 2× its quiet value.
//!
//! The flooder is one user on up to three connections (the first `hello` creates it, the others
//! resume it with its token), sending at the user's sustained frame budget (100 frames/s across
//! its connections by default): a flood above the budget is refused frame by frame and closes
//! the connection, so sending right at it is the most one user can make the server do. The
//! cases:
//! - `list`: `listRooms` pages of 100 (the most a client may ask), walking every page of the
//!   ~2 000 rooms that exist (seeded into the SQLite file before the server starts: the room
//!   quota keeps one user at 10) and starting over;
//! - `chat`: `sendMessage` of 1 000 characters to a busy room (20 members on a connection each
//!   and its admin, all reading), within the user's byte budget (128 KiB/s) but far past its
//!   message budget (5/s): the rest are refused `RATE_LIMITED`, and the connections closed for
//!   flooding come back with the user's token;
//! - `writes`: `createRoom`, `requestJoin` (every seeded room in turn), `banMember` and
//!   `unbanMember` (one made-up user in the flooder's own room) in turn: the first rooms and
//!   requests are written, the rest refused by the quotas (10 rooms, 20 waiting requests)
//!   inside the store's write transaction; the ban and the unban are written every time (a
//!   room's admin may ban anyone, member or not), so this case is one user's sustained churn
//!   of real, durable writes.
//!
//! The bystander is another user with a room of its own, sending one request every
//! `1 / bystander_rate` s: `listRooms` (first page of 50) and `getMessages` of its room in turn,
//! and every tenth request a `sendMessage` to it (4/s at 40 requests/s, inside the message
//! budget). Its latencies are taken over quiet windows and flood windows that
//! **alternate** (`rounds` pairs per case, each window `secs` long, the flood warmed up for a
//! second first and drained for a second after), on one server. Alternating short windows,
//! rather than one quiet then one flooded window, spreads whatever else the machine does over
//! both sides of the ratio: on a shared box one compile step landing in a single long window
//! decided the ratio (a quiet p99 of 3 ms in one run, 265 ms in the next).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde_json::{json, Value};

use crate::client::{Conn, Dialer};
use crate::report::{Meter, Report};
use crate::stats::{summarize, Summary};
use crate::targets::Target;

/// What the flooder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FloodCase {
    /// `listRooms` pages of 100, every page in turn.
    List,
    /// `sendMessage` of 1 000 characters to a busy room.
    Chat,
    /// `createRoom` / `requestJoin` in turn.
    Writes,
}

impl FloodCase {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Chat => "chat",
            Self::Writes => "writes",
        }
    }
}

/// The knobs of [`flood`].
#[derive(Debug, Clone)]
pub struct FloodOpts {
    /// The cases, run in turn on one server.
    pub cases: Vec<FloodCase>,
    /// Seconds of each window (quiet, flood).
    pub secs: f64,
    /// Quiet/flood window pairs per case, alternating.
    pub rounds: usize,
    /// The flooder's frames per second across its connections.
    pub flood_rate: f64,
    /// The flooder's connections.
    pub flood_conns: usize,
    /// The bystander's requests per second.
    pub bystander_rate: f64,
    /// Members of the busy room (one connection each).
    pub busy_members: usize,
    /// Client source addresses.
    pub sources: u8,
}

/// One bystander sample: when it was sent, which request (0 listRooms, 1 getMessages,
/// 2 sendMessage), how long its reply took (ns).
type Sample = (Instant, usize, u64);

const BYSTANDER_ACTIONS: [&str; 3] = ["listRooms", "getMessages", "sendMessage"];

fn str_of(v: &Value, k: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {k} in {v}"))
}

/// A new user on a new connection: (connection, user id, resume token).
async fn new_user(d: &Dialer, name: &str) -> anyhow::Result<(Conn, String, String)> {
    let mut c = d.conn().await?;
    let h = c.request("hello", json!({ "name": name })).await?;
    Ok((c, str_of(&h, "userId")?, str_of(&h, "resumeToken")?))
}

/// Every seeded room id, read page by page (setup, not measured).
async fn all_room_ids(c: &mut Conn) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = c
            .request("listRooms", json!({ "cursor": cursor, "limit": 100 }))
            .await?;
        for r in page["rooms"].as_array().into_iter().flatten() {
            ids.push(str_of(r, "roomId")?);
        }
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            return Ok(ids);
        }
    }
}

/// What the flooder's connections counted.
#[derive(Default)]
struct FloodCount {
    ok: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    reconnects: AtomicU64,
}

/// Everything set up once: the bystander, the busy room, the seeded rooms' ids.
struct World {
    busy_room: String,
    room_ids: Vec<String>,
    drains: Vec<tokio::task::JoinHandle<()>>,
    /// The `chat` case's flooder, already an approved member of the busy room: its resume
    /// token (its connections are opened when its case starts: an idle client socket that
    /// nobody reads answers no ping and is closed by the server's idle timeout).
    chat_flooder: String,
}

async fn set_up(d: &Dialer, o: &FloodOpts) -> anyhow::Result<World> {
    let (mut admin, _, _) = new_user(d, "busy admin").await?;
    let busy = admin
        .request("createRoom", json!({ "name": "busy room" }))
        .await?;
    let busy_room = str_of(&busy, "roomId")?;
    let mut drains = Vec::new();
    for i in 0..o.busy_members {
        let (mut c, uid, _) = new_user(d, &format!("member {i}")).await?;
        c.request("requestJoin", json!({ "roomId": busy_room }))
            .await?;
        admin
            .request("approveJoin", json!({ "roomId": busy_room, "userId": uid }))
            .await?;
        drains.push(tokio::spawn(c.drain()));
        // The admin's own budget (and the joiners' new-user quota per address) is far away,
        // but a pause keeps set-up from looking like a flood to the per-connection limit.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut flooder, uid, chat_flooder) = new_user(d, "flooder chat").await?;
    flooder
        .request("requestJoin", json!({ "roomId": busy_room }))
        .await?;
    admin
        .request("approveJoin", json!({ "roomId": busy_room, "userId": uid }))
        .await?;
    drop(flooder);
    let room_ids = all_room_ids(&mut admin).await?;
    // The admin reads the busy room's messages like every member.
    drains.push(tokio::spawn(admin.drain()));
    Ok(World {
        busy_room,
        room_ids,
        drains,
        chat_flooder,
    })
}

/// The flooder: `o.flood_conns` connections of one user (`first`, then `token` resumed),
/// each a closed loop paced at its share of `o.flood_rate` while `active`, until `stop`.
/// `own_room` (the `writes` case): the flooder's room and the real user it bans and unbans
/// there (a made-up id is refused).
#[allow(clippy::too_many_arguments)]
async fn spawn_flood(
    d: Arc<Dialer>,
    case: FloodCase,
    o: FloodOpts,
    busy_room: String,
    room_ids: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicBool>,
    count: Arc<FloodCount>,
    mut first: Option<Conn>,
    token: String,
    own_room: Option<(String, String)>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let conns = o.flood_conns.max(1);
    let period = Duration::from_secs_f64(conns as f64 / o.flood_rate.max(0.1));
    let text = "x".repeat(1000);
    let mut tasks = Vec::new();
    for k in 0..conns {
        let conn = match first.take() {
            Some(c) => c,
            None => {
                let mut c = d.conn().await?;
                c.request("hello", json!({ "name": "flooder", "resumeToken": token }))
                    .await?;
                c
            }
        };
        let (d, stop, active, count, room_ids, busy_room, token, text, (own_room, banned)) = (
            d.clone(),
            stop.clone(),
            active.clone(),
            count.clone(),
            room_ids.clone(),
            busy_room.clone(),
            token.clone(),
            text.clone(),
            own_room.clone().unwrap_or_default(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = conn;
            let mut cursor = Value::Null;
            let mut n: usize = k;
            // Each connection starts a slice of the period later, so the user's frames are
            // spread evenly rather than in bursts of `conns`.
            let start = tokio::time::Instant::now() + period.mul_f64(k as f64 / conns as f64);
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if !active.load(Ordering::Relaxed) {
                    continue;
                }
                n += conns;
                let (action, fields) = match case {
                    FloodCase::List => ("listRooms", json!({ "cursor": cursor, "limit": 100 })),
                    FloodCase::Chat => {
                        ("sendMessage", json!({ "roomId": busy_room, "text": text }))
                    }
                    FloodCase::Writes => match n % 4 {
                        0 => ("createRoom", json!({ "name": format!("flood room {n}") })),
                        1 => (
                            "requestJoin",
                            json!({ "roomId": room_ids[(n / 4) % room_ids.len().max(1)] }),
                        ),
                        2 => ("banMember", json!({ "roomId": own_room, "userId": banned })),
                        _ => (
                            "unbanMember",
                            json!({ "roomId": own_room, "userId": banned }),
                        ),
                    },
                };
                match conn.try_request(action, fields).await {
                    Ok(Ok(data)) => {
                        count.ok.fetch_add(1, Ordering::Relaxed);
                        if case == FloodCase::List {
                            cursor = data["nextCursor"].clone();
                        }
                    }
                    Ok(Err((code, _))) => {
                        *count.refused.lock().unwrap().entry(code).or_default() += 1;
                    }
                    Err(_) => {
                        // Closed (too many refusals): come back as the same user.
                        count.reconnects.fetch_add(1, Ordering::Relaxed);
                        conn = d.conn().await?;
                        conn.request("hello", json!({ "name": "flooder", "resumeToken": token }))
                            .await?;
                    }
                }
            }
            Ok(())
        }));
    }
    Ok(tasks)
}

/// The bystander: one request every `1 / rate` s, in turn, each sample kept, until `stop`.
async fn bystander(
    mut c: Conn,
    room: String,
    rate: f64,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // Reads in turn, and every tenth request a message: 4 a second at the default rate,
        // inside the user's message budget (5/s) like a person chatting.
        let which = if i % 10 == 9 { 2 } else { i % 2 };
        i += 1;
        let fields = match which {
            0 => json!({}),
            1 => json!({ "roomId": room }),
            _ => json!({ "roomId": room, "text": format!("bystander {i}") }),
        };
        let t = Instant::now();
        c.request(BYSTANDER_ACTIONS[which], fields)
            .await
            .context("the bystander was refused")?;
        samples
            .lock()
            .unwrap()
            .push((t, which, t.elapsed().as_nanos() as u64));
    }
    Ok(())
}

/// The samples sent inside any of `windows` (of request `which`, or all), summarised.
fn window(samples: &[Sample], windows: &[(Instant, Instant)], which: Option<usize>) -> Summary {
    summarize(
        samples
            .iter()
            .filter(|(t, w, _)| {
                windows.iter().any(|(from, to)| t >= from && t < to)
                    && which.is_none_or(|x| x == *w)
            })
            .map(|(_, _, ns)| *ns)
            .collect(),
    )
}

/// Runs every case of `o` on `t` (started with `--real-limits` and seeded rooms): one report
/// per case, its latency the bystander's under the flood, the quiet figures in `extra`.
///
/// # Errors
/// Set-up refused, the bystander refused, a socket failure.
pub async fn flood(t: &Target, o: &FloodOpts) -> anyhow::Result<Vec<Report>> {
    let d = Arc::new(Dialer::new(t.addr, t.path(), o.sources));
    let mut world = set_up(&d, o).await?;
    let room_ids = Arc::new(std::mem::take(&mut world.room_ids));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let by_stop = Arc::new(AtomicBool::new(false));
    // The bystander runs on a thread and runtime of its own, like a separate client. On the
    // generator's shared runtime its replies waited behind the 22 busy readers of the chat
    // flood (the generator at 11-28 % CPU against ~6 % otherwise), which the flooded p99 then
    // charged to the server.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let by_thread = {
        let (d, stop, samples, rate) = (
            d.clone(),
            by_stop.clone(),
            samples.clone(),
            o.bystander_rate,
        );
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (mut by, _, _) = new_user(&d, "bystander").await?;
                let own = by
                    .request("createRoom", json!({ "name": "bystander room" }))
                    .await?;
                let own = str_of(&own, "roomId")?;
                let _ = ready_tx.send(());
                bystander(by, own, rate, stop, samples).await
            })
        })
    };
    let join_bystander = move || -> anyhow::Result<()> {
        by_thread
            .join()
            .map_err(|_| anyhow!("the bystander's thread panicked"))?
    };
    let mut join_bystander = Some(join_bystander);
    if ready_rx.await.is_err() {
        let join = join_bystander.take().expect("not joined yet");
        return Err(tokio::task::spawn_blocking(join)
            .await?
            .err()
            .unwrap_or_else(|| anyhow!("the bystander stopped before it started")));
    }
    let secs = Duration::from_secs_f64(o.secs);
    let mut reports = Vec::new();
    // A second of bystander traffic before the first window (connections and caches warm).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for &case in &o.cases {
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicBool::new(false));
        let count = Arc::new(FloodCount::default());
        let (first, token, own_room) = match case {
            FloodCase::Chat => (None, world.chat_flooder.clone(), None),
            FloodCase::List => {
                let (c, _, token) = new_user(&d, "flooder list").await?;
                (Some(c), token, None)
            }
            FloodCase::Writes => {
                let (mut c, _, token) = new_user(&d, "flooder writes").await?;
                let own = c
                    .request("createRoom", json!({ "name": "flooder room" }))
                    .await?;
                // Only a user who has signed in can be banned: a real one, not a made-up id.
                let (_, banned, _) = new_user(&d, "banned").await?;
                (Some(c), token, Some((str_of(&own, "roomId")?, banned)))
            }
        };
        let tasks = spawn_flood(
            d.clone(),
            case,
            o.clone(),
            world.busy_room.clone(),
            room_ids.clone(),
            stop.clone(),
            active.clone(),
            count.clone(),
            first,
            token,
            own_room,
        )
        .await?;
        let (mut quiet_windows, mut flood_windows) = (Vec::new(), Vec::new());
        let (mut quiet_cpu, mut flood_cpu, mut flood_wall, mut ok) = (0.0, 0.0, 0.0, 0u64);
        let mut server = None;
        let (mut gen_cpu, mut load) = (0.0, (0.0, 0.0));
        for round in 0..o.rounds.max(1) {
            let quiet_meter = Meter::start(t.pid);
            let q0 = Instant::now();
            tokio::time::sleep(secs).await;
            quiet_windows.push((q0, Instant::now()));
            quiet_cpu += quiet_meter.finish().0.cpu_secs;

            active.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let ok0 = count.ok.load(Ordering::Relaxed);
            let meter = Meter::start(t.pid);
            let f0 = Instant::now();
            tokio::time::sleep(secs).await;
            let f1 = Instant::now();
            ok += count.ok.load(Ordering::Relaxed) - ok0;
            active.store(false, Ordering::Relaxed);
            let (s, g, l) = meter.finish();
            flood_cpu += s.cpu_secs;
            flood_wall += (f1 - f0).as_secs_f64();
            flood_windows.push((f0, f1));
            if round == 0 {
                load.0 = l.0;
            }
            load.1 = l.1;
            gen_cpu += g / o.rounds.max(1) as f64;
            server = Some(s);
            // Let the server drain what the flood left queued before the next quiet window.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await??;
        }
        let quiet_wall = secs.as_secs_f64() * o.rounds.max(1) as f64;
        let quiet_server_cpu_pct = 100.0 * quiet_cpu / quiet_wall;
        let mut server = server.expect("at least one round");
        server.cpu_secs = flood_cpu;
        server.cpu_pct = 100.0 * flood_cpu / flood_wall.max(1e-9);
        let (q_w, f_w) = (&quiet_windows[..], &flood_windows[..]);

        let all = samples.lock().unwrap().clone();
        if window(&all, q_w, None).n == 0 || window(&all, f_w, None).n == 0 {
            by_stop.store(true, Ordering::Relaxed);
            let join = join_bystander.take().expect("not joined yet");
            return Err(tokio::task::spawn_blocking(join)
                .await?
                .err()
                .unwrap_or_else(|| anyhow!("the bystander sent nothing in a window")));
        }
        let quiet = window(&all, q_w, None);
        let flooded = window(&all, f_w, None);
        let per_action: Value = BYSTANDER_ACTIONS
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let q = window(&all, q_w, Some(i));
                let f = window(&all, f_w, Some(i));
                (
                    (*a).to_owned(),
                    json!({"quiet_p99_us": q.p99_us, "flood_p99_us": f.p99_us, "quiet_p50_us": q.p50_us, "flood_p50_us": f.p50_us}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let refused = count.refused.lock().unwrap().clone();
        for (i, a) in BYSTANDER_ACTIONS.iter().enumerate() {
            let q = window(&all, q_w, Some(i));
            let f = window(&all, f_w, Some(i));
            println!(
                "  {a:<12} p50 {:>6.0} → {:>6.0} µs, p99 {:>7.0} → {:>7.0} µs (n {} / {})",
                q.p50_us, f.p50_us, q.p99_us, f.p99_us, q.n, f.n
            );
        }
        let ratio = flooded.p99_us / quiet.p99_us.max(1e-9);
        println!(
            "flood {:<6}: bystander p99 quiet {:>8.0} µs, flooded {:>8.0} µs ({ratio:.2}x); p50 {:.0} → {:.0} µs; flooder {:.0} ok/s, refused {refused:?}, reconnects {}; server cpu {:.0}% → {:.0}%",
            case.name(),
            quiet.p99_us,
            flooded.p99_us,
            quiet.p50_us,
            flooded.p50_us,
            ok as f64 / flood_wall.max(1e-9),
            count.reconnects.load(Ordering::Relaxed),
            quiet_server_cpu_pct,
            server.cpu_pct,
        );
        reports.push(Report {
            scenario: "flood".into(),
            target: case.name().into(),
            params: json!({
                "secs": o.secs,
                "rounds": o.rounds.max(1),
                "flood_rate": o.flood_rate,
                "flood_conns": o.flood_conns,
                "bystander_rate": o.bystander_rate,
                "busy_members": o.busy_members,
                "rooms": room_ids.len(),
            }),
            throughput: ok as f64 / flood_wall.max(1e-9),
            unit: "ok/s".into(),
            latency: flooded,
            server,
            pinning: String::new(),
            server_cpu_us_each: if ok > 0 {
                Some(server.cpu_secs * 1e6 / ok as f64)
            } else {
                None
            },
            generator_cpu_pct: gen_cpu,
            load,
            errors: 0,
            extra: json!({
                "quiet": quiet,
                "p99_ratio": ratio,
                "per_action": per_action,
                "refused": refused,
                "reconnects": count.reconnects.load(Ordering::Relaxed),
                "quiet_server_cpu_pct": quiet_server_cpu_pct,
            }),
        });
    }
    by_stop.store(true, Ordering::Relaxed);
    let join = join_bystander.take().expect("not joined yet");
    tokio::task::spawn_blocking(join).await??;
    for dr in world.drains {
        dr.abort();
    }
    Ok(reports)
}
