//! Operator visibility: Prometheus metrics of this process (open connections, refusals by
//! reason, relayed signals, rate-limited frames, slow-reader closes, queued bytes), encoded by
//! the `prometheus-client` crate and served on `--metrics-addr` (off by default) so that they
//! never share the public listener. Voice gauges (active rooms, participants, reconnecting
//! participants) are read from this server's voice store at each scrape.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

type Labels = Vec<(&'static str, &'static str)>;

struct Metrics {
    registry: Registry,
    open_connections: Gauge,
    open_websockets: Gauge,
    rejected: Family<Labels, Counter>,
    signals_relayed: Counter,
    rate_limited: Counter,
    slow_reader_closes: Counter,
    queued_bytes: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("voice");
    let m = Metrics {
        registry: Registry::default(),
        open_connections: Gauge::default(),
        open_websockets: Gauge::default(),
        rejected: Family::default(),
        signals_relayed: Counter::default(),
        rate_limited: Counter::default(),
        slow_reader_closes: Counter::default(),
        queued_bytes: Gauge::default(),
    };
    registry.register(
        "open_connections",
        "Open TCP connections (HTTP and WebSocket)",
        m.open_connections.clone(),
    );
    registry.register(
        "open_websockets",
        "Open WebSocket connections",
        m.open_websockets.clone(),
    );
    registry.register(
        "rejected_connections",
        "Connections refused or closed by a limit, by reason",
        m.rejected.clone(),
    );
    registry.register(
        "signals_relayed",
        "Signaling messages relayed between peers",
        m.signals_relayed.clone(),
    );
    registry.register(
        "rate_limited_frames",
        "Frames refused by the per-connection rate limit",
        m.rate_limited.clone(),
    );
    registry.register(
        "slow_reader_closes",
        "Connections closed because they did not read what was sent to them",
        m.slow_reader_closes.clone(),
    );
    registry.register(
        "queued_bytes",
        "Bytes waiting in per-connection outgoing queues",
        m.queued_bytes.clone(),
    );
    Metrics { registry, ..m }
});

/// A TCP connection was accepted (`+1`) or closed (`-1`).
pub fn connections(delta: i64) {
    METRICS.open_connections.inc_by(delta);
}

/// A WebSocket opened (`+1`) or closed (`-1`).
pub fn websockets(delta: i64) {
    METRICS.open_websockets.inc_by(delta);
}

/// A connection was refused or closed by a limit; `reason` is a fixed label value.
pub fn rejected(reason: &'static str) {
    METRICS
        .rejected
        .get_or_create(&vec![("reason", reason)])
        .inc();
}

/// A signal was relayed.
pub fn signal_relayed() {
    METRICS.signals_relayed.inc();
}

/// A frame was refused by the rate limit.
pub fn rate_limited() {
    METRICS.rate_limited.inc();
}

/// A slow reader was closed.
pub fn slow_reader_closed() {
    METRICS.slow_reader_closes.inc();
    rejected("slow_reader");
}

/// Bytes were queued (`+`) or taken off a queue (`-`).
pub fn queued_bytes(delta: i64) {
    METRICS.queued_bytes.inc_by(delta);
}

/// What a scrape reads from the voice rooms: this server's, at scrape time (`None`: the store
/// could not be read; the gauges are left out rather than reported as zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoiceGauges {
    /// Active voice rooms.
    pub active_rooms: usize,
    /// Participants in them (reconnecting ones included).
    pub participants: usize,
    /// Participants whose connection dropped and who may still resume.
    pub reconnecting: usize,
}

/// Reads [`VoiceGauges`] for a scrape.
pub type VoiceGaugesFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<VoiceGauges>> + Send>> + Send + Sync>;

/// The Prometheus (OpenMetrics) text of every metric, with `voice`'s gauges when given.
pub fn render(voice: Option<VoiceGauges>) -> String {
    let mut out = String::new();
    encode(&mut out, &METRICS.registry).expect("writing to a String cannot fail");
    if let (Some(v), Some(body)) = (voice, out.strip_suffix("# EOF\n")) {
        let mut body = body.to_owned();
        for (name, help, value) in [
            (
                "voice_active_voice_rooms",
                "Active voice rooms",
                v.active_rooms,
            ),
            (
                "voice_participants",
                "Participants in active voice rooms",
                v.participants,
            ),
            (
                "voice_reconnecting_participants",
                "Participants whose connection dropped, within their reconnect grace",
                v.reconnecting,
            ),
        ] {
            let _ = write!(
                body,
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"
            );
        }
        body.push_str("# EOF\n");
        out = body;
    }
    out
}

/// Serves `GET /metrics` on `listener` until `stop` completes (the server's shutdown).
pub fn spawn(
    listener: TcpListener,
    voice: VoiceGaugesFn,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let bound = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string());
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let voice = Arc::clone(&voice);
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(voice().await),
                )
                    .into_response()
            }
        }),
    );
    info!(addr = %bound, "metrics at /metrics");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await;
        if let Err(e) = served {
            warn!(error = %e, "metrics listener failed");
        }
    })
}
