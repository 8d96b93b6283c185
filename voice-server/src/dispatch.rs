//! One request frame in, one reply frame out: parses the envelope, routes by `action`, and
//! translates between the wire and the chat service, the voice service and the relay. No rule
//! lives here; every refusal comes from those and is only mapped to its wire code.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn, Instrument};
use voice_domain::errors::ErrorClass;
use voice_domain::protocol::{Reply, VoiceCommand, VoiceRequest, WireError, VOICE_ACTIONS};
use voice_domain::{ChatRoomId, ConnectionId, UserId, VoiceRoomId, VoiceService};

use crate::adapters::ports::ServerPorts;
use crate::adapters::relay::{Relay, SignalError, SignalKind, SignalRequest};
use chat_domain::ChatService;

/// Chat actions (self-hosted only).
pub const CHAT_ACTIONS: &[&str] = &[
    "hello",
    "createRoom",
    "listRooms",
    "requestJoin",
    "approveJoin",
    "denyJoin",
    "listMembers",
    "sendMessage",
    "getMessages",
    "removeMember",
    "banMember",
    "unbanMember",
    "signOutEverywhere",
];

/// Longest accepted `requestId`, in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// What handles requests: the services, shared by every connection.
#[derive(Clone)]
pub struct Dispatcher {
    /// Voice use cases.
    pub voice: Arc<VoiceService<ServerPorts>>,
    /// Chat rules.
    pub chat: ChatService,
    /// Signaling relay.
    pub relay: Relay,
}

fn wire(code: &str, message: impl Into<String>, retryable: bool) -> WireError {
    WireError {
        code: code.into(),
        message: message.into(),
        retryable,
    }
}

impl From<SignalError> for WireError {
    fn from(e: SignalError) -> Self {
        wire(e.code(), e.to_string(), e.retryable())
    }
}

/// The envelope's `requestId` and `action`, read as far as the frame allows (so even a refusal
/// can be matched by the client).
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The request id, if a valid one was sent.
    pub request_id: Option<String>,
    /// The action, if one was sent (empty otherwise).
    pub action: String,
}

/// Parses a frame's JSON and its envelope.
///
/// # Errors
/// The envelope read so far and a `BAD_REQUEST`.
pub fn parse_frame(text: &str) -> Result<(Envelope, Value), (Envelope, WireError)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Envelope::default(),
            WireError::bad_request(format!("the frame is not valid JSON: {e}")),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err((
            Envelope::default(),
            WireError::bad_request("the frame must be a JSON object with an \"action\""),
        ));
    };
    let action = obj
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let request_id = match obj.get("requestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_REQUEST_ID_CHARS => Some(s.clone()),
        Some(_) => {
            return Err((
                Envelope {
                    request_id: None,
                    action,
                },
                WireError::bad_request(format!(
                    "requestId must be a string of at most {MAX_REQUEST_ID_CHARS} characters"
                )),
            ))
        }
    };
    let env = Envelope { request_id, action };
    if env.action.is_empty() {
        return Err((
            env,
            WireError::bad_request("missing \"action\" (a string naming the request)"),
        ));
    }
    Ok((env, value))
}

/// Serialises a reply frame.
pub fn reply_frame(env: &Envelope, result: Result<Value, WireError>) -> String {
    let reply = match result {
        Ok(data) => Reply::ok(env.request_id.clone(), env.action.clone(), data),
        Err(e) => Reply::err(env.request_id.clone(), env.action.clone(), e),
    };
    serde_json::to_string(&reply).expect("replies always serialise")
}

fn fields<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, WireError> {
    serde_json::from_value(value)
        .map_err(|e| WireError::bad_request(format!("invalid fields: {e}")))
}

fn data(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("views always serialise")
}

