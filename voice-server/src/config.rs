//! Server configuration: the typed [`Config`] the library runs on, and the [`Cli`] (clap, every
//! option also read from a `VOICE_*` environment variable) that the binary turns into one.
//!
//! Secrets (`--token-secret`, `--turn-secret`) are held as [`Secret`] so that `Debug` never
//! prints them, and their environment values are hidden from `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use voice_domain::ports::Secret;
use voice_domain::room::MAX_CAPACITY;
use voice_domain::service::MAX_CREDENTIAL_TTL;
use voice_domain::Capacity;

/// The shortest accepted `--token-secret`/`--turn-secret`, in bytes: shorter keys make the HMAC
/// guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (development).
    #[default]
    Text,
    /// One JSON object per line (log shippers).
    Json,
}

/// Where `--data-dir` points unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./voice-data";

/// Where the server keeps users, chat rooms, memberships, messages and voice rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing survives a restart (`--in-memory`; what tests and embedders start from).
    InMemory,
    /// One SQLite file in `data_dir` (the binary's default): every acknowledged write survives
    /// a crash, and voice rooms left active by a crashed process are ended at start-up.
    Sqlite {
        /// The data directory (created mode 0700 if missing; one server process at a time).
        data_dir: PathBuf,
    },
}

/// How often the server pings each WebSocket by default: often enough that a dead link is
/// noticed within [`DEFAULT_IDLE_TIMEOUT`] even if one pong is lost.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(4);

/// Silence after which a WebSocket is closed by default: two missed pongs and a margin.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::quota::RateLimit;

/// Everything the server needs to run. `Default` is the documented default of every option
/// (listen on 127.0.0.1:8080, random token secret, no ICE servers, capacity 10, 1 h credentials).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (used by [`crate::spawn`]; [`crate::serve`] takes a bound listener).
    pub addr: SocketAddr,
    /// HMAC key for voice tokens and resume tokens; random at start when `None`.
    pub token_secret: Option<Secret>,
    /// STUN/TURN URLs handed to clients (`stun:`, `turn:`, `turns:`).
    pub ice_servers: Vec<String>,
    /// coturn `use-auth-secret` shared secret; TURN URLs get REST credentials when set.
    pub turn_secret: Option<Secret>,
    /// Lifetime of TURN REST credentials.
    pub turn_ttl: Duration,
    /// Participants per voice room (1..=10).
    pub capacity: Capacity,
    /// Lifetime of voice tokens (at most one hour).
    pub credential_ttl: Duration,
    /// Origins allowed to open the WebSocket besides the same origin.
    pub allowed_origins: Vec<String>,
    /// The WebSocket URL clients are told in `wssEndpoint`; `ws://<bound address>/ws` when `None`.
    pub public_ws_url: Option<String>,
    /// How often abandoned voice rooms and orphan channels are swept (the sweep also runs at
    /// least four times per `reconnect_grace`, so that a participant who does not come back
    /// leaves soon after its grace).
    pub sweep_interval: Duration,
    /// How long a participant whose connection dropped (or who was in a voice room when the
    /// server restarted) keeps its place, waiting to resume from a new connection (default
    /// 30 s; zero: a drop is a leave at once).
    pub reconnect_grace: Duration,
    /// Per-connection rate limit on incoming frames.
    pub rate_limit: RateLimit,
    /// Frames per user across all of the user's connections (more connections buy no more).
    pub user_rate_limit: RateLimit,
    /// Bytes per user across all of the user's connections; `burst` is at least one largest
    /// frame ([`crate::ws::MAX_FRAME_BYTES`]).
    pub user_byte_limit: RateLimit,
    /// Chat messages (`sendMessage`) per user across all of the user's connections: each is
    /// stored and fanned out to every member of its room.
    pub user_message_limit: RateLimit,
    /// New users (a `hello` without a usable resume token) per IP address per hour.
    pub new_users_per_ip_per_hour: u32,
    /// Outgoing messages queued per connection before it is dropped as too slow.
    pub queue_capacity: usize,
    /// Outgoing bytes queued per connection before it is dropped as too slow (close 1008).
    pub queue_bytes: usize,
    /// How long one write to a connection may go without completing before the connection is
    /// closed as too slow (a client that stopped reading).
    pub write_timeout: Duration,
    /// How often the server pings each WebSocket.
    pub ping_interval: Duration,
    /// A WebSocket from which nothing (no frame of any kind, pongs included) arrived for this
    /// long is closed and its user leaves voice as on any disconnect.
    pub idle_timeout: Duration,
    /// How long a new WebSocket has to identify with `hello` (or resume) before it is closed.
    pub hello_timeout: Duration,
    /// How long a client may take to send a whole HTTP request head (also: how long an idle
    /// keep-alive or bare TCP connection is kept).
    pub header_read_timeout: Duration,
    /// Open TCP connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// Open TCP connections from one IP address; more are refused with 503.
    pub max_connections_per_ip: usize,
    /// Host names (with optional `:port`) the server answers to besides loopback and its bind
    /// address; requests naming another `Host` get 421 (stops DNS rebinding).
    pub public_hosts: Vec<String>,
    /// Where to serve Prometheus `/metrics`; off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// How long shutdown waits for WebSockets to close and their clean-up (leaving voice rooms)
    /// to finish.
    pub shutdown_grace: Duration,
    /// The chat quotas: rooms per user, waiting join requests per room and per user.
    pub chat_limits: chat_domain::ChatLimits,
    /// Where state is kept.
    pub storage: Storage,
    /// Where recordings are kept; `None`: `<data-dir>/recordings` with SQLite storage, and no
    /// recording at all in memory ([`Config::recordings_dir`]).
    pub recordings: Option<PathBuf>,
    /// Size, retention and timing limits of recordings.
    pub recording_limits: crate::recordings::RecordingLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_secret: None,
            ice_servers: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(3600),
            capacity: Capacity::default(),
            credential_ttl: MAX_CREDENTIAL_TTL,
            allowed_origins: Vec::new(),
            public_ws_url: None,
            sweep_interval: Duration::from_secs(60),
            reconnect_grace: voice_domain::DEFAULT_RECONNECT_GRACE,
            rate_limit: RateLimit::default(),
            // Twice one busy connection's rate: two tabs joining voice at once still pass, a
            // fourth and fifth connection add nothing.
            user_rate_limit: RateLimit {
                burst: 400,
                per_second: 100.0,
            },
            // 128 KiB/s after a 512 KiB burst: a 10-person join's offers and candidates are
            // ~100 KB; a chat flood of large messages is held to this, whatever it fans out to.
            user_byte_limit: RateLimit {
                burst: 512 * 1024,
                per_second: 128.0 * 1024.0,
            },
            // 5 messages/s after a burst of 20: far above anyone typing or pasting, far below
            // what a script fans out to a full room at the frame budget.
            user_message_limit: RateLimit {
                burst: 20,
                per_second: 5.0,
            },
            new_users_per_ip_per_hour: 30,
            queue_capacity: 256,
            queue_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            hello_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 64,
            public_hosts: Vec::new(),
            metrics_addr: None,
            shutdown_grace: Duration::from_secs(5),
            chat_limits: chat_domain::ChatLimits::default(),
            storage: Storage::Sqlite {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            },
            recordings: None,
            recording_limits: crate::recordings::RecordingLimits::default(),
        }
    }
}

