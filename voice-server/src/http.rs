//! HTTP routes: the embedded web client (with a strict Content-Security-Policy), `/healthz`,
//! and `/ws`, whose upgrade is refused for foreign origins.

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::{info, warn};

use crate::ws::{self, ConnectionContext, MAX_FRAME_BYTES};

/// Read buffer of each WebSocket, in bytes (tungstenite's default is 128 KiB, all of it resident
/// per connection). One read takes at most this much from the socket.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The policy on every page and asset: scripts and styles only from this origin (no inline
/// script or style), WebSocket to this server, microphone streams as media.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; \
img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
form-action 'self'";

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
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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
        .on_upgrade(move |socket| ws::run(ctx, socket))
}

/// The application's routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/ws", get(websocket))
        .route("/{*path}", get(asset))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
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
    fn content_types_by_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