fn room_id(s: &str) -> Result<ChatRoomId, WireError> {
    ChatRoomId::parse(s).map_err(|e| WireError::bad_request(format!("roomId: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hello {
    name: String,
    #[serde(default)]
    resume_token: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InRoom {
    room_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Decide {
    room_id: String,
    user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Send {
    room_id: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Signal {
    voice_room_id: String,
    token: String,
    to: String,
    kind: SignalKind,
    payload: Value,
}

impl Dispatcher {
    /// Handles one text frame from `conn` and returns the reply frame.
    pub async fn handle(&self, conn: &ConnectionId, text: &str) -> String {
        let (env, value) = match parse_frame(text) {
            Ok(parsed) => parsed,
            Err((env, e)) => {
                info!(code = %e.code, "malformed request refused");
                return reply_frame(&env, Err(e));
            }
        };
        // Everything from the frame is user-controlled: only known action names are logged, and
        // ids are escaped and truncated (a newline in them cannot forge a log line).
        let span = tracing::info_span!(
            "request",
            action = %crate::logsafe::action(&env.action),
            request_id = %crate::logsafe::text(env.request_id.as_deref().unwrap_or("")),
            chat_room_id = tracing::field::Empty,
            voice_room_id = tracing::field::Empty,
        );
        // Log lines of this request carry the rooms it names (ids are validated later, so they
        // are escaped and truncated here).
        if let Some(id) = value.get("roomId").and_then(Value::as_str) {
            span.record("chat_room_id", crate::logsafe::text(id));
        }
        if let Some(id) = value.get("voiceRoomId").and_then(Value::as_str) {
            span.record("voice_room_id", crate::logsafe::text(id));
        }
        let result = self
            .route(conn, &env.action, value)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            let _g = span.enter();
            if e.retryable || e.code == "INTERNAL" {
                warn!(code = %e.code, "request failed");
            } else {
                info!(code = %e.code, "request refused");
            }
        }
        reply_frame(&env, result)
    }

    async fn route(
        &self,
        conn: &ConnectionId,
        action: &str,
        value: Value,
    ) -> Result<Value, WireError> {
        if VOICE_ACTIONS.contains(&action) {
            let req: VoiceRequest = fields(value)?;
            let cmd = req
                .try_into_command()
                .map_err(|e| WireError::bad_request(e.to_string()))?;
            return self.voice(conn, cmd).await;
        }
        match action {
            // Liveness for clients that cannot see WebSocket pings (browsers): allowed before
            // `hello`, answered at once.
            "ping" => Ok(json!({})),
            "hello" => {
                let f: Hello = fields(value)?;
                let d = self
                    .chat
                    .hello(conn, &f.name, f.resume_token.as_deref())
                    .await?;
                Ok(data(d))
            }
            "signal" => {
                let f: Signal = fields(value)?;
                let req = SignalRequest {
                    voice_room: VoiceRoomId::parse(&f.voice_room_id)
                        .map_err(|e| WireError::bad_request(format!("voiceRoomId: {e}")))?,
                    token: f.token,
                    to: UserId::parse(&f.to)
                        .map_err(|e| WireError::bad_request(format!("to: {e}")))?,
                    kind: f.kind,
                    payload: f.payload,
                };
                self.relay.relay(conn, &req).await?;
                crate::metrics::signal_relayed();
                Ok(json!({}))
            }
            a if CHAT_ACTIONS.contains(&a) => {
                let user = self.chat.identify(conn).await?;
                self.chat_action(&user, a, value).await
            }
            other => Err(wire(
                "UNKNOWN_ACTION",
                format!(
                    "unknown action {other:?}; actions are {}, {}, signal and ping",
                    CHAT_ACTIONS.join(", "),
                    VOICE_ACTIONS.join(", ")
                ),
                false,
            )),
        }
    }

    async fn chat_action(
        &self,
        user: &UserId,
        action: &str,
        value: Value,
    ) -> Result<Value, WireError> {
        let chat = &self.chat;
        Ok(match action {
            "createRoom" => {
                let f: Named = fields(value)?;
                let r = chat.create_room(user, &f.name).await?;
                json!({"roomId": r.id.to_string(), "name": r.name})
            }
            "listRooms" => json!({"rooms": chat.list_rooms(user).await?}),
            "requestJoin" => {
                let f: InRoom = fields(value)?;
                let state = chat.request_join(user, &room_id(&f.room_id)?).await?;
                json!({"state": state})
            }
            "approveJoin" | "denyJoin" => {
                let f: Decide = fields(value)?;
                let room = room_id(&f.room_id)?;
                let who = UserId::parse(&f.user_id)
                    .map_err(|e| WireError::bad_request(format!("userId: {e}")))?;
                let state = chat
                    .decide_join(user, &room, &who, action == "approveJoin")
                    .await?;
                json!({"roomId": room.to_string(), "userId": who.to_string(), "state": state})
            }
            "removeMember" | "banMember" => {
                let f: Decide = fields(value)?;
                let room = room_id(&f.room_id)?;
                let who = UserId::parse(&f.user_id)
                    .map_err(|e| WireError::bad_request(format!("userId: {e}")))?;
                let ban = action == "banMember";
                let removal = chat.remove_member(user, &room, &who, ban).await?;
                self.leave_voice_after_removal(&removal).await;
                json!({"roomId": room.to_string(), "userId": who.to_string(), "state": "none", "banned": ban})
            }
            "unbanMember" => {
                let f: Decide = fields(value)?;
                let room = room_id(&f.room_id)?;
                let who = UserId::parse(&f.user_id)
                    .map_err(|e| WireError::bad_request(format!("userId: {e}")))?;
                let was = chat.unban_member(user, &room, &who).await?;
                json!({"roomId": room.to_string(), "userId": who.to_string(), "wasBanned": was})
            }
            "signOutEverywhere" => {
                chat.sign_out_everywhere(user).await?;
                json!({})
            }
            "listMembers" => {
                let f: InRoom = fields(value)?;
                json!({"members": chat.list_members(user, &room_id(&f.room_id)?).await?})
            }
            "sendMessage" => {
                let f: Send = fields(value)?;
                data(
                    chat.send_message(user, &room_id(&f.room_id)?, &f.text)
                        .await?,
                )
            }
            "getMessages" => {
                let f: InRoom = fields(value)?;
                json!({"messages": chat.messages(user, &room_id(&f.room_id)?).await?})
            }
            other => unreachable!("{other} is listed in CHAT_ACTIONS but not routed"),
        })
    }

    /// A removed member's connections leave the chat room's active voice room at once, through
    /// voice's own `leave` use case (hand-over, channel deletion and events as for any leave).
    /// Only the connection that is the participant succeeds; the others are not participants.
    /// A participant whose connection already dropped (reconnecting) cannot resume (voice
    /// checks membership on join) and is removed by the sweep after the reconnect grace.
    async fn leave_voice_after_removal(&self, removal: &chat_domain::Removal) {
        let Some(voice_room) = &removal.voice_room else {
            return;
        };
        for conn in &removal.connections {
            match self.voice.leave_voice(conn, voice_room).await {
                Ok(_) => info!("removed member left the voice room"),
                Err(
                    voice_domain::errors::LeaveVoiceError::NotParticipant
                    | voice_domain::errors::LeaveVoiceError::Ended,
                ) => {}
                Err(e) => warn!(error = %e, "removed member could not be taken out of voice"),
            }
        }
    }

    async fn voice(&self, conn: &ConnectionId, cmd: VoiceCommand) -> Result<Value, WireError> {
        self.voice
            .execute(conn, cmd)
            .await
            .map(data)
            .map_err(|refusal| {
                if let ErrorClass::Internal | ErrorClass::Unavailable = refusal.class {
                    warn!(detail = %refusal.detail, "voice dependency failure");
                }
                refusal.error
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_read_as_far_as_possible() {
        let (env, e) = parse_frame("{nope").unwrap_err();
        assert_eq!(e.code, "BAD_REQUEST");
        assert!(env.request_id.is_none());
        let (env, e) = parse_frame(r#"{"requestId":"r1"}"#).unwrap_err();
        assert_eq!(
            (env.request_id.as_deref(), e.code.as_str()),
            (Some("r1"), "BAD_REQUEST")
        );
        let (_, e) = parse_frame(r#"{"action":"x","requestId":5}"#).unwrap_err();
        assert_eq!(e.code, "BAD_REQUEST");
        assert!(parse_frame("[1]").is_err());
        let (env, _) = parse_frame(r#"{"action":"listRooms","requestId":"7"}"#).unwrap();
        assert_eq!(env.action, "listRooms");
    }

    #[test]
    fn replies_echo_request_id_and_action() {
        let env = Envelope {
            request_id: Some("r9".into()),
            action: "hello".into(),
        };
        let v: Value = serde_json::from_str(&reply_frame(&env, Ok(json!({"a":1})))).unwrap();
        assert_eq!(
            v,
            json!({"type":"reply","requestId":"r9","action":"hello","ok":true,"data":{"a":1}})
        );
    }
}
