//! # voice-server
//!
//! Self-hosted voice rooms for group chats: one axum server with a small chat (rooms, join
//! requests, messages), the voice use cases of `voice-domain`, a WebRTC signaling relay over the
//! same WebSocket, and the embedded web client. State (users, chat rooms, members, messages,
//! voice rooms) is kept in SQLite in the data directory ([`Backends::open`]), or in memory with
//! [`Storage::InMemory`] (`--in-memory`, and [`Config::ephemeral`] for tests).
//!
//! The binary (`main.rs`) only parses [`Cli`], sets up logging and calls [`serve`]. Tests and
//! embedders use [`spawn`] (or [`spawn_on`] with their own listener) and get a
//! [`RunningServer`] with its address; dropping it shuts the server down.
//!
//! ```no_run
//! # async fn demo() -> Result<(), voice_server::ServeError> {
//! let server = voice_server::spawn(voice_server::Config::ephemeral()).await?;
//! println!("web client at {}, WebSocket at {}", server.http_url(), server.ws_url());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - [`config`]: [`Config`], [`Cli`] (every option also from `VOICE_*` env).
//! - [`http`]: routes, static files with CSP, origin check.
//! - [`ws`]: one connection's reader/writer tasks and clean-up.
//! - [`adapters`]: the domains' ports for one process: chat events and resume tokens, the
//!   signal relay, HMAC voice tokens, STUN/TURN, per-connection queues, the adapter set (the
//!   chat rules are `chat_domain::ChatService`, its stores in the adapter crates).
#![warn(missing_docs)]

pub mod adapters;
pub mod config;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use tracing_subscriber::util::SubscriberInitExt as _;
use voice_adapters_memory::{MemoryChannels, MemoryStore, SystemClock, UuidIds};
use voice_adapters_sqlite::{Database, OpenOptions, SqliteChat, SqliteError, SqliteStore};
use voice_domain::ports::{Adapters, ChannelTags, Clock, Secret, VoiceRoomStore as _};
use voice_domain::{ServiceConfig, VoiceService};

pub use config::{Cli, Config, ConfigError, LogFormat, RateLimit, Storage};

use chat_domain::{ChatAdapters, ChatService, ChatStore, StoreDirectory};
use voice_adapters_memory::MemoryChat;

use crate::adapters::chat::HubChatEvents;
use crate::adapters::hub::{Hub, HubNotifier, Trigger};
use crate::adapters::ice::IceConfig;
use crate::adapters::ports::{ServerPorts, ServerStore};
use crate::adapters::relay::{Relay, RelayChannels};
use crate::adapters::token::{TokenIssuer, TokenKey};
use voice_executor::Executor;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or serving failed.
    #[error("could not serve on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server task panicked or was cancelled.
    #[error("the server task failed: {0}")]
    Task(String),
    /// The data directory could not be opened (in use, not writable, from a newer version).
    #[error(transparent)]
    Storage(#[from] SqliteError),
    /// The token key kept in the data directory could not be read or stored.
    #[error("could not read or store the token key in the data directory: {0}")]
    StoredKey(String),
}

/// Sets up `tracing` output (text or JSON lines; level from `RUST_LOG`, default `info`).
/// Call once, from the binary.
pub fn init_tracing(format: LogFormat) {
    let spec = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if log_subscriber(format, &spec, ansi, std::io::stdout)
        .try_init()
        .is_err()
    {
        // Already initialised (tests, embedders): keep theirs.
    }
}

