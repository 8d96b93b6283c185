//! Start-up and shutdown.

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{http_get, spawn_app, Client};

#[tokio::test]
async fn shutdown_closes_open_websockets_with_going_away() {
    let app = spawn_app().await;
    let addr = app.addr();
    let mut c = app.user("Ada").await;
    c.ok("createRoom", json!({"name": "R"})).await;
    let stopped = tokio::spawn(app.server.shutdown());
    assert_eq!(c.closed().await, Some(CloseCode::Away));
    stopped.await.unwrap().expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn servers_are_independent_and_bind_ephemeral_ports() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    assert_ne!(a.addr(), b.addr());
    assert_eq!(http_get(a.addr(), "/healthz").await.status, 200);
    let mut ca = a.user("Ada").await;
    ca.ok("createRoom", json!({"name": "Only on A"})).await;
    let mut cb = Client::connect(&b.ws_url()).await;
    cb.ok("hello", json!({"name": "Bo"})).await;
    assert_eq!(
        cb.ok("listRooms", json!({})).await,
        json!({"rooms": [], "nextCursor": null})
    );
}

#[tokio::test]
async fn invalid_configuration_is_refused_at_start() {
    let mut config = voice_server::Config::ephemeral();
    config.token_secret = Some(voice_domain::ports::Secret::new("short"));
    let err = voice_server::spawn(config).await.err().expect("refused");
    assert!(err.to_string().contains("--token-secret"));
}

#[tokio::test]
async fn the_chat_state_is_a_swappable_backend() {
    use chat_domain::{ChatStore, RoomRecord};
    use std::sync::Arc;
    use voice_adapters_memory::MemoryChat;

    // A chat state that already holds a room (as a durable one would after a restart).
    let chat = MemoryChat::new();
    let admin = voice_domain::UserId::parse("admin-from-before").unwrap();
    chat.create_room(
        &RoomRecord {
            id: voice_domain::ChatRoomId::parse("kept-room").unwrap(),
            name: "Kept".into(),
            admin,
        },
        usize::MAX,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = voice_server::Config::ephemeral();
    config.token_secret = Some(voice_domain::ports::Secret::new("backend-test-secret-0123"));
    let server = voice_server::spawn_with(
        config,
        listener,
        voice_server::Backends {
            chat: Arc::new(chat.clone()) as Arc<dyn ChatStore>,
            ..voice_server::Backends::default()
        },
    )
    .await
    .unwrap();
    let mut c = Client::connect(&server.ws_url()).await;
    c.ok("hello", json!({"name": "Bo"})).await;
    let rooms = c.ok("listRooms", json!({})).await;
    assert_eq!(rooms["rooms"][0]["roomId"], "kept-room");
    assert_eq!(rooms["rooms"][0]["adminUserId"], "admin-from-before");
    // Writes land in the same state.
    c.ok("requestJoin", json!({"roomId": "kept-room"})).await;
    let members = chat
        .members(&voice_domain::ChatRoomId::parse("kept-room").unwrap())
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
    server.shutdown().await.unwrap();
}
