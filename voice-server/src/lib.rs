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
//! - [`ws`]: one connection's reader/writer tasks and clean-up; it hands each frame to the
//!   shared `voice_executor::Executor` (the Lambda calls the same one).
//! - `backends` ([`Backends`]): SQLite or memory; `running` ([`spawn`], [`RunningServer`]);
//!   `lifecycle`: rooms kept across a restart, the sweep, stop signals; `logging`.
//! - this file: the wiring (adapters → services → executor → router) and the serve loop.
//! - [`adapters`]: the domains' ports for one process: chat events and resume tokens, the
//!   signal relay, HMAC voice tokens, STUN/TURN, per-connection queues, the adapter set (the
//!   chat rules are `chat_domain::ChatService`, its stores in the adapter crates).
#![warn(missing_docs)]

pub mod adapters;
mod backends;
pub mod config;
pub mod http;
mod lifecycle;
pub mod listener;
mod logging;
pub mod metrics;
pub mod quota;
pub mod recordings;
mod running;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::lifecycle::{keep_rooms_of_previous_process, shutdown_signal, sweep_every, sweep_loop};
use voice_adapters_memory::MemoryChannels;
use voice_adapters_sqlite::SqliteError;
use voice_adapters_std::{HmacKey, ResumeTokens, SystemClock, UuidIds};
use voice_domain::ports::{Adapters, Clock, VoiceRoomStore as _};
use voice_domain::{ServiceConfig, VoiceService};

pub use backends::{Backends, STORED_MESSAGES_PER_ROOM, TOKEN_KEY_SETTING};
pub use config::{Cli, Config, ConfigError, LogFormat, RateLimit, Storage};
pub use logging::{init_tracing, log_subscriber};
pub use running::{spawn, spawn_on, spawn_with, RunningServer};

use chat_domain::{ChatAdapters, ChatService, StoreDirectory};

use crate::adapters::chat::HubChatEvents;
use crate::adapters::hub::{Hub, HubNotifier, Trigger};
use crate::adapters::ice::IceConfig;
use crate::adapters::ports::ServerPorts;
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

pub(crate) struct Ready {
    app: axum::Router,
    executor: Executor<ServerPorts>,
    hub: Hub,
    config: Config,
    addr: SocketAddr,
    /// The relay's channels, to re-register those of the voice rooms kept at start-up.
    relay_channels: MemoryChannels,
    /// Where recordings are kept (pruned after their retention), if anywhere.
    recordings: Option<recordings::RecordingStore>,
}

pub(crate) fn prepare(
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
    let secret = match (&config.token_secret, &backends.token_secret) {
        (Some(s), _) => s.clone(),
        (None, Some(kept)) => kept.clone(),
        (None, None) => {
            warn!("no --token-secret (VOICE_TOKEN_SECRET) set and state in memory: using a random one; voice and resume tokens will not survive a restart");
            HmacKey::random_secret()
        }
    };
    let key = TokenKey::new(secret.clone());
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
            pool: voice_domain::pool::NoPool,
        },
        ServiceConfig {
            capacity: config.capacity,
            credential_ttl: config.credential_ttl,
            reconnect_grace: config.reconnect_grace,
            ..ServiceConfig::default()
        },
    ));
    let sign_ups = Arc::new(quota::SignUps::new(config.new_users_per_ip_per_hour));
    let recording_store = match config.recordings_dir() {
        Some(dir) => Some(
            recordings::RecordingStore::open(
                dir.clone(),
                HmacKey::new(secret.clone()),
                config.recording_limits,
            )
            .map_err(|source| ServeError::Io {
                addr: dir.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let executor = Executor::new(voice.clone())
        .with_chat(
            ChatService::new(ChatAdapters {
                store: chat_state,
                events: Arc::new(HubChatEvents::new(hub.clone())),
                tokens: Arc::new(ResumeTokens::new(HmacKey::new(secret))),
                ids: Arc::new(UuidIds),
                voice: Arc::new(store.clone()),
                clock: clock.clone(),
            })
            .with_limits(config.chat_limits)
            .with_sign_ups(sign_ups.clone()),
        )
        .with_signals(Arc::new(Relay::new(
            key,
            store,
            directory,
            hub.clone(),
            clock,
        )));
    let executor = match &recording_store {
        Some(files) => executor.with_recordings(Arc::new(files.clone())),
        None => executor,
    };
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
            budgets: Arc::new(quota::UserBudgets::new(
                config.user_rate_limit,
                config.user_byte_limit,
                config.user_message_limit,
            )),
            sign_ups,
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
        recordings: recording_store
            .clone()
            .map(|store| recordings::RecordingRoutes {
                store,
                voice: voice.clone(),
            }),
    });
    Ok(Ready {
        app,
        executor,
        hub,
        config,
        addr,
        relay_channels,
        recordings: recording_store,
    })
}

/// The voice gauges of `/metrics`, read from this server's voice store at each scrape.
fn voice_gauges(executor: &Executor<ServerPorts>) -> metrics::VoiceGaugesFn {
    let voice = Arc::clone(executor.voice());
    Arc::new(move || {
        let voice = Arc::clone(&voice);
        Box::pin(async move {
            let rooms = voice
                .ports()
                .store
                .list_active()
                .await
                .inspect_err(|e| warn!(error = %e, "metrics: could not list the voice rooms"))
                .ok()?;
            let mut g = metrics::VoiceGauges {
                active_rooms: rooms.len(),
                ..metrics::VoiceGauges::default()
            };
            for p in rooms.iter().flat_map(|r| r.participants()) {
                g.participants += 1;
                g.reconnecting += usize::from(p.is_reconnecting());
            }
            Some(g)
        })
    })
}

/// Binds `--metrics-addr` when set, before serving (so a bad address stops start-up).
pub(crate) async fn bind_metrics(config: &Config) -> Result<Option<TcpListener>, ServeError> {
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

pub(crate) async fn run(
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
        recordings,
    } = ready;
    let pruner = recordings.map(|store| tokio::spawn(prune_loop(store)));
    let voice = Arc::clone(executor.voice());
    keep_rooms_of_previous_process(&voice, &relay_channels).await;
    let sweeper = tokio::spawn(sweep_loop(
        voice,
        sweep_every(config.sweep_interval, config.reconnect_grace),
        trigger.clone(),
    ));
    info!(%addr, capacity = config.capacity.get(), ice_servers = config.ice_servers.len(), "voice-server listening");
    let metrics = metrics_listener.map(|l| {
        let stop = trigger.clone();
        metrics::spawn(l, voice_gauges(&executor), async move { stop.wait().await })
    });
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
    if let Some(p) = pruner {
        p.abort();
    }
    if let Some(m) = metrics {
        m.abort();
    }
    info!("voice-server stopped");
    Ok(())
}

/// Deletes recordings past their retention at start-up, then every hour (or a quarter of the
/// retention, if shorter).
async fn prune_loop(store: recordings::RecordingStore) {
    let every = (store.limits().retention / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    loop {
        let n = store.prune(SystemClock.now()).await;
        if n > 0 {
            info!(deleted = n, "old recordings deleted");
        }
        tokio::time::sleep(every).await;
    }
}

/// `host[:port]` of a URL such as `wss://chat.example.com/ws`, lower-cased.
fn url_authority(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}