/// Log targets whose `trace` lines carry whole WebSocket frames, i.e. voice tokens, resume
/// tokens and TURN credentials. [`log_subscriber`] drops their `trace` lines whatever the
/// filter says; their `debug` and above (handshakes, close frames) still pass.
pub const FRAME_PAYLOAD_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// The subscriber [`init_tracing`] installs, writing to `writer`: `spec` is a `RUST_LOG`
/// filter (an invalid one falls back to `info`), `ansi` colours text lines (for a terminal),
/// and frame payloads are never logged (see [`FRAME_PAYLOAD_TARGETS`]), so that even
/// `RUST_LOG=trace` puts no secret in the logs.
pub fn log_subscriber<W>(
    format: LogFormat,
    spec: &str,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_payloads = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() < tracing::Level::TRACE
            || !FRAME_PAYLOAD_TARGETS.iter().any(|t| {
                meta.target()
                    .strip_prefix(t)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    Box::new(
        // The level filter outermost: its level is then the subscriber's maximum, so that
        // disabled spans and events (tungstenite's per-frame `log` traces above all) are
        // skipped at their call site instead of being dispatched and refused on every frame.
        tracing_subscriber::registry().with(layer.with_filter(no_payloads).with_filter(filter)),
    )
}

/// Serves on `listener` until SIGINT or SIGTERM, then closes every WebSocket and returns.
///
/// # Errors
/// [`ServeError`].
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), ServeError> {
    serve_with_shutdown(config, listener, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes, then closes every WebSocket (close code
/// 1001) and returns once they are closed or `config.shutdown_grace` has passed.
///
/// # Errors
/// [`ServeError`].
pub async fn serve_with_shutdown(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let backends = Backends::open(&config.storage).await?;
    serve_with(config, listener, backends, shutdown).await
}

/// Messages kept per room on disk: more than `getMessages` shows
/// ([`chat_domain::MESSAGE_HISTORY`]), so a longer history can be offered later without having
/// lost it.
pub const STORED_MESSAGES_PER_ROOM: usize = 5 * chat_domain::MESSAGE_HISTORY;

/// The settings key of the token-signing key generated when `--token-secret` is not given.
pub const TOKEN_KEY_SETTING: &str = "token_secret";

/// The storage the server runs on. `Default` is everything in memory; [`Backends::open`]
/// gives the one `config.storage` names (SQLite in the data directory by default). A durable
/// chat state plugs in here without touching the protocol code.
#[derive(Clone)]
pub struct Backends {
    /// Users, chat rooms, memberships and messages; also the voice domain's chat directory.
    pub chat: Arc<dyn ChatStore>,
    /// Voice rooms.
    pub store: ServerStore,
    /// A token-signing key kept by the storage, used when `--token-secret` is not given, so
    /// that resume tokens (and users' identities) survive a restart.
    pub token_secret: Option<Secret>,
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            chat: Arc::new(MemoryChat::new()),
            store: ServerStore::Memory(MemoryStore::new()),
            token_secret: None,
        }
    }
}

impl Backends {
    /// Opens the storage `storage` names: in memory, or the SQLite database in the data
    /// directory (created if missing, locked against a second process, migrated), whose chat
    /// state and voice rooms share one file.
    ///
    /// # Errors
    /// [`ServeError::Storage`] naming the directory and what to do.
    pub async fn open(storage: &Storage) -> Result<Self, ServeError> {
        let data_dir = match storage {
            Storage::InMemory => return Ok(Self::default()),
            Storage::Sqlite { data_dir } => data_dir.clone(),
        };
        let db = tokio::task::spawn_blocking(move || {
            Database::open_dir(&data_dir, OpenOptions::default())
        })
        .await
        .map_err(|e| ServeError::Task(e.to_string()))??;
        let chat = SqliteChat::new(db.clone()).with_message_retention(STORED_MESSAGES_PER_ROOM);
        let key = chat
            .setting_or_insert(
                TOKEN_KEY_SETTING,
                TokenKey::random_secret().expose().to_owned(),
            )
            .await
            .map_err(|e| ServeError::StoredKey(e.to_string()))?;
        info!(path = ?db.path(), "state is kept in SQLite");
        Ok(Self {
            chat: Arc::new(chat),
            store: ServerStore::Sqlite(SqliteStore::new(db)),
            token_secret: Some(Secret::new(key)),
        })
    }
}

/// [`serve_with_shutdown`] over the given [`Backends`].
///
/// # Errors
/// [`ServeError`].
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let trigger = Trigger::new();
    let ready = prepare(config, &listener, backends, trigger.clone())?;
    let metrics = bind_metrics(&ready.config).await?;
    run(ready, listener, metrics, trigger, shutdown).await
}

struct Ready {
    app: axum::Router,
    executor: Executor<ServerPorts>,
    hub: Hub,
    config: Config,
    addr: SocketAddr,
    /// The relay's channels, to re-register those of the voice rooms kept at start-up.
    relay_channels: MemoryChannels,
}

fn prepare(
    config: Config,
    listener: &TcpListener,
    backends: Backends,
    trigger: Trigger,
) -> Result<Ready, ServeError> {
    config.validate()?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        addr: "listener".into(),
        source,
    })?;
    let key = match (&config.token_secret, &backends.token_secret) {
        (Some(s), _) => TokenKey::new(s.clone()),
        (None, Some(kept)) => TokenKey::new(kept.clone()),
        (None, None) => {
            warn!("no --token-secret (VOICE_TOKEN_SECRET) set and state in memory: using a random one; voice and resume tokens will not survive a restart");
            TokenKey::random()
        }
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let hub = Hub::new();
    let store = backends.store;
    let chat_state = backends.chat;
    let directory = StoreDirectory(chat_state.clone());
    let ws_url = config
        .public_ws_url
        .clone()
        .unwrap_or_else(|| format!("ws://{addr}/ws"));
    let relay_channels = MemoryChannels::new(SystemClock);
    let channels = RelayChannels::new(
        relay_channels.clone(),
        ws_url,
        IceConfig::new(
            &config.ice_servers,
            config.turn_secret.clone(),
            config.turn_ttl,
        ),
        directory.clone(),
        clock.clone(),
    );
    let voice = Arc::new(VoiceService::new(
        Adapters::<ServerPorts> {
            store: store.clone(),
            directory: directory.clone(),
            channels,
            credentials: TokenIssuer::new(key.clone()),
            notifier: HubNotifier::new(hub.clone()),
            clock: SystemClock,
            ids: UuidIds,
        },
        ServiceConfig {
            capacity: config.capacity,
            credential_ttl: config.credential_ttl,
            reconnect_grace: config.reconnect_grace,
            ..ServiceConfig::default()
        },
    ));
    let executor = Executor::new(voice.clone())
        .with_chat(
            ChatService::new(ChatAdapters {
                store: chat_state,
                events: Arc::new(HubChatEvents::new(hub.clone())),
                tokens: Arc::new(key.clone()),
                ids: Arc::new(UuidIds),
                voice: Arc::new(store.clone()),
                clock: clock.clone(),
            })
            .with_limits(config.chat_limits),
        )
        .with_signals(Arc::new(Relay::new(
            key,
            store,
            directory,
            hub.clone(),
            clock,
        )));
    let app = http::router(http::HttpState {
        ws: ws::ConnectionContext {
            executor: executor.clone(),
            hub: hub.clone(),
            shutdown: trigger,
            rate_limit: config.rate_limit,
            limits: ws::ConnectionLimits {
                queue: adapters::hub::QueueLimit {
                    messages: config.queue_capacity,
                    bytes: config.queue_bytes,
                },
                write_timeout: config.write_timeout,
                ping_interval: config.ping_interval,
                idle_timeout: config.idle_timeout,
                hello_timeout: config.hello_timeout,
            },
        },
        allowed_origins: config
            .allowed_origins
            .iter()
            .map(|o| o.to_ascii_lowercase())
            .collect(),
        hosts: http::HostPolicy {
            bind_ip: Some(addr.ip()),
            public_hosts: config
                .public_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .chain(config.public_ws_url.as_deref().and_then(url_authority))
                .collect(),
        },
        csp: axum::http::HeaderValue::from_str(&http::content_security_policy(
            config.public_ws_url.as_deref(),
        ))
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static(http::CONTENT_SECURITY_POLICY)),
    });
    Ok(Ready {
        app,
        executor,
        hub,
        config,
        addr,
        relay_channels,
    })
}

