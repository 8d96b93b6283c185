//! Plain HTTP: health, the embedded web client with its security headers, the origin check.

use serde_json::json;
use voice_server::http::{static_files, CONTENT_SECURITY_POLICY};

use crate::support::{connect_with_origin, http_get, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_says_ok() {
    let app = spawn_app().await;
    let r = http_get(app.addr(), "/healthz").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(r.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn the_web_client_is_served_with_a_strict_csp() {
    let app = spawn_app().await;
    let index = http_get(app.addr(), "/").await;
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = index
        .header("content-security-policy")
        .expect("CSP on the page");
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self';",
        "media-src 'self' blob: mediastream:",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert!(!csp.contains("ws:"), "no WebSocket to any host: {csp}");
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        index.header("permissions-policy"),
        Some("microphone=(self), camera=(self), display-capture=(self)")
    );

    // Every embedded file is served byte for byte, with the same headers.
    let files = static_files();
    for name in ["index.html", "style.css", "app.js"] {
        assert!(
            files.iter().any(|(p, _)| *p == name),
            "{name} is embedded (voice-server/static/{name})"
        );
    }
    for (path, bytes) in files {
        let r = http_get(app.addr(), &format!("/{path}")).await;
        assert_eq!(r.status, 200, "/{path}");
        assert_eq!(&r.body[..], *bytes, "/{path} is served as embedded");
        assert_eq!(
            r.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY)
        );
    }
    assert_eq!(
        &index.body[..],
        files.iter().find(|(p, _)| *p == "index.html").unwrap().1
    );
    let css = http_get(app.addr(), "/style.css").await;
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let js = http_get(app.addr(), "/app.js").await;
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));

    let missing = http_get(app.addr(), "/nope.js").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "NOT_FOUND");
    let traversal = http_get(app.addr(), "/../Cargo.toml").await;
    assert_ne!(traversal.status, 200);
}

#[tokio::test]
async fn the_page_has_no_inline_script() {
    let app = spawn_app().await;
    let index = http_get(app.addr(), "/").await;
    let html = String::from_utf8(index.body).unwrap().to_lowercase();
    // Every <script> loads a file; the CSP would block inline code anyway.
    let mut rest = html.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        assert!(
            rest[i..tag_end].contains("src="),
            "inline script in index.html"
        );
        rest = &rest[tag_end..];
    }
    assert!(!html.contains(" onclick="), "inline handler in index.html");
}

#[tokio::test]
async fn foreign_origins_may_not_open_the_websocket() {
    let app = spawn_app().await;
    let url = app.ws_url();
    let (status, body) = connect_with_origin(&url, "http://evil.example")
        .await
        .expect_err("refused");
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["code"], "FORBIDDEN_ORIGIN");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("--allowed-origin"));
    // Same origin (the page this server served) is fine.
    let same = format!("http://{}", app.addr());
    assert!(connect_with_origin(&url, &same).await.is_ok());

    // An operator can allow another origin.
    let app = spawn_app_with(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    assert!(connect_with_origin(&app.ws_url(), "https://chat.example")
        .await
        .is_ok());
    assert_eq!(
        connect_with_origin(&app.ws_url(), "https://other.example")
            .await
            .err()
            .map(|e| e.0),
        Some(403)
    );
}

/// Every response, JSON ones included, carries `nosniff`; an unknown `Host` (DNS rebinding:
/// the attacker's name resolving to this server) gets 421 and never reaches a route.
#[tokio::test]
async fn unknown_hosts_get_421_and_every_response_is_nosniff() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app().await;
    for path in ["/healthz", "/nope", "/"] {
        let r = http_get(app.addr(), path).await;
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let get = |host: String| async move {
        let mut s = tokio::net::TcpStream::connect(app_addr(&host))
            .await
            .unwrap();
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        raw
    };
    fn app_addr(host: &str) -> std::net::SocketAddr {
        // The port is the app's; the name is what the request claims.
        let port = host.rsplit(':').next().unwrap();
        format!("127.0.0.1:{port}").parse().unwrap()
    }
    let port = app.addr().port();
    let rebound = get(format!("attacker.example:{port}")).await;
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(rebound.contains("UNKNOWN_HOST"), "{rebound}");
    assert!(rebound
        .to_ascii_lowercase()
        .contains("x-content-type-options: nosniff"));
    let local = get(format!("localhost:{port}")).await;
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    // The WebSocket upgrade under a rebound name is refused too (before the Origin check).
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        app.ws_url(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Host", format!("attacker.example:{port}").parse().unwrap());
    req.headers_mut().insert(
        "Origin",
        format!("http://attacker.example:{port}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 421)
        }
        other => panic!("expected 421, got {:?}", other.map(|_| ())),
    }
}
