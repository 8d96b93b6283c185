//! A server running in the background ([`spawn`], [`spawn_on`], [`spawn_with`]): what tests and
//! embedders start, with its bound address and a handle that stops it.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use voice_executor::Executor;

use crate::adapters::hub::Trigger;
use crate::adapters::ports::ServerPorts;
use crate::{bind_metrics, prepare, run, Backends, Config, ServeError};

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