/// Binds `--metrics-addr` when set, before serving (so a bad address stops start-up).
async fn bind_metrics(config: &Config) -> Result<Option<TcpListener>, ServeError> {
    match config.metrics_addr {
        Some(maddr) => TcpListener::bind(maddr)
            .await
            .map(Some)
            .map_err(|source| ServeError::Io {
                addr: maddr.to_string(),
                source,
            }),
        None => Ok(None),
    }
}

async fn run(
    ready: Ready,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    trigger: Trigger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Ready {
        app,
        executor,
        hub,
        config,
        addr,
        relay_channels,
    } = ready;
    let voice = Arc::clone(executor.voice());
    keep_rooms_of_previous_process(&voice, &relay_channels).await;
    let sweeper = tokio::spawn(sweep_loop(
        voice,
        sweep_every(config.sweep_interval, config.reconnect_grace),
        trigger.clone(),
    ));
    info!(%addr, capacity = config.capacity.get(), ice_servers = config.ice_servers.len(), "voice-server listening");
    let metrics = metrics_listener.map(|l| metrics::spawn(l, trigger.clone()));
    let stop = trigger.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {
                info!("shutting down: closing WebSockets");
                stop.fire();
            }
            () = stop.wait() => {}
        }
    });
    listener::serve(
        listener,
        app,
        listener::ListenLimits {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            header_read_timeout: config.header_read_timeout,
        },
        trigger.clone(),
    )
    .await;
    trigger.fire();
    // Closed sockets are not enough: each connection task still leaves its voice rooms.
    if tokio::time::timeout(config.shutdown_grace, hub.wait_idle())
        .await
        .is_err()
    {
        warn!(
            open = hub.len(),
            cleaning_up = hub.sessions(),
            "some WebSockets did not close or clean up in time; the next start-up ends their voice rooms"
        );
    }
    sweeper.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    info!("voice-server stopped");
    Ok(())
}