impl Config {
    /// The defaults, listening on an ephemeral loopback port and keeping state in memory (no
    /// data directory to clean up or to share between parallel tests): what tests and
    /// embedders start from.
    pub fn ephemeral() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: Storage::InMemory,
            ..Self::default()
        }
    }

    /// Where recordings are kept: `--recordings-dir`, else `<data-dir>/recordings`; `None`
    /// (recording unavailable) in memory without `--recordings-dir`, since recordings are
    /// files.
    pub fn recordings_dir(&self) -> Option<PathBuf> {
        match (&self.recordings, &self.storage) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Storage::Sqlite { data_dir }) => Some(data_dir.join("recordings")),
            (None, Storage::InMemory) => None,
        }
    }

    /// Checks the values the types cannot: secret lengths, ICE URL schemes, TTL bounds, origins.
    ///
    /// # Errors
    /// [`ConfigError`] naming the option and what to pass instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, secret) in [
            ("--token-secret", &self.token_secret),
            ("--turn-secret", &self.turn_secret),
        ] {
            if let Some(s) = secret {
                if s.expose().len() < MIN_SECRET_LEN {
                    return Err(ConfigError::ShortSecret { option: name });
                }
            }
        }
        for url in &self.ice_servers {
            if !["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(ConfigError::BadIceServer { url: url.clone() });
            }
        }
        if self.credential_ttl.is_zero() || self.credential_ttl > MAX_CREDENTIAL_TTL {
            return Err(ConfigError::CredentialTtl);
        }
        if self.turn_ttl.is_zero() {
            return Err(ConfigError::TurnTtl);
        }
        for origin in &self.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(ConfigError::BadOrigin {
                    origin: origin.clone(),
                });
            }
        }
        if self.rate_limit.burst == 0 || self.rate_limit.per_second <= 0.0 {
            return Err(ConfigError::RateLimit);
        }
        if self.user_rate_limit.burst == 0 || self.user_rate_limit.per_second <= 0.0 {
            return Err(ConfigError::UserRateLimit);
        }
        if (self.user_byte_limit.burst as usize) < crate::ws::MAX_FRAME_BYTES
            || self.user_byte_limit.per_second <= 0.0
        {
            return Err(ConfigError::UserByteLimit);
        }
        if self.user_message_limit.burst == 0 || self.user_message_limit.per_second <= 0.0 {
            return Err(ConfigError::UserRateLimit);
        }
        if self.new_users_per_ip_per_hour == 0 {
            return Err(ConfigError::NewUsersPerIp);
        }
        if self.queue_capacity == 0 || self.queue_bytes == 0 {
            return Err(ConfigError::QueueCapacity);
        }
        for (option, d) in [
            ("--write-timeout-secs", self.write_timeout),
            ("--ping-interval-secs", self.ping_interval),
            ("--idle-timeout-secs", self.idle_timeout),
            ("--hello-timeout-secs", self.hello_timeout),
            ("--header-read-timeout-secs", self.header_read_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { option });
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleBelowPing);
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError::ConnectionCap);
        }
        for host in &self.public_hosts {
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(ConfigError::BadHost { host: host.clone() });
            }
        }
        Ok(())
    }
}

