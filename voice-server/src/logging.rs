//! Log output: text or JSON lines, the level from `RUST_LOG`. Apart from the server's wiring so
//! that tests (which capture logs) and the binary set it up the same way.

use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

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
        tracing_subscriber::registry().with(layer.with_filter(filter).with_filter(no_payloads)),
    )
}