/// `host[:port]` of a URL such as `wss://chat.example.com/ws`, lower-cased.
fn url_authority(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

/// Voice rooms stored as active by a previous process (SQLite) lost every participant's
/// connection with it, and this process has no connection yet. A restart must be a blip, not the
/// end of the calls: every participant becomes reconnecting as of now, so those who come back
/// within the reconnect grace resume into the same voice room, and the sweep removes the others
/// (ending rooms nobody came back to). Runs before the first connection is served; a failure is
/// logged and left to the periodic sweep, which marks the participants of dead connections
/// reconnecting in turn.
async fn keep_rooms_of_previous_process(
    voice: &VoiceService<ServerPorts>,
    relay_channels: &MemoryChannels,
) {
    if voice.config().reconnect_grace.is_zero() {
        // No resume: the sweep ends the rooms at once (reason `abandoned`, channels deleted),
        // since none of their participants' connections is known to this process.
        match voice.sweep().await {
            Ok(r) if r.rooms_ended.is_empty() => {}
            Ok(r) => info!(
                rooms_ended = r.rooms_ended.len(),
                "ended voice rooms left active by the previous process"
            ),
            Err(e) => {
                warn!(error = %e, "could not end voice rooms left by the previous process; the periodic sweep will retry")
            }
        }
        return;
    }
    // The relay's channels lived in the previous process's memory: re-register those of the
    // rooms kept, so that participants resume on their own channel (the mesh plan is unchanged).
    match voice.ports().store.list_active().await {
        Ok(rooms) => {
            for room in &rooms {
                for p in room.participants() {
                    relay_channels.adopt(
                        p.channel.clone(),
                        ChannelTags {
                            chat_room: room.chat_room().clone(),
                            voice_room: room.id().clone(),
                            owner: p.user.clone(),
                        },
                    );
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "could not list the voice rooms of the previous process; the periodic sweep will end them");
            return;
        }
    }
    match voice.restarted().await {
        Ok(kept) if kept.is_empty() => {}
        Ok(kept) => info!(
            rooms = kept.len(),
            "voice rooms of the previous process kept; their participants may resume"
        ),
        Err(e) => {
            warn!(error = %e, "could not keep the voice rooms of the previous process; the periodic sweep will handle them")
        }
    }
}

/// How often to sweep: the configured interval, but at least four times per reconnect grace, so
/// that a participant who does not come back leaves at most a quarter-grace after it (never
/// more often than every 100 ms).
fn sweep_every(interval: std::time::Duration, grace: std::time::Duration) -> std::time::Duration {
    if grace.is_zero() {
        return interval;
    }
    interval
        .min(grace / 4)
        .max(std::time::Duration::from_millis(100))
}

async fn sweep_loop(
    voice: Arc<VoiceService<ServerPorts>>,
    every: std::time::Duration,
    stop: Trigger,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.wait() => return,
            _ = tick.tick() => {}
        }
        match voice.sweep().await {
            Ok(r)
                if r.rooms_ended.is_empty()
                    && r.participants_removed == 0
                    && r.participants_reconnecting == 0
                    && r.channels_deleted == 0
                    && r.failures == 0 => {}
            Ok(r) => info!(
                rooms_ended = r.rooms_ended.len(),
                participants_removed = r.participants_removed,
                participants_reconnecting = r.participants_reconnecting,
                channels_deleted = r.channels_deleted,
                failures = r.failures,
                "sweep"
            ),
            Err(e) => warn!(error = %e, "sweep failed"),
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that completes on
/// either. Installing them eagerly (in `serve`, before the storage is opened and long before
/// "voice-server listening" is logged) matters: tokio only installs a handler when its stream
/// is created, and a SIGTERM that arrived before would take the default action and kill the
/// process without a clean stop (a supervisor that stops the server as soon as it listens hit
/// this).
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    #[cfg(unix)]
    return async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(int) => info!("SIGINT received"),
            () = wait(term) => info!("SIGTERM received"),
        }
    };
    #[cfg(not(unix))]
    return async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        info!("SIGINT received");
    };
}

