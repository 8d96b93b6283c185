//! The servers under test, each started as its own process so that its RSS and CPU time are its
//! own: voice-server (through the library, rate limit raised), the Node `ws` relay baseline, and
//! a trivial tokio WebSocket echo (the loopback ceiling). Every child is killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::sys::{self, ProcSample};

/// Which server a scenario drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// voice-server (this repository).
    Voice,
    /// bench/node-relay: a hand-written relay on npm `ws`, no auth.
    Node,
    /// A tokio-tungstenite echo: what loopback WebSockets can do at all.
    Echo,
}

impl Kind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Node => "node",
            Self::Echo => "echo",
        }
    }
}

/// How to start targets.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The voice-bench binary (serves `serve-voice` / `serve-echo`).
    pub exe: PathBuf,
    /// Folder of the Node relay (`relay.js`, `node_modules/`).
    pub node_dir: PathBuf,
    /// Outgoing queue per connection on voice-server (its default is 256).
    pub queue_capacity: usize,
    /// voice-server keeps its state in SQLite in this directory (the binary's default storage)
    /// instead of in memory (the default here: nothing written to disk, no data-dir lock
    /// shared between runs).
    pub data_dir: Option<PathBuf>,
    /// Start servers under `taskset -c <cpu>` (every thread of the server on that core), so
    /// that the generator, pinned to another core, does not compete with it ([`Pinning`]).
    pub server_cpu: Option<usize>,
    /// An earlier voice-bench binary whose `serve-voice` is measured as `voice-before` next to
    /// this one's, in the same run (before/after figures under the same load).
    pub before_exe: Option<PathBuf>,
    /// Start voice-server with every abuse limit at its default (the `flood` scenario)
    /// instead of raised.
    pub real_limits: bool,
    /// Chat rooms written straight into the SQLite data directory before the server starts
    /// (the `flood` scenario's "2 000 rooms exist"; needs `data_dir`).
    pub seed_rooms: usize,
}

/// Where the server and the generator run: anywhere (the scheduler shares both cores between
/// them), or each on its own core (`taskset`), so that the server's figures are the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pinning {
    /// No affinity: both processes may use every core.
    Off,
    /// The server on one core, the generator on another.
    On,
}

impl Pinning {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "unpinned",
            Self::On => "pinned",
        }
    }
}