/// A configuration value the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A secret shorter than [`MIN_SECRET_LEN`].
    #[error("{option} must be at least {MIN_SECRET_LEN} bytes; generate one with `openssl rand -base64 32`")]
    ShortSecret {
        /// Which option.
        option: &'static str,
    },
    /// An ICE server URL with an unknown scheme.
    #[error("--ice-server {url:?} must start with stun:, stuns:, turn: or turns:")]
    BadIceServer {
        /// The URL given.
        url: String,
    },
    /// A credential TTL of zero or over an hour.
    #[error("--credential-ttl-secs must be between 1 and 3600")]
    CredentialTtl,
    /// A TURN TTL of zero.
    #[error("--turn-ttl-secs must be at least 1")]
    TurnTtl,
    /// An origin that is not `scheme://host[:port]`.
    #[error("--allowed-origin {origin:?} must look like https://chat.example.com (scheme and host, no path or trailing slash)")]
    BadOrigin {
        /// The origin given.
        origin: String,
    },
    /// A capacity outside 1..=10.
    #[error("--capacity must be between 1 and {MAX_CAPACITY}")]
    Capacity,
    /// A rate limit of zero.
    #[error("the rate limit must allow at least one frame")]
    RateLimit,
    /// A per-user frame limit of zero.
    #[error("--user-frames-per-sec must allow at least one frame")]
    UserRateLimit,
    /// A per-user byte limit below one largest frame.
    #[error("--user-bytes-per-sec must be at least 16384 (its burst, 4 s of it, must hold one 64 KiB frame)")]
    UserByteLimit,
    /// No new users at all.
    #[error("--max-new-users-per-ip-per-hour must be at least 1")]
    NewUsersPerIp,
    /// A queue of zero.
    #[error(
        "the per-connection queue must hold at least one message and one byte (--queue-bytes)"
    )]
    QueueCapacity,
    /// A timeout or interval of zero.
    #[error("{option} must be at least 1")]
    ZeroDuration {
        /// Which option.
        option: &'static str,
    },
    /// An idle timeout that a live client answering pings could not meet.
    #[error("--idle-timeout-secs must be longer than --ping-interval-secs (a live client answers each ping)")]
    IdleBelowPing,
    /// A connection cap of zero.
    #[error("--max-connections and --max-connections-per-ip must be at least 1")]
    ConnectionCap,
    /// A public host that is not `host[:port]`.
    #[error("--public-host {host:?} must look like chat.example.com or chat.example.com:8443 (no scheme or path)")]
    BadHost {
        /// The host given.
        host: String,
    },
    /// A secret passed on the command line, where every local user can read it.
    #[error("{option} on the command line is visible to every local user (in /proc/<pid>/cmdline and `ps`); set {env} or pass {option}-file <path to a file readable only by the server>")]
    SecretOnArgv {
        /// Which option.
        option: &'static str,
        /// Its environment variable.
        env: &'static str,
    },
    /// A secret file that could not be read.
    #[error("could not read {option} {path}: {reason}")]
    SecretFile {
        /// Which option.
        option: &'static str,
        /// The path given.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Command line of `voice-server`. Every option can also be set with the environment variable
/// named in `--help` (`VOICE_` prefix); repeatable options take comma-separated values there.
#[derive(Clone, Parser)]
#[command(
    name = "voice-server",
    version,
    about = "Self-hosted voice rooms for group chats: chat, voice rooms and a WebRTC signaling relay over one WebSocket."
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "VOICE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// HMAC key signing voice tokens and resume tokens (at least 16 bytes). When unset, a random
    /// key is generated once and kept in the data directory (so users keep their identity
    /// across restarts), or per process with --in-memory. Only from the environment: on the
    /// command line it is refused (every local user can read a process's arguments).
    #[arg(long, env = "VOICE_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// File holding the token key (trailing newline ignored), instead of VOICE_TOKEN_SECRET.
    #[arg(long, env = "VOICE_TOKEN_SECRET_FILE", conflicts_with = "token_secret")]
    pub token_secret_file: Option<PathBuf>,

    /// STUN/TURN URL handed to clients (repeatable). None by default, which is right on
    /// loopback or a LAN.
    #[arg(long = "ice-server", env = "VOICE_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,

    /// coturn `static-auth-secret` (use-auth-secret): turn:/turns: URLs get REST credentials.
    /// Only from the environment (refused on the command line), or --turn-secret-file.
    #[arg(long, env = "VOICE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// File holding the TURN secret (trailing newline ignored), instead of VOICE_TURN_SECRET.
    #[arg(long, env = "VOICE_TURN_SECRET_FILE", conflicts_with = "turn_secret")]
    pub turn_secret_file: Option<PathBuf>,

    /// Lifetime of TURN credentials, in seconds.
    #[arg(long, env = "VOICE_TURN_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub turn_ttl_secs: u64,

    /// Participants per voice room (1..=10).
    #[arg(long, env = "VOICE_CAPACITY", default_value_t = MAX_CAPACITY,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_CAPACITY)))]
    pub capacity: u8,

    /// Lifetime of voice tokens, in seconds (1..=3600).
    #[arg(long, env = "VOICE_CREDENTIAL_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub credential_ttl_secs: u64,

    /// How long, in seconds, a voice participant whose connection dropped (or who was in a
    /// voice room when the server restarted) keeps its place, to resume without a click from a
    /// new connection. 0: a drop is a leave at once, and a restart ends the voice rooms.
    #[arg(long, env = "VOICE_RECONNECT_GRACE_SECS",
          default_value_t = voice_domain::DEFAULT_RECONNECT_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub reconnect_grace_secs: u64,

    /// Log format.
    #[arg(long, env = "VOICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Origin (e.g. https://chat.example.com) allowed to open the WebSocket besides the same
    /// origin (repeatable). By default only pages whose Origin host equals the Host header may.
    #[arg(
        long = "allowed-origin",
        env = "VOICE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// WebSocket URL told to clients as `wssEndpoint` (behind a reverse proxy, e.g.
    /// wss://chat.example.com/ws). Defaults to ws://<addr>/ws.
    #[arg(long, env = "VOICE_PUBLIC_WS_URL")]
    pub public_ws_url: Option<String>,

    /// Directory of the SQLite database that keeps users, chat rooms, members, messages and
    /// voice rooms across restarts and crashes. Created (mode 0700) if missing; one server
    /// process per directory. Back it up by copying it while the server is stopped.
    #[arg(long, env = "VOICE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Keep everything in memory instead (--data-dir is then ignored): nothing survives a
    /// restart. For demos and tests. VOICE_IN_MEMORY takes true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "VOICE_IN_MEMORY", value_parser = clap::builder::BoolishValueParser::new())]
    pub in_memory: bool,

    /// Bytes queued for one WebSocket before it is closed as a slow reader (close 1008).
    #[arg(long, env = "VOICE_QUEUE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_bytes: u64,

    /// Seconds a write to a client may make no progress before it is closed as a slow reader.
    #[arg(long, env = "VOICE_WRITE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_secs: u64,

    /// Seconds between the server's WebSocket pings.
    #[arg(long, env = "VOICE_PING_INTERVAL_SECS", default_value_t = DEFAULT_PING_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_interval_secs: u64,

    /// Seconds without any frame from a client (pongs included) before its WebSocket is closed
    /// and it leaves voice, as on a disconnect. Must exceed --ping-interval-secs.
    #[arg(long, env = "VOICE_IDLE_TIMEOUT_SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,

    /// Seconds a new WebSocket has to send `hello` before it is closed.
    #[arg(long, env = "VOICE_HELLO_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub hello_timeout_secs: u64,

    /// Seconds a client has to send a whole HTTP request head; also how long an idle HTTP
    /// (keep-alive or bare TCP) connection is kept.
    #[arg(long, env = "VOICE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// Open connections served at once (more get 503). Keep it below the process's file
    /// descriptor limit (`ulimit -n`; the server raises its soft limit to the hard limit).
    #[arg(long, env = "VOICE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Open connections from one IP address (more get 503). Behind a reverse proxy every
    /// client has the proxy's address: raise this to --max-connections there.
    #[arg(long, env = "VOICE_MAX_CONNECTIONS_PER_IP", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_ip: u64,

    /// Host name (e.g. chat.example.com, optionally with :port) clients reach the server by,
    /// besides loopback and the bind address (repeatable). Requests for other hosts get 421.
    #[arg(
        long = "public-host",
        env = "VOICE_PUBLIC_HOSTS",
        value_delimiter = ','
    )]
    pub public_hosts: Vec<String>,

    /// Address to serve Prometheus metrics on (GET /metrics), e.g. 127.0.0.1:9090. Off by
    /// default; keep it off the public network.
    #[arg(long, env = "VOICE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Chat rooms one user may be the admin of (createRoom beyond it: QUOTA_EXCEEDED).
    #[arg(long, env = "VOICE_MAX_ROOMS_PER_USER", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rooms_per_user: u64,

    /// Join requests that may wait for one chat room's admin (more: QUOTA_EXCEEDED).
    #[arg(long, env = "VOICE_MAX_PENDING_PER_ROOM", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_per_room: u64,

    /// Join requests one user may have waiting across all chat rooms (more: QUOTA_EXCEEDED).
    #[arg(long, env = "VOICE_MAX_PENDING_PER_USER", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_per_user: u64,

    /// Bans one chat room may hold (a new banMember beyond it: QUOTA_EXCEEDED; unbanMember
    /// frees a place). A ban may name a non-member, so this bounds the rows one admin writes.
    #[arg(long, env = "VOICE_MAX_BANS_PER_ROOM", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bans_per_room: u64,

    /// Days a resume token stays good after it was issued (sliding: each visit issues a fresh
    /// one); a user away longer comes back as a new user.
    #[arg(long, env = "VOICE_RESUME_TOKEN_TTL_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub resume_token_ttl_days: u64,

    /// Bytes of chat history (as JSON) one getMessages reply carries at most: the newest
    /// messages that fit (up to 100). At least 16 KiB, so the longest message always fits.
    #[arg(long, env = "VOICE_MAX_HISTORY_REPLY_BYTES", default_value_t = 96 * 1024,
          value_parser = clap::value_parser!(u64).range(16384..))]
    pub max_history_reply_bytes: u64,

    /// Rooms per listRooms page (1–100; the client asks for more with the reply's nextCursor).
    #[arg(long, env = "VOICE_ROOMS_PAGE_SIZE", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rooms_page_size: u64,

    /// Members per listMembers page (1–100).
    #[arg(long, env = "VOICE_MEMBERS_PAGE_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub members_page_size: u64,

    /// Frames per second one user may send across all their connections (burst: 4 s of it);
    /// each connection also has its own limit of 50/s.
    #[arg(long, env = "VOICE_USER_FRAMES_PER_SEC", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub user_frames_per_sec: u32,

    /// Bytes per second one user may send across all their connections (burst: 4 s of it; at
    /// least 16384 so the burst holds one largest frame).
    #[arg(long, env = "VOICE_USER_BYTES_PER_SEC", default_value_t = 128 * 1024,
          value_parser = clap::value_parser!(u32).range(16384..))]
    pub user_bytes_per_sec: u32,

    /// Chat messages per second one user may post across all their connections (burst: 4 s
    /// of it); beyond it `sendMessage` answers RATE_LIMITED.
    #[arg(long, env = "VOICE_USER_MESSAGES_PER_SEC", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub user_messages_per_sec: u32,

    /// New users (a `hello` without a saved session) one IP address may create per hour;
    /// beyond it `hello` answers QUOTA_EXCEEDED. Behind a reverse proxy every client has the
    /// proxy's address: raise it there.
    #[arg(long, env = "VOICE_MAX_NEW_USERS_PER_IP_PER_HOUR", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_new_users_per_ip_per_hour: u32,

    /// Directory of recordings (created mode 0700; files 0600). Default: `recordings` in the
    /// data dir; with --in-memory, recording is unavailable unless this is set.
    #[arg(long, env = "VOICE_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,

    /// Largest recording, in MiB: chunks past it are refused (what was uploaded is kept).
    #[arg(long, env = "VOICE_RECORDING_MAX_MB", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub recording_max_mb: u64,

    /// Largest upload chunk, in KiB (one HTTP request body).
    #[arg(long, env = "VOICE_RECORDING_MAX_CHUNK_KB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..=65_536))]
    pub recording_max_chunk_kb: u64,

    /// Days recordings are kept; older ones are deleted (checked hourly).
    #[arg(long, env = "VOICE_RECORDING_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub recording_retention_days: u64,

    /// Seconds a download link stays good.
    #[arg(long, env = "VOICE_RECORDING_LINK_TTL_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub recording_link_ttl_secs: u64,
}