/// A server running in the background, from [`spawn`] / [`spawn_on`]. Dropping it starts a
/// shutdown; [`RunningServer::shutdown`] also waits for it.
pub struct RunningServer {
    addr: SocketAddr,
    executor: Executor<ServerPorts>,
    metrics_addr: Option<SocketAddr>,
    stop: Trigger,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// The bound address (the real port when `Config::addr` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served, when `Config::metrics_addr` was set (the real port).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The executor the server's connections call: what another transport in the same process
    /// (a test's Lambda event, an embedder's own socket) hands frames to, with the same
    /// services and the same replies as `/ws`.
    pub fn executor(&self) -> &Executor<ServerPorts> {
        &self.executor
    }

    /// `http://<addr>`: the web client, `/healthz`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://<addr>/ws`: the WebSocket API.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops the server (WebSockets get close code 1001) and waits for it.
    ///
    /// # Errors
    /// [`ServeError`] if serving had failed.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop.fire();
        match self.task.take() {
            Some(t) => t.await.map_err(|e| ServeError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.fire();
    }
}

/// Binds `config.addr` and serves in the background (no signal handling: stop it through the
/// returned handle).
///
/// # Errors
/// [`ServeError`] if the config is invalid or the address cannot be bound.
pub async fn spawn(config: Config) -> Result<RunningServer, ServeError> {
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Io {
            addr: config.addr.to_string(),
            source,
        })?;
    spawn_on(config, listener).await
}

/// Serves on an already bound `listener` in the background.
///
/// # Errors
/// [`ServeError`] if the config is invalid.
pub async fn spawn_on(config: Config, listener: TcpListener) -> Result<RunningServer, ServeError> {
    let backends = Backends::open(&config.storage).await?;
    spawn_with(config, listener, backends).await
}

/// Serves on `listener` in the background over the given [`Backends`].
///
/// # Errors
/// [`ServeError`] if the config is invalid.
pub async fn spawn_with(
    config: Config,
    listener: TcpListener,
    backends: Backends,
) -> Result<RunningServer, ServeError> {
    let stop = Trigger::new();
    let ready = prepare(config, &listener, backends, stop.clone())?;
    let addr = ready.addr;
    let executor = ready.executor.clone();
    let metrics = bind_metrics(&ready.config).await?;
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let task = tokio::spawn(run(
        ready,
        listener,
        metrics,
        stop.clone(),
        std::future::pending(),
    ));
    Ok(RunningServer {
        addr,
        executor,
        metrics_addr,
        stop,
        task: Some(task),
    })
}
