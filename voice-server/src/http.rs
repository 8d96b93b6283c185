//! HTTP routes: the embedded web client (with a strict Content-Security-Policy), `/healthz`,
//! and `/ws`, whose upgrade is refused for foreign origins. Every request must name a known
//! `Host` (else `421`, which defeats DNS rebinding: the attacker's name is not on the list), and
//! every response carries `nosniff`, the CSP and a `Permissions-Policy`.

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::FromRef;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tracing::{info, warn};

use crate::recordings::{self, RecordingRoutes};
use crate::ws::{self, ConnectionContext, MAX_FRAME_BYTES};

/// Read buffer of each WebSocket, in bytes (tungstenite's default is 128 KiB, all of it resident
/// per connection). One read takes at most this much from the socket.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The policy on every response: scripts and styles only from this origin (no inline script
/// or style), connections (the WebSocket included: CSP 3 `'self'` matches `ws:`/`wss:` to the
/// same host) only to this origin, microphone streams as media. With `--public-ws-url` on
/// another origin, that origin is appended to `connect-src` ([`content_security_policy`]).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; connect-src 'self'; media-src 'self' blob: mediastream:; \
img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
form-action 'self'";

/// Powerful features only for this origin's own pages (never for a frame of another site).
pub const PERMISSIONS_POLICY: &str = "microphone=(self), camera=(self), display-capture=(self)";

/// [`CONTENT_SECURITY_POLICY`] with `public_ws_url`'s origin (`wss://host[:port]`) also allowed
/// in `connect-src`, when one is configured.
pub fn content_security_policy(public_ws_url: Option<&str>) -> String {
    let origin = public_ws_url.and_then(|u| {
        let (scheme, rest) = u.split_once("://")?;
        let authority = rest.split('/').next()?;
        (!authority.is_empty() && matches!(scheme, "ws" | "wss"))
            .then(|| format!("{scheme}://{authority}"))
    });
    match origin {
        Some(o) if !o.contains([';', ',', ' ', '\'']) => CONTENT_SECURITY_POLICY.replacen(
            "connect-src 'self'",
            &format!("connect-src 'self' {o}"),
            1,
        ),
        _ => CONTENT_SECURITY_POLICY.to_owned(),
    }
}

/// Which `Host` headers the server answers: loopback names and addresses, the bind address
/// (any IP literal when bound to all interfaces: DNS rebinding always carries a name), and the
/// configured public hosts (with or without a port).
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// The bound IP.
    pub bind_ip: Option<std::net::IpAddr>,
    /// Lower-cased `host` or `host:port` entries.
    pub public_hosts: Vec<String>,
}

impl HostPolicy {
    /// Whether a request with this `Host` header is served.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.public_hosts.contains(&host) {
            return true;
        }
        let name = strip_port(&host);
        if name == "localhost" || self.public_hosts.iter().any(|h| h == name) {
            return true;
        }
        let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        else {
            return false;
        };
        ip.is_loopback()
            || Some(ip) == self.bind_ip
            || self.bind_ip.is_some_and(|b| b.is_unspecified())
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/static_files.rs"));
}

/// Shown at `/` when the crate was built without `static/index.html`.
const FALLBACK_INDEX: &str = "<!doctype html><html><head><meta charset=\"utf-8\">\
<title>voice-server</title></head><body><h1>voice-server</h1><p>The web client was not \
embedded in this build (voice-server/static/index.html was missing). The WebSocket API is at \
/ws.</p></body></html>";

/// The embedded static files, as `(path under static/, bytes)`.
pub fn static_files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FILES
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn with_security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn serve_file(path: &str) -> Response {
    let found = static_files().iter().find(|(p, _)| *p == path);
    let resp = match (found, path) {
        (Some((p, bytes)), _) => (
            [(header::CONTENT_TYPE, content_type(p))],
            Body::from(*bytes),
        )
            .into_response(),
        (None, "index.html") => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            FALLBACK_INDEX,
        )
            .into_response(),
        (None, _) => return not_found(),
    };
    with_security_headers(resp)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": "NOT_FOUND", "message": "no such path; the web client is at /, the WebSocket at /ws"})),
    )
        .into_response()
}