impl Launcher {
    /// This binary, the repository's bench/node-relay, the server's default queue.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            node_dir: default_node_dir(),
            queue_capacity: voice_server::Config::default().queue_capacity,
            data_dir: None,
            server_cpu: None,
            before_exe: None,
            real_limits: false,
            seed_rooms: 0,
        })
    }

    /// Applies `pinning` to the servers started from now on and to this generator process
    /// (`cpus`: the server's core, then the generator's). `Off` lets both run anywhere again.
    ///
    /// # Errors
    /// `taskset` failed (not installed, or a core that does not exist).
    pub fn pin(&mut self, pinning: Pinning, cpus: (usize, usize)) -> anyhow::Result<()> {
        match pinning {
            Pinning::On => {
                self.server_cpu = Some(cpus.0);
                sys::pin_self(&cpus.1.to_string())
            }
            Pinning::Off => {
                self.server_cpu = None;
                sys::pin_self(&sys::all_cpus())
            }
        }
    }

    /// Starts a `kind` server on an ephemeral loopback port and waits until it listens.
    ///
    /// # Errors
    /// The process would not start or did not announce its address in 30 s.
    pub async fn start(&self, kind: Kind) -> anyhow::Result<Target> {
        self.start_from(kind, &self.exe, kind.name()).await
    }

    /// Starts voice-server from [`Launcher::before_exe`], reported as `voice-before`.
    ///
    /// # Errors
    /// No `before_exe`, or as [`Launcher::start`].
    pub async fn start_before(&self) -> anyhow::Result<Target> {
        let exe = self
            .before_exe
            .as_ref()
            .ok_or_else(|| anyhow!("no --before-exe given"))?;
        self.start_from(Kind::Voice, exe, "voice-before").await
    }

    async fn start_from(
        &self,
        kind: Kind,
        exe: &std::path::Path,
        name: &str,
    ) -> anyhow::Result<Target> {
        let mut cmd = match kind {
            Kind::Voice => {
                let mut c = Command::new(exe);
                c.args([
                    "serve-voice",
                    "--addr",
                    "127.0.0.1:0",
                    "--queue-capacity",
                    &self.queue_capacity.to_string(),
                ]);
                if let Some(dir) = &self.data_dir {
                    c.arg("--data-dir").arg(dir);
                }
                if self.real_limits {
                    c.arg("--real-limits");
                }
                if self.seed_rooms > 0 {
                    c.arg("--seed-rooms").arg(self.seed_rooms.to_string());
                }
                if std::env::var_os("RUST_LOG").is_none() {
                    c.env("RUST_LOG", "warn");
                }
                c
            }
            Kind::Echo => {
                let mut c = Command::new(&self.exe);
                c.args(["serve-echo", "--addr", "127.0.0.1:0"]);
                c
            }
            Kind::Node => {
                let script = self.node_dir.join("relay.js");
                if !self.node_dir.join("node_modules/ws").is_dir() {
                    bail!(
                        "{} has no node_modules/ws: run `npm ci` in {}",
                        script.display(),
                        self.node_dir.display()
                    );
                }
                let mut c = Command::new("node");
                c.arg(script).env("PORT", "0");
                c
            }
        };
        if let Some(cpu) = self.server_cpu {
            // taskset execs the server: the pid (and so /proc/<pid>) is the server's own.
            let std = cmd.as_std();
            let mut pinned = Command::new("taskset");
            pinned
                .arg("-c")
                .arg(cpu.to_string())
                .arg(std.get_program())
                .args(std.get_args());
            for (k, v) in std.get_envs() {
                if let Some(v) = v {
                    pinned.env(k, v);
                }
            }
            cmd = pinned;
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {} server", kind.name()))?;
        let pid = child.id().ok_or_else(|| anyhow!("child has no pid"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("LISTENING ") {
                    return Ok::<_, anyhow::Error>(a.trim().parse::<SocketAddr>()?);
                }
            }
            bail!("the {} server exited before listening", kind.name())
        })
        .await
        .map_err(|_| anyhow!("the {} server did not listen in 30 s", kind.name()))??;
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Target {
            kind,
            name: name.to_owned(),
            addr,
            pid,
            child,
        })
    }
}

/// `bench/node-relay` next to this crate.
pub fn default_node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/node-relay")
}

/// A running server process.
pub struct Target {
    /// Which.
    pub kind: Kind,
    /// Its name in reports (`voice`, `voice-before`, `node`, `echo`).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its pid, for `/proc`.
    pub pid: u32,
    child: Child,
}

impl Target {
    /// The WebSocket path.
    pub fn path(&self) -> &'static str {
        match self.kind {
            Kind::Voice => "/ws",
            Kind::Node | Kind::Echo => "/",
        }
    }

    /// Its memory and CPU now.
    pub fn sample(&self) -> ProcSample {
        sys::sample(self.pid).unwrap_or_default()
    }

    /// Kills it and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// How `serve-voice` starts voice-server.
#[derive(Debug, Clone, Default)]
pub struct ServeOpts {
    /// Outgoing queue per connection.
    pub queue_capacity: usize,
    /// SQLite in this directory, or memory.
    pub data_dir: Option<PathBuf>,
    /// Every abuse limit at its default (rates, budgets, quotas, connection caps), as a
    /// deployed server runs: what a flood must get through.
    pub real_limits: bool,
    /// Chat rooms to write into `data_dir` before serving.
    pub seed_rooms: usize,
}