/// Reads a secret from `path` (one line; a trailing newline is dropped).
fn read_secret_file(option: &'static str, path: &std::path::Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
        option,
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()))
}

impl Cli {
    /// Parses `args` (and the `VOICE_*` environment) like [`Parser::parse_from`], refusing a
    /// secret given on the command line: `/proc/<pid>/cmdline` is readable by every local
    /// user. The environment variable or the `-file` option carry it instead.
    ///
    /// # Errors
    /// A clap error (usage, `--help`, `--version`) or [`ConfigError::SecretOnArgv`].
    pub fn parse_checked<I, T>(args: I) -> Result<Result<Self, ConfigError>, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().try_get_matches_from(args)?;
        for (id, option, env) in [
            ("token_secret", "--token-secret", "VOICE_TOKEN_SECRET"),
            ("turn_secret", "--turn-secret", "VOICE_TURN_SECRET"),
        ] {
            if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                return Ok(Err(ConfigError::SecretOnArgv { option, env }));
            }
        }
        Self::from_arg_matches(&matches).map(Ok)
    }

    /// The validated [`Config`] these options describe.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad option.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let token_secret = match &self.token_secret_file {
            Some(p) => Some(read_secret_file("--token-secret-file", p)?),
            None => self.token_secret.map(Secret::new),
        };
        let turn_secret = match &self.turn_secret_file {
            Some(p) => Some(read_secret_file("--turn-secret-file", p)?),
            None => self.turn_secret.map(Secret::new),
        };
        let secs = Duration::from_secs;
        let config = Config {
            addr: self.addr,
            token_secret,
            ice_servers: self.ice_servers,
            turn_secret,
            turn_ttl: Duration::from_secs(self.turn_ttl_secs),
            capacity: Capacity::new(self.capacity).map_err(|_| ConfigError::Capacity)?,
            credential_ttl: Duration::from_secs(self.credential_ttl_secs),
            reconnect_grace: Duration::from_secs(self.reconnect_grace_secs),
            allowed_origins: self.allowed_origins,
            public_ws_url: self.public_ws_url,
            queue_bytes: usize::try_from(self.queue_bytes).unwrap_or(usize::MAX),
            write_timeout: secs(self.write_timeout_secs),
            ping_interval: secs(self.ping_interval_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            hello_timeout: secs(self.hello_timeout_secs),
            header_read_timeout: secs(self.header_read_timeout_secs),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_connections_per_ip: usize::try_from(self.max_connections_per_ip)
                .unwrap_or(usize::MAX),
            public_hosts: self.public_hosts,
            metrics_addr: self.metrics_addr,
            user_rate_limit: RateLimit {
                burst: self.user_frames_per_sec.saturating_mul(4),
                per_second: f64::from(self.user_frames_per_sec),
            },
            user_byte_limit: RateLimit {
                burst: self.user_bytes_per_sec.saturating_mul(4),
                per_second: f64::from(self.user_bytes_per_sec),
            },
            user_message_limit: RateLimit {
                burst: self.user_messages_per_sec.saturating_mul(4),
                per_second: f64::from(self.user_messages_per_sec),
            },
            new_users_per_ip_per_hour: self.max_new_users_per_ip_per_hour,
            chat_limits: chat_domain::ChatLimits {
                rooms_per_user: usize::try_from(self.max_rooms_per_user).unwrap_or(usize::MAX),
                pending_per_room: usize::try_from(self.max_pending_per_room).unwrap_or(usize::MAX),
                pending_per_user: usize::try_from(self.max_pending_per_user).unwrap_or(usize::MAX),
                bans_per_room: usize::try_from(self.max_bans_per_room).unwrap_or(usize::MAX),
                resume_ttl: Duration::from_secs(self.resume_token_ttl_days * 24 * 3600),
                history_bytes: usize::try_from(self.max_history_reply_bytes).unwrap_or(usize::MAX),
                rooms_page: usize::try_from(self.rooms_page_size).unwrap_or(50),
                members_page: usize::try_from(self.members_page_size).unwrap_or(100),
            },
            storage: if self.in_memory {
                Storage::InMemory
            } else {
                Storage::Sqlite {
                    data_dir: self.data_dir,
                }
            },
            recordings: self.recordings_dir,
            recording_limits: crate::recordings::RecordingLimits {
                max_bytes: self.recording_max_mb * 1024 * 1024,
                max_chunk_bytes: usize::try_from(self.recording_max_chunk_kb * 1024)
                    .unwrap_or(usize::MAX),
                retention: Duration::from_secs(self.recording_retention_days * 24 * 3600),
                download_ttl: Duration::from_secs(self.recording_link_ttl_secs),
                ..crate::recordings::RecordingLimits::default()
            },
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["voice-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.capacity.get(), 10);
        assert_eq!(c.credential_ttl, Duration::from_secs(3600));
        assert!(c.ice_servers.is_empty());
        assert!(c.token_secret.is_none());
        assert_eq!(
            c.storage,
            Storage::Sqlite {
                data_dir: PathBuf::from("./voice-data")
            }
        );
    }

    /// The binary's defaults are the embedding's (`Config::default`), which the README and
    /// SECURITY.md document: one set of numbers, not two that drift apart.
    #[test]
    fn the_binarys_defaults_are_the_configs_defaults() {
        let cli = parse(&[]).unwrap();
        let lib = Config::default();
        let pairs: [(&str, String, String); 21] = [
            (
                "capacity",
                format!("{:?}", cli.capacity),
                format!("{:?}", lib.capacity),
            ),
            (
                "credential_ttl",
                format!("{:?}", cli.credential_ttl),
                format!("{:?}", lib.credential_ttl),
            ),
            (
                "turn_ttl",
                format!("{:?}", cli.turn_ttl),
                format!("{:?}", lib.turn_ttl),
            ),
            (
                "reconnect_grace",
                format!("{:?}", cli.reconnect_grace),
                format!("{:?}", lib.reconnect_grace),
            ),
            (
                "rate_limit",
                format!("{:?}", cli.rate_limit),
                format!("{:?}", lib.rate_limit),
            ),
            (
                "user_rate_limit",
                format!("{:?}", cli.user_rate_limit),
                format!("{:?}", lib.user_rate_limit),
            ),
            (
                "user_byte_limit",
                format!("{:?}", cli.user_byte_limit),
                format!("{:?}", lib.user_byte_limit),
            ),
            (
                "user_message_limit",
                format!("{:?}", cli.user_message_limit),
                format!("{:?}", lib.user_message_limit),
            ),
            (
                "new_users_per_ip_per_hour",
                format!("{:?}", cli.new_users_per_ip_per_hour),
                format!("{:?}", lib.new_users_per_ip_per_hour),
            ),
            (
                "queue_capacity",
                format!("{:?}", cli.queue_capacity),
                format!("{:?}", lib.queue_capacity),
            ),
            (
                "queue_bytes",
                format!("{:?}", cli.queue_bytes),
                format!("{:?}", lib.queue_bytes),
            ),
            (
                "write_timeout",
                format!("{:?}", cli.write_timeout),
                format!("{:?}", lib.write_timeout),
            ),
            (
                "ping_interval",
                format!("{:?}", cli.ping_interval),
                format!("{:?}", lib.ping_interval),
            ),
            (
                "idle_timeout",
                format!("{:?}", cli.idle_timeout),
                format!("{:?}", lib.idle_timeout),
            ),
            (
                "hello_timeout",
                format!("{:?}", cli.hello_timeout),
                format!("{:?}", lib.hello_timeout),
            ),
            (
                "header_read_timeout",
                format!("{:?}", cli.header_read_timeout),
                format!("{:?}", lib.header_read_timeout),
            ),
            (
                "max_connections",
                format!("{:?}", cli.max_connections),
                format!("{:?}", lib.max_connections),
            ),
            (
                "max_connections_per_ip",
                format!("{:?}", cli.max_connections_per_ip),
                format!("{:?}", lib.max_connections_per_ip),
            ),
            (
                "chat_limits",
                format!("{:?}", cli.chat_limits),
                format!("{:?}", lib.chat_limits),
            ),
            (
                "sweep_interval",
                format!("{:?}", cli.sweep_interval),
                format!("{:?}", lib.sweep_interval),
            ),
            (
                "shutdown_grace",
                format!("{:?}", cli.shutdown_grace),
                format!("{:?}", lib.shutdown_grace),
            ),
        ];
        let differ: Vec<String> = pairs
            .iter()
            .filter(|(_, a, b)| a != b)
            .map(|(n, a, b)| format!("{n}: binary {a}, Config::default {b}"))
            .collect();
        assert!(differ.is_empty(), "{differ:#?}");
    }

    #[test]
    fn storage_is_sqlite_in_the_data_dir_unless_in_memory() {
        assert_eq!(
            parse(&["--data-dir", "/srv/voice"]).unwrap().storage,
            Storage::Sqlite {
                data_dir: PathBuf::from("/srv/voice")
            }
        );
        assert_eq!(parse(&["--in-memory"]).unwrap().storage, Storage::InMemory);
        assert_eq!(
            parse(&["--in-memory", "--data-dir", "/srv/voice"])
                .unwrap()
                .storage,
            Storage::InMemory
        );
        assert_eq!(Config::ephemeral().storage, Storage::InMemory);
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--data-dir") && help.contains("VOICE_DATA_DIR"));
        assert!(help.contains("./voice-data") && help.contains("--in-memory"));
    }

    #[test]
    fn options_are_parsed_and_bounded() {
        let c = parse(&[
            "--capacity",
            "2",
            "--ice-server",
            "stun:stun.example.org:3478",
            "--ice-server",
            "turn:turn.example.org:3478",
            "--turn-secret",
            "0123456789abcdef0123",
            "--credential-ttl-secs",
            "60",
        ])
        .unwrap();
        assert_eq!(c.capacity.get(), 2);
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.credential_ttl, Duration::from_secs(60));
        assert!(parse(&["--capacity", "11"]).is_err());
        assert!(parse(&["--capacity", "0"]).is_err());
        assert!(parse(&["--credential-ttl-secs", "3601"]).is_err());
        assert!(parse(&["--ice-server", "http://x"])
            .unwrap_err()
            .contains("stun:"));
        assert!(parse(&["--token-secret", "short"])
            .unwrap_err()
            .contains("16 bytes"));
        assert!(parse(&["--allowed-origin", "https://a.example/"]).is_err());
    }

    #[test]
    fn secrets_on_the_command_line_are_refused_pointing_to_env_or_file() {
        for opt in ["--token-secret", "--turn-secret"] {
            let err = Cli::parse_checked(["voice-server", opt, "0123456789abcdef0123"])
                .unwrap()
                .err()
                .expect("refused");
            let text = err.to_string();
            assert!(
                text.contains(opt) && text.contains("-file") && text.contains("VOICE_"),
                "{text}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let c = Cli::parse_checked([
            "voice-server".as_ref(),
            "--token-secret-file".as_ref(),
            file.as_os_str(),
        ])
        .unwrap()
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            c.token_secret.as_ref().map(Secret::expose),
            Some("from-a-file-0123456789")
        );
    }

    #[test]
    fn liveness_and_limit_options_are_bounded() {
        let c = parse(&["--ping-interval-secs", "2", "--idle-timeout-secs", "5"]).unwrap();
        assert_eq!(c.ping_interval, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert!(parse(&["--ping-interval-secs", "10", "--idle-timeout-secs", "10"]).is_err());
        assert!(parse(&["--queue-bytes", "0"]).is_err());
        assert!(parse(&["--public-host", "https://x.example"]).is_err());
        assert!(parse(&["--max-bans-per-room", "0"]).is_err());
        let bans = parse(&["--max-bans-per-room", "7"]).unwrap();
        assert_eq!(bans.chat_limits.bans_per_room, 7);
        let d = parse(&[]).unwrap();
        assert_eq!(d.chat_limits.bans_per_room, 1_000);
        assert_eq!(
            (d.queue_bytes, d.max_connections, d.max_connections_per_ip),
            (1024 * 1024, 10_000, 64)
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = parse(&["--token-secret", "super-secret-value-123"]).unwrap();
        assert!(!format!("{c:?}").contains("super-secret-value-123"));
    }
}