async fn index() -> Response {
    serve_file("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    serve_file(&path)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn fallback() -> Response {
    not_found()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"code": "METHOD_NOT_ALLOWED", "message": "only GET is served here"})),
    )
        .into_response()
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct HttpState {
    /// What each WebSocket runs with.
    pub ws: ConnectionContext,
    /// Origins allowed besides the same origin (`scheme://host[:port]`, lower case).
    pub allowed_origins: Vec<String>,
    /// `Host` headers served.
    pub hosts: HostPolicy,
    /// The `Content-Security-Policy` value ([`content_security_policy`]).
    pub csp: HeaderValue,
    /// The recording upload and download routes, where recordings are stored.
    pub recordings: Option<RecordingRoutes>,
}

impl FromRef<HttpState> for Option<RecordingRoutes> {
    fn from_ref(state: &HttpState) -> Self {
        state.recordings.clone()
    }
}

/// Refuses unknown `Host`s with `421`, and puts `nosniff`, the CSP and the
/// `Permissions-Policy` on every response (JSON errors included).
async fn edge_headers(
    State(state): State<HttpState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let mut resp = match host {
        Some(h) if !state.hosts.allows(&h) => {
            crate::metrics::rejected("unknown_host");
            info!(host = %voice_executor::logsafe::text(&h), "request refused: unknown Host");
            (
                StatusCode::MISDIRECTED_REQUEST,
                Json(json!({
                    "code": "UNKNOWN_HOST",
                    "message": "this server does not answer to that host name; the operator can add it with --public-host"
                })),
            )
                .into_response()
        }
        _ => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, state.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(PERMISSIONS_POLICY),
    );
    resp
}

/// Whether a WebSocket upgrade from `origin` (if any) may proceed.
///
/// No `Origin`: not a browser (browsers always send one on WebSocket upgrades), so cross-site
/// request forgery does not apply; allowed. Otherwise the origin must be listed, or its host
/// (with port) must equal the `Host` header: same origin.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority))
}

async fn websocket(
    State(state): State<HttpState>,
    peer: Option<axum::Extension<crate::listener::PeerIp>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, host, &state.allowed_origins) {
        warn!(
            origin = origin.unwrap_or(""),
            "WebSocket upgrade refused: foreign origin"
        );
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "code": "FORBIDDEN_ORIGIN",
                "message": "this page's origin may not open the voice WebSocket; the operator can allow it with --allowed-origin"
            })),
        )
            .into_response();
    }
    info!("WebSocket upgrade");
    let ctx = state.ws.clone();
    upgrade
        // tungstenite's default read buffer is 128 KiB per connection, zero-filled on the first
        // read, so resident: ~140 KiB per idle connection, 7 GB at 50 000. Signaling frames are
        // a few KB; a larger frame (up to MAX_FRAME_BYTES) still grows this one buffer as needed.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_failed_upgrade(|e| warn!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| ws::run(ctx, socket, peer.map(|p| p.0 .0)))
}

/// The application's routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/ws", get(websocket))
        .route("/recordings/{id}", get(recordings::download))
        .route("/recordings/{id}/chunks", post(recordings::upload))
        .route("/{*path}", get(asset))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge_headers,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_only() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(None, Some("x:1"), &none));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(origin_allowed(
            Some("https://Chat.Example"),
            Some("chat.example"),
            &none
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:9999"),
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(!origin_allowed(Some("null"), Some("127.0.0.1:8080"), &none));
        assert!(!origin_allowed(Some("http://a"), None, &none));
        let listed = vec!["https://app.example".to_string()];
        assert!(origin_allowed(
            Some("https://app.example"),
            Some("api.example"),
            &listed
        ));
    }

    #[test]
    fn hosts_are_loopback_the_bind_address_or_configured() {
        let p = HostPolicy {
            bind_ip: Some("192.168.1.5".parse().unwrap()),
            public_hosts: vec!["chat.example.com".into(), "alt.example:8443".into()],
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:80",
            "192.168.1.5:8080",
            "chat.example.com",
            "chat.example.com:443",
            "alt.example:8443",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "192.168.1.6:8080",
            "alt.example:9999",
            "chat.example.com.evil.example",
            "",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        let any = HostPolicy {
            bind_ip: Some("0.0.0.0".parse().unwrap()),
            public_hosts: vec![],
        };
        assert!(any.allows("10.1.2.3:8080") && !any.allows("rebind.example:8080"));
    }

    #[test]
    fn the_csp_allows_only_this_origin_and_the_public_websocket() {
        assert_eq!(content_security_policy(None), CONTENT_SECURITY_POLICY);
        assert!(!CONTENT_SECURITY_POLICY.contains("ws:"));
        let csp = content_security_policy(Some("wss://rtc.example.com/ws"));
        assert!(
            csp.contains("connect-src 'self' wss://rtc.example.com;"),
            "{csp}"
        );
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
