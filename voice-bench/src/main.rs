//! `voice-bench`: the load generator's command line. Each scenario starts its target server as a
//! child process (killed at the end), prints one line per run and, with `--json FILE`, appends
//! each [`Report`] as a JSON line.
//!
//! ```sh
//! cargo run --release -p voice-bench -- relay --targets voice,node,echo --repeat 3
//! cargo run --release -p voice-bench -- tiny        # seconds; what CI runs
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use voice_bench::report::Report;
use voice_bench::scenarios::{self, FanoutOpts, IdleOpts, RelayOpts, RoomsOpts};
use voice_bench::stats::median;
use voice_bench::targets::{self, Kind, Launcher, Pinning};
use voice_bench::{lambda_cold, sys};

#[derive(Parser)]
#[command(
    name = "voice-bench",
    about = "Load generator for voice-server and the Node ws baseline over loopback WebSockets."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Append every report as a JSON line to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Client source addresses 127.0.0.2.. to spread sockets over (each has ~28k ports).
    #[arg(long, global = true, default_value_t = 4)]
    sources: u8,
    /// voice-server's outgoing queue per connection (its default: 256).
    #[arg(long, global = true)]
    queue_capacity: Option<usize>,
    /// Run voice-server on SQLite in this (fresh) directory instead of in memory.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Affinity modes to run each scenario in (comma-separated): `off` (both processes anywhere)
    /// and/or `on` (server and generator each on its own core, see --pin-cpus).
    #[arg(long, global = true, value_delimiter = ',', default_value = "off")]
    pinning: Vec<Pinning>,
    /// Also measure `serve-voice` of this earlier voice-bench binary, as target `voice-before`,
    /// right after `voice` in every round (idle and relay): before/after in the same run.
    #[arg(long, global = true)]
    before_exe: Option<PathBuf>,
    /// With `--pinning on`: the server's core, then the generator's.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "0,1",
        num_args = 2
    )]
    pin_cpus: Vec<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hold N connections (hello + approved member of a chat room); RSS per connection.
    Idle {
        /// Connection counts, one fresh server each (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        n: Vec<usize>,
        /// Connections per chat room.
        #[arg(long, default_value_t = 20)]
        group: usize,
        /// Chat rooms set up at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to hold before reading RSS.
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
        /// Servers to measure (voice, node).
        #[arg(long, value_delimiter = ',', default_value = "voice")]
        targets: Vec<Kind>,
    },
    /// createVoiceRoom → getVoiceCredentials ×2 → setMute → leaveVoiceRoom → endVoiceRoom cycles.
    Rooms {
        /// Chat rooms cycling at once.
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// Listening members per chat room.
        #[arg(long, default_value_t = 3)]
        passive: usize,
        /// Warm-up seconds.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Idle approved connections held meanwhile.
        #[arg(long, default_value_t = 0)]
        background: usize,
        /// Runs.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Full-mesh rooms exchanging offers/answers/candidates through `signal`.
    Relay {
        /// Servers, run in turn each repeat (voice, node, echo).
        #[arg(long, value_delimiter = ',', default_value = "voice,node,echo")]
        targets: Vec<Kind>,
        /// Rooms.
        #[arg(long, default_value_t = 20)]
        rooms: usize,
        /// Participants per room.
        #[arg(long, default_value_t = 10)]
        per_room: usize,
        /// Unanswered signals per participant.
        #[arg(long, default_value_t = 4)]
        window: usize,
        /// One signal in this many on a link is an offer/answer, the rest candidates.
        #[arg(long, default_value_t = 5)]
        sdp_every: usize,
        /// Warm-up seconds.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Rounds over the targets.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// A chat room of N approved members: createVoiceRoom until all have voiceStarted.
    Fanout {
        /// Members, admin included.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Start/end cycles.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Fresh servers.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// A bystander's latency, quiet and while one user floods (every server limit at its
    /// default; SQLite in a fresh directory under the temp dir, rooms seeded into it).
    Flood {
        /// Cases, in turn on one server (list, chat, writes).
        #[arg(long, value_delimiter = ',', default_value = "list,chat,writes")]
        cases: Vec<voice_bench::flood::FloodCase>,
        /// Chat rooms that exist (seeded before the server starts).
        #[arg(long, default_value_t = 2000)]
        rooms: usize,
        /// Seconds of each window (quiet, then flooded).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Quiet/flooded window pairs per case, alternating (noise from the rest of the
        /// machine lands on both sides of the ratio).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// The flooder's frames per second across its connections (the server's per-user
        /// budget is 100/s).
        #[arg(long, default_value_t = 100.0)]
        flood_rate: f64,
        /// The flooder's connections.
        #[arg(long, default_value_t = 3)]
        flood_conns: usize,
        /// The bystander's requests per second.
        #[arg(long, default_value_t = 20.0)]
        bystander_rate: f64,
        /// Members of the busy room the chat case floods.
        #[arg(long, default_value_t = 20)]
        busy_members: usize,
    },
    /// A join's sequential AWS round trips (50 ms per call, paused clock: exact, no waiting):
    /// the 10th joiner with a pool hit, a pool miss and no pool, and nine joins at once.
    JoinDepth,
    /// The Lambda bootstrap's start to its first answered event, against a fake Runtime API.
    LambdaCold {
        /// The release binary (target/release/voice-lambda).
        #[arg(long)]
        bootstrap: PathBuf,
        /// Cold starts.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Every scenario with tiny sizes, in seconds: checks the generator still works (CI).
    Tiny {
        /// Skip the Node baseline (no node_modules).
        #[arg(long)]
        no_node: bool,
    },
    /// Machine facts as JSON (for BENCHMARKS.md).
    Machine,
    /// (internal) voice-server with the rate limit raised; prints LISTENING <addr>.
    ServeVoice {
        /// Address.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// Outgoing queue per connection.
        #[arg(long, default_value_t = 256)]
        queue_capacity: usize,
        /// Every abuse limit at its default instead of raised.
        #[arg(long)]
        real_limits: bool,
        /// Chat rooms to write into --data-dir before serving.
        #[arg(long, default_value_t = 0)]
        seed_rooms: usize,
    },
    /// (internal) WebSocket echo; prints LISTENING <addr>.
    ServeEcho {
        /// Address.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
}

struct Out {
    json: Option<std::fs::File>,
    all: Vec<Report>,
    pinning: Pinning,
}

impl Out {
    fn emit(&mut self, mut r: Report) -> anyhow::Result<()> {
        r.pinning = self.pinning.name().to_owned();
        println!("{}", r.line());
        if let Some(f) = &mut self.json {
            writeln!(f, "{}", serde_json::to_string(&r)?)?;
        }
        self.all.push(r);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::JoinDepth) {
        // Its own paused-clock runtime, no server to start.
        for line in voice_bench::join_depth::report() {
            println!("{line}");
        }
        return Ok(());
    }
    sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut launcher = Launcher::from_env()?;
    if let Some(q) = cli.queue_capacity {
        launcher.queue_capacity = q;
    }
    launcher.data_dir.clone_from(&cli.data_dir);
    launcher.before_exe.clone_from(&cli.before_exe);
    let mut out = Out {
        json: match &cli.json {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?,
            ),
            None => None,
        },
        all: Vec::new(),
        pinning: Pinning::Off,
    };
    let sources = cli.sources;
    let cpus = (
        cli.pin_cpus.first().copied().unwrap_or(0),
        cli.pin_cpus.get(1).copied().unwrap_or(1),
    );
    let modes = cli.pinning.clone();
    let pin = |launcher: &mut Launcher, out: &mut Out, mode: Pinning| {
        out.pinning = mode;
        launcher.pin(mode, cpus)
    };
    match cli.cmd {
        Cmd::ServeVoice {
            addr,
            queue_capacity,
            real_limits,
            seed_rooms,
        } => {
            let opts = targets::ServeOpts {
                queue_capacity,
                data_dir: cli.data_dir,
                real_limits,
                seed_rooms,
            };
            return targets::serve_voice(addr, opts).await;
        }
        Cmd::ServeEcho { addr } => return targets::serve_echo(addr).await,
        Cmd::Machine => println!("{}", serde_json::to_string_pretty(&sys::machine())?),
        Cmd::Idle {
            n,
            group,
            concurrency,
            hold_secs,
            targets,
        } => {
            for &mode in &modes {
                pin(&mut launcher, &mut out, mode)?;
                for &(kind, before) in &with_before(&targets, &launcher) {
                    for &n in &n {
                        let t = start(&launcher, kind, before).await?;
                        let o = IdleOpts {
                            n,
                            group,
                            concurrency,
                            sources,
                            hold_secs,
                        };
                        let r = scenarios::idle(&t, &o).await;
                        t.stop().await;
                        out.emit(r?)?;
                    }
                }
            }
        }
        Cmd::Rooms {
            rooms,
            passive,
            warmup,
            secs,
            background,
            repeat,
        } => {
            for _ in 0..repeat {
                for &mode in &modes {
                    pin(&mut launcher, &mut out, mode)?;
                    let t = launcher.start(Kind::Voice).await?;
                    let o = RoomsOpts {
                        rooms,
                        passive,
                        warmup_secs: warmup,
                        secs,
                        background,
                        sources,
                    };
                    let r = scenarios::rooms(&t, &o).await;
                    t.stop().await;
                    out.emit(r?)?;
                }
            }
            summary(&out.all);
        }
        Cmd::Relay {
            targets,
            rooms,
            per_room,
            window,
            sdp_every,
            warmup,
            secs,
            repeat,
        } => {
            for _ in 0..repeat {
                for &mode in &modes {
                    pin(&mut launcher, &mut out, mode)?;
                    for &(kind, before) in &with_before(&targets, &launcher) {
                        let t = start(&launcher, kind, before).await?;
                        let o = RelayOpts {
                            rooms,
                            per_room,
                            window,
                            sdp_every,
                            warmup_secs: warmup,
                            secs,
                            sources,
                        };
                        let r = scenarios::relay(&t, &o).await;
                        t.stop().await;
                        out.emit(r?)?;
                    }
                }
            }
            summary(&out.all);
        }
        Cmd::Fanout {
            members,
            runs,
            repeat,
        } => {
            for _ in 0..repeat {
                for &mode in &modes {
                    pin(&mut launcher, &mut out, mode)?;
                    let t = launcher.start(Kind::Voice).await?;
                    let r = scenarios::fanout(
                        &t,
                        &FanoutOpts {
                            members,
                            runs,
                            sources,
                        },
                    )
                    .await;
                    t.stop().await;
                    out.emit(r?)?;
                }
            }
            summary(&out.all);
        }
        Cmd::Flood {
            cases,
            rooms,
            secs,
            rounds,
            flood_rate,
            flood_conns,
            bystander_rate,
            busy_members,
        } => {
            let fresh =
                std::env::temp_dir().join(format!("voice-bench-flood-{}", std::process::id()));
            launcher.real_limits = true;
            launcher.seed_rooms = rooms;
            for &mode in &modes {
                pin(&mut launcher, &mut out, mode)?;
                let dir = fresh.join(mode.name());
                let _ = std::fs::remove_dir_all(&dir);
                launcher.data_dir = Some(dir.clone());
                let t = launcher.start(Kind::Voice).await?;
                let o = voice_bench::flood::FloodOpts {
                    cases: cases.clone(),
                    secs,
                    rounds,
                    flood_rate,
                    flood_conns,
                    bystander_rate,
                    busy_members,
                    sources,
                };
                let r = voice_bench::flood::flood(&t, &o).await;
                t.stop().await;
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir(&fresh);
                for r in r? {
                    out.emit(r)?;
                }
            }
        }
        Cmd::LambdaCold { bootstrap, runs } => {
            out.emit(lambda_cold::cold_start(&bootstrap, runs).await?)?;
        }
        Cmd::Tiny { no_node } => tiny(&launcher, &mut out, no_node).await?,
        Cmd::JoinDepth => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

/// `targets`, with `voice` followed by `voice-before` when an earlier binary was given.
fn with_before(targets: &[Kind], launcher: &Launcher) -> Vec<(Kind, bool)> {
    let mut out = Vec::new();
    for &k in targets {
        out.push((k, false));
        if k == Kind::Voice && launcher.before_exe.is_some() {
            out.push((k, true));
        }
    }
    out
}

async fn start(launcher: &Launcher, kind: Kind, before: bool) -> anyhow::Result<targets::Target> {
    if before {
        launcher.start_before().await
    } else {
        launcher.start(kind).await
    }
}

/// Every scenario, small: a few connections, a second of load.
async fn tiny(launcher: &Launcher, out: &mut Out, no_node: bool) -> anyhow::Result<()> {
    let sources = 2;
    let mut kinds = vec![Kind::Voice, Kind::Echo];
    if !no_node {
        kinds.insert(1, Kind::Node);
    }
    for &kind in &kinds {
        if kind == Kind::Echo {
            continue;
        }
        let t = launcher.start(kind).await?;
        let r = scenarios::idle(
            &t,
            &IdleOpts {
                n: 40,
                group: 10,
                concurrency: 4,
                sources,
                hold_secs: 0.2,
            },
        )
        .await;
        t.stop().await;
        out.emit(r?)?;
    }
    let t = launcher.start(Kind::Voice).await?;
    let r = scenarios::rooms(
        &t,
        &RoomsOpts {
            rooms: 4,
            passive: 1,
            warmup_secs: 0.2,
            secs: 1.0,
            background: 20,
            sources,
        },
    )
    .await;
    t.stop().await;
    out.emit(r?)?;
    for &kind in &kinds {
        let t = launcher.start(kind).await?;
        let r = scenarios::relay(
            &t,
            &RelayOpts {
                rooms: 2,
                per_room: 3,
                window: 2,
                sdp_every: 5,
                warmup_secs: 0.2,
                secs: 1.0,
                sources,
            },
        )
        .await;
        t.stop().await;
        out.emit(r?)?;
    }
    let t = launcher.start(Kind::Voice).await?;
    let r = scenarios::fanout(
        &t,
        &FanoutOpts {
            members: 20,
            runs: 3,
            sources,
        },
    )
    .await;
    t.stop().await;
    out.emit(r?)?;
    let dir = std::env::temp_dir().join(format!("voice-bench-tiny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut flood_launcher = launcher.clone();
    flood_launcher.real_limits = true;
    flood_launcher.seed_rooms = 120;
    flood_launcher.data_dir = Some(dir.clone());
    let t = flood_launcher.start(Kind::Voice).await?;
    let r = voice_bench::flood::flood(
        &t,
        &voice_bench::flood::FloodOpts {
            cases: vec![
                voice_bench::flood::FloodCase::List,
                voice_bench::flood::FloodCase::Chat,
                voice_bench::flood::FloodCase::Writes,
            ],
            secs: 0.5,
            rounds: 2,
            flood_rate: 100.0,
            flood_conns: 3,
            bystander_rate: 20.0,
            busy_members: 2,
            sources,
        },
    )
    .await;
    t.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    for r in r? {
        out.emit(r)?;
    }
    Ok(())
}

/// Medians over repeats, per scenario, target and pinning, and relay ratios to the Node
/// baseline in each pinning mode.
fn summary(all: &[Report]) {
    let mut keys: Vec<(String, String, String)> = all
        .iter()
        .map(|r| (r.scenario.clone(), r.pinning.clone(), r.target.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let med = |s: &str, p: &str, t: &str, f: &dyn Fn(&Report) -> f64| {
        median(
            all.iter()
                .filter(|r| r.scenario == s && r.pinning == p && r.target == t)
                .map(f)
                .collect(),
        )
    };
    println!("-- medians over {} runs", all.len());
    for (s, p, t) in &keys {
        println!(
            "{s:<7} {t:<6} {p:<8} {:>12.0} {:<7} cpu/each {:>6.1} µs (user {:>5.1})  p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs  server cpu {:>5.0}%",
            med(s, p, t, &|r| r.throughput),
            all.iter().find(|r| &r.scenario == s).map_or("", |r| r.unit.as_str()),
            med(s, p, t, &|r| r.server_cpu_us_each.unwrap_or(f64::NAN)),
            med(s, p, t, &|r| r.server_cpu_us_each.unwrap_or(f64::NAN)
                * r.server.user_cpu_secs
                / r.server.cpu_secs.max(1e-9)),
            med(s, p, t, &|r| r.latency.p50_us),
            med(s, p, t, &|r| r.latency.p99_us),
            med(s, p, t, &|r| r.latency.max_us),
            med(s, p, t, &|r| r.server.cpu_pct),
        );
    }
    let mut modes: Vec<&str> = all.iter().map(|r| r.pinning.as_str()).collect();
    modes.sort_unstable();
    modes.dedup();
    for p in modes {
        let m = |t: &str, f: &dyn Fn(&Report) -> f64| med("relay", p, t, f);
        let each = |t: &str| m(t, &|r| r.server_cpu_us_each.unwrap_or(f64::NAN));
        let node = m("node", &|r| r.throughput);
        let echo = m("echo", &|r| r.throughput);
        for v in ["voice", "voice-before"] {
            let voice = m(v, &|r| r.throughput);
            if node > 0.0 && voice > 0.0 {
                println!(
                    "relay {p}: {v}/node CPU per signal {:.2}x, p99 {:.2}x, msg/s {:.2}x; {v}/echo msg/s {:.2}",
                    each(v) / each("node"),
                    m(v, &|r| r.latency.p99_us) / m("node", &|r| r.latency.p99_us),
                    voice / node,
                    if echo > 0.0 { voice / echo } else { 0.0 }
                );
            }
        }
    }
}
