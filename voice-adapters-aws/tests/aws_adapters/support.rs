//! Shared setup: moto with fresh tables, room builders, a request-capturing interceptor.

use std::sync::{Arc, Mutex};

use aws_sdk_sts::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sts::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sts::error::BoxError;
use voice_adapters_aws::testing::{create_tables, MotoServer, TestTables};
use voice_domain::room::VoiceRoom;
use voice_domain::{
    Capacity, ChannelArn, ChannelName, ChatRoomId, ConnectionId, SignalingChannel, Timestamp,
    UserId, VoiceRoomId,
};

/// A running moto with the three tables created.
pub struct Moto {
    pub server: MotoServer,
    pub tables: TestTables,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// Moto with fresh tables, or `None` when the test is skipped (moto not installed, not strict).
pub async fn moto() -> Option<Moto> {
    let server = MotoServer::start_or_skip()?;
    let tables = TestTables::unique();
    let dynamodb = server.dynamodb();
    create_tables(&dynamodb, &tables)
        .await
        .expect("create tables");
    Some(Moto {
        server,
        tables,
        dynamodb,
    })
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}

pub fn chat(s: &str) -> ChatRoomId {
    ChatRoomId::parse(s).unwrap()
}

pub fn vr(s: &str) -> VoiceRoomId {
    VoiceRoomId::parse(s).unwrap()
}

pub fn channel(tag: &str) -> SignalingChannel {
    SignalingChannel {
        name: ChannelName::from_unique(tag).unwrap(),
        arn: ChannelArn::parse(format!(
            "arn:aws:kinesisvideo:us-east-1:123456789012:channel/voice-{tag}/1700000000000"
        ))
        .unwrap(),
    }
}

pub const T0: u64 = 1_700_000_000_000;

/// A fresh active room `id` in `chat_room`, mastered by `master` on `connection`.
pub fn room(id: &str, chat_room: &str, master: &str, connection: &str) -> VoiceRoom {
    VoiceRoom::start(
        vr(id),
        chat(chat_room),
        user(master),
        conn(connection),
        channel(
            &format!("{id}-{master}")
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"),
        ),
        Capacity::default(),
        Timestamp::from_millis(T0),
    )
    .0
}

/// Records the body of every request a client sends.
#[derive(Debug, Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<Vec<u8>>>>);

impl Capture {
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

impl Intercept for Capture {
    fn name(&self) -> &'static str {
        "capture-request-bodies"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context
            .request()
            .body()
            .bytes()
            .unwrap_or_default()
            .to_vec();
        self.0.lock().unwrap().push(body);
        Ok(())
    }
}

/// Decodes an `application/x-www-form-urlencoded` body (the STS query protocol).
pub fn form_decode(body: &[u8]) -> std::collections::HashMap<String, String> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((unescape(k), unescape(v)))
        })
        .collect()
}