/// `serve-voice`: voice-server's library on `addr` with the per-connection rate limit raised
/// (the generator sends far faster than the 50/s a browser is allowed) and `queue_capacity`,
/// or with every limit at its default (`real_limits`); state in memory, or in SQLite in
/// `data_dir` when given, seeded with `seed_rooms` chat rooms. Prints `LISTENING <addr>` once
/// bound.
///
/// # Errors
/// Bind, seed or serve failure.
pub async fn serve_voice(addr: SocketAddr, opts: ServeOpts) -> anyhow::Result<()> {
    let ServeOpts {
        queue_capacity,
        data_dir,
        real_limits,
        seed_rooms,
    } = opts;
    sys::raise_nofile();
    voice_server::init_tracing(voice_server::LogFormat::Text);
    if seed_rooms > 0 {
        let dir = data_dir
            .as_deref()
            .ok_or_else(|| anyhow!("--seed-rooms needs --data-dir"))?;
        seed(dir, seed_rooms).await?;
    }
    let listener = TcpListener::bind(addr).await?;
    if real_limits {
        let config = voice_server::Config {
            addr: listener.local_addr()?,
            token_secret: Some(voice_domain::ports::Secret::new(
                "voice-bench-token-secret-0123456789",
            )),
            queue_capacity,
            storage: match data_dir {
                Some(data_dir) => voice_server::Storage::Sqlite { data_dir },
                None => voice_server::Storage::InMemory,
            },
            ..voice_server::Config::default()
        };
        println!("LISTENING {}", config.addr);
        voice_server::serve(config, listener).await?;
        return Ok(());
    }
    let config = voice_server::Config {
        addr: listener.local_addr()?,
        token_secret: Some(voice_domain::ports::Secret::new(
            "voice-bench-token-secret-0123456789",
        )),
        rate_limit: voice_server::RateLimit {
            burst: 1_000_000_000,
            per_second: 1e9,
        },
        queue_capacity,
        // Every generated client comes from 127.0.0.1, and a run opens tens of thousands:
        // the per-address and global connection caps (abuse limits) are out of scope here.
        max_connections: 1_000_000,
        max_connections_per_ip: 1_000_000,
        // One generator user per connection, all from 127.0.0.1: the per-user budgets and the
        // new-users-per-address quota are abuse limits, out of scope like the ones above (the
        // per-user budget check itself still runs on every frame).
        user_rate_limit: voice_server::RateLimit {
            burst: 1_000_000_000,
            per_second: 1e9,
        },
        user_byte_limit: voice_server::RateLimit {
            burst: u32::MAX,
            per_second: 1e12,
        },
        user_message_limit: voice_server::RateLimit {
            burst: 1_000_000_000,
            per_second: 1e9,
        },
        new_users_per_ip_per_hour: u32::MAX,
        // A fan-out room has up to thousands of members asking at once: the chat quotas (abuse
        // limits) are out of scope here too.
        chat_limits: {
            let mut l = voice_server::Config::default().chat_limits;
            l.rooms_per_user = 1_000_000;
            l.pending_per_room = 1_000_000;
            l.pending_per_user = 1_000_000;
            l
        },
        // Config::default() is the binary's SQLite in ./voice-data: every run would write to the
        // working directory, share its state and its lock with the previous run.
        storage: match data_dir {
            Some(data_dir) => voice_server::Storage::Sqlite { data_dir },
            None => voice_server::Storage::InMemory,
        },
        ..voice_server::Config::default()
    };
    println!("LISTENING {}", config.addr);
    voice_server::serve(config, listener).await?;
    Ok(())
}

/// Writes `n` chat rooms into the SQLite data directory `dir` (10 per admin, as the room quota
/// allows each person), through the store the server then opens, and closes it again.
async fn seed(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    use chat_domain::{ChatStore as _, RoomRecord};
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let options = voice_adapters_sqlite::OpenOptions {
        // Seeding is set-up, not the measurement: one fsync at the end is enough.
        synchronous: voice_adapters_sqlite::Synchronous::Normal,
        ..voice_adapters_sqlite::OpenOptions::default()
    };
    let db = voice_adapters_sqlite::Database::open_dir(dir, options)
        .map_err(|e| anyhow!("opening {}: {e}", dir.display()))?;
    let chat = voice_adapters_sqlite::SqliteChat::new(db);
    for i in 0..n {
        let room = RoomRecord {
            id: voice_domain::ChatRoomId::parse(format!("00000000-0000-4000-8000-{i:012}"))
                .map_err(|e| anyhow!("{e}"))?,
            name: format!("seeded room {i}"),
            admin: voice_domain::UserId::parse(format!("00000000-0000-4000-9000-{:012}", i / 10))
                .map_err(|e| anyhow!("{e}"))?,
        };
        chat.create_room(&room, usize::MAX)
            .await
            .map_err(|e| anyhow!("seeding room {i}: {e}"))?;
    }
    Ok(())
}

/// `serve-echo`: every text or binary frame is sent back on the same socket. Prints
/// `LISTENING <addr>` once bound.
///
/// # Errors
/// Bind failure.
pub async fn serve_echo(addr: SocketAddr) -> anyhow::Result<()> {
    sys::raise_nofile();
    let listener = TcpListener::bind(addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    return;
                }
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
}
