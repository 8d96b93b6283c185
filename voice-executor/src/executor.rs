//! [`Executor`]: one request frame in, one reply frame out, for every action of the protocol
//! (`docs/protocol.md`). Both entrypoints call [`Executor::handle`]; each only adapts its
//! transport. No rule lives here: every refusal comes from a domain (or the signal relay) and is
//! only mapped to its wire code here, once.

use std::sync::Arc;

use chat_domain::{ChatError, ChatService, Removal};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tracing::{info, warn, Instrument};
use voice_domain::errors::RecordingUploadError;
use voice_domain::errors::{DisconnectError, ErrorClass, LeaveVoiceError, UseCaseError};
use voice_domain::ports::Ports;
use voice_domain::protocol::{
    ActiveVoiceRoomView, VoiceCommand, VoiceGrantView, VoiceRequest, VoiceRoomView, WireError,
    VOICE_ACTIONS,
};
use voice_domain::recording::RecordingId;
use voice_domain::service::DisconnectReport;
use voice_domain::{ChatRoomId, ConnectionId, UserId, VoiceRoom, VoiceRoomId, VoiceService};

use crate::actions::{CHAT_ACTIONS, RECORDING_ACTIONS};
use crate::envelope::{parse_frame, reply_frame, Envelope, MAX_REQUEST_ID_CHARS};
use crate::logsafe;
use crate::recording::{RecordingFiles, RecordingFilesError};
use crate::signal::{SignalError, SignalKind, SignalRelay, SignalRequest};

/// A refused request, ready for the wire: what the client is told, the class an entrypoint maps
/// to a status or log level, and the cause for the log only (a client's message hides
/// dependency details; the log keeps them, never with secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// For the HTTP status and the log level.
    pub class: ErrorClass,
    /// What the client is told.
    pub error: WireError,
    /// The cause chain, for the log only.
    pub detail: Option<String>,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::BadRequest,
            error: WireError::bad_request(message),
            detail: None,
        }
    }

    fn use_case<E: UseCaseError + std::fmt::Debug>(e: E) -> Self {
        Self {
            class: e.class(),
            error: WireError::from_use_case(&e),
            detail: Some(format!("{e:?}")),
        }
    }
}

impl From<ChatError> for Refusal {
    fn from(e: ChatError) -> Self {
        Self {
            class: e.class(),
            error: e.into(),
            detail: None,
        }
    }
}

impl From<RecordingFilesError> for Refusal {
    fn from(e: RecordingFilesError) -> Self {
        Self {
            class: e.class(),
            error: e.into(),
            detail: None,
        }
    }
}

impl From<SignalError> for Refusal {
    fn from(e: SignalError) -> Self {
        Self {
            class: e.class(),
            error: e.into(),
            detail: None,
        }
    }
}

/// What [`Executor::handle`] produced: the reply frame to send back, and, when the request was
/// refused, the refusal's class (the Lambda turns it into an HTTP status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The reply frame (JSON text), the same bytes on every deployment.
    pub frame: String,
    /// `None` when the request succeeded.
    pub refused: Option<ErrorClass>,
}

/// The services one deployment runs, behind the protocol. Cheap to clone.
pub struct Executor<P: Ports> {
    voice: Arc<VoiceService<P>>,
    chat: Option<ChatService>,
    signals: Option<Arc<dyn SignalRelay>>,
    recordings: Option<Arc<dyn RecordingFiles>>,
}

impl<P: Ports> Clone for Executor<P> {
    fn clone(&self) -> Self {
        Self {
            voice: Arc::clone(&self.voice),
            chat: self.chat.clone(),
            signals: self.signals.clone(),
            recordings: self.recordings.clone(),
        }
    }
}

fn fields<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, Refusal> {
    serde_json::from_value(value).map_err(|e| Refusal::bad_request(format!("invalid fields: {e}")))
}

fn data(v: impl serde::Serialize) -> Value {
    // Views are strings, numbers and lists of them: they always serialise.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn room_id(s: &str) -> Result<ChatRoomId, Refusal> {
    ChatRoomId::parse(s).map_err(|e| Refusal::bad_request(format!("roomId: {e}")))
}

fn user_id(s: &str) -> Result<UserId, Refusal> {
    UserId::parse(s).map_err(|e| Refusal::bad_request(format!("userId: {e}")))
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

/// `recordingUploadUrls` (with `from`) and `finishRecording`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecorderUpload {
    voice_room_id: String,
    recording_id: String,
    #[serde(default)]
    from: u32,
}

impl RecorderUpload {
    fn ids(&self) -> Result<(VoiceRoomId, RecordingId), Refusal> {
        let room = VoiceRoomId::parse(&self.voice_room_id)
            .map_err(|e| Refusal::bad_request(format!("voiceRoomId: {e}")))?;
        let rec = RecordingId::parse(&self.recording_id)
            .map_err(|e| Refusal::bad_request(format!("recordingId: {e}")))?;
        Ok((room, rec))
    }
}

/// The paging fields of `listRooms`, `listMembers` and `getMessages`: `cursor` is the previous
/// page's `nextCursor`, `limit` asks for a smaller page than the server's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paged {
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

impl Paged {
    fn room(&self) -> Result<ChatRoomId, Refusal> {
        room_id(
            self.room_id
                .as_deref()
                .ok_or_else(|| Refusal::bad_request("invalid fields: missing field `roomId`"))?,
        )
    }
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

/// A `signal` frame read straight from its text, the relay's hot path: the envelope and the
/// fields at once, the payload kept as the raw JSON it was sent as. Only a frame that parses
/// here exactly as [`parse_frame`] + [`Signal`] would read it takes this path (a plain
/// `action` and `requestId`, no escapes in them, no duplicate field, every field of the right
/// type); any other frame goes the general way and gets its usual reply or refusal.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignalFrame<'a> {
    action: &'a str,
    #[serde(default)]
    request_id: Option<&'a str>,
    #[serde(default)]
    room_id: Option<&'a str>,
    voice_room_id: String,
    token: String,
    to: String,
    kind: SignalKind,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// A request's body: the general JSON tree, or a `signal` read on the hot path (with the relay
/// that serves it).
enum Body<'a> {
    Tree(Value),
    Signal(&'a Arc<dyn SignalRelay>, SignalFrame<'a>),
}

/// `text` as a `signal` frame for the hot path, with its envelope, if it is a plain one.
fn signal_frame(text: &str) -> Option<(Envelope, SignalFrame<'_>)> {
    let frame: SignalFrame<'_> = serde_json::from_str(text).ok()?;
    if frame.action != "signal"
        || frame
            .request_id
            .is_some_and(|id| id.chars().count() > MAX_REQUEST_ID_CHARS)
    {
        return None;
    }
    let env = Envelope {
        request_id: frame.request_id.map(str::to_owned),
        action: "signal".to_owned(),
    };
    Some((env, frame))
}

/// `signal`: validates the ids and hands the request to the relay.
async fn signal(
    relay: &Arc<dyn SignalRelay>,
    connection: &ConnectionId,
    voice_room_id: String,
    token: String,
    to: &str,
    kind: SignalKind,
    payload: Box<RawValue>,
) -> Result<Value, Refusal> {
    let req = SignalRequest {
        voice_room: VoiceRoomId::parse(&voice_room_id)
            .map_err(|e| Refusal::bad_request(format!("voiceRoomId: {e}")))?,
        token,
        to: UserId::parse(to).map_err(|e| Refusal::bad_request(format!("to: {e}")))?,
        kind,
        payload,
    };
    relay.relay(connection, &req).await?;
    Ok(json!({}))
}

impl<P: Ports> Executor<P> {
    /// An executor serving the voice actions (and `ping`) over `voice`, built once per process
    /// (per Lambda instance). Add the chat with [`Executor::with_chat`] and the signal relay
    /// with [`Executor::with_signals`] where the deployment runs them.
    pub fn new(voice: Arc<VoiceService<P>>) -> Self {
        Self {
            voice,
            chat: None,
            signals: None,
            recordings: None,
        }
    }

    /// Stores recordings in `files` (the self-hosted server: files under its data dir).
    /// Without it `startRecording` and `listRecordings` are refused `RECORDING_UNAVAILABLE`
    /// before anything changes.
    #[must_use]
    pub fn with_recordings(mut self, files: Arc<dyn RecordingFiles>) -> Self {
        self.recordings = Some(files);
        self
    }

    /// Serves the chat actions too (the self-hosted server; the Lambda with a built-in chat).
    #[must_use]
    pub fn with_chat(mut self, chat: ChatService) -> Self {
        self.chat = Some(chat);
        self
    }

    /// Serves `signal` through `relay` (the self-hosted server: on AWS, browsers signal
    /// through Kinesis Video Streams).
    #[must_use]
    pub fn with_signals(mut self, relay: Arc<dyn SignalRelay>) -> Self {
        self.signals = Some(relay);
        self
    }

    /// The voice service, for what is not a request: the sweep, start-up recovery.
    pub fn voice(&self) -> &Arc<VoiceService<P>> {
        &self.voice
    }

    /// The user `connection` said hello as (always `None` without a chat): what an entrypoint
    /// keys per-user limits by, so more connections do not buy a user more capacity.
    pub async fn identity(&self, connection: &ConnectionId) -> Option<UserId> {
        match &self.chat {
            Some(chat) => chat.identify(connection).await.ok(),
            None => None,
        }
    }

    /// `connection` is gone: it is no longer its user's, then voice hears of it (its
    /// participant becomes reconnecting, so its events go only to live connections).
    ///
    /// # Errors
    /// [`DisconnectError`] when voice could not record it; the sweep finishes it later.
    pub async fn disconnect(
        &self,
        connection: &ConnectionId,
    ) -> Result<DisconnectReport, DisconnectError> {
        if let Some(chat) = &self.chat {
            chat.disconnect(connection).await;
        }
        self.voice.on_disconnect(connection).await
    }

    /// Handles one request frame from `connection` and returns the reply frame.
    pub async fn handle(&self, connection: &ConnectionId, text: &str) -> Handled {
        let fast = self
            .signals
            .as_ref()
            .and_then(|relay| Some((relay, signal_frame(text)?)));
        let (env, body) = match fast {
            Some((relay, (env, frame))) => (env, Body::Signal(relay, frame)),
            None => match parse_frame(text) {
                Ok((env, value)) => (env, Body::Tree(value)),
                Err((env, e)) => {
                    info!(code = %e.code, "malformed request refused");
                    return Handled {
                        frame: reply_frame(&env, Err(e)),
                        refused: Some(ErrorClass::BadRequest),
                    };
                }
            },
        };
        // Everything from the frame is user-controlled: only known action names are logged, and
        // ids are escaped and truncated (a newline in them cannot forge a log line).
        let span = tracing::info_span!(
            "request",
            action = %logsafe::action(&env.action),
            request_id = %logsafe::text(env.request_id.as_deref().unwrap_or("")),
            chat_room_id = tracing::field::Empty,
            voice_room_id = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let (chat_room, voice_room) = match &body {
                Body::Tree(value) => (
                    value.get("roomId").and_then(Value::as_str),
                    value.get("voiceRoomId").and_then(Value::as_str),
                ),
                Body::Signal(_, f) => (f.room_id, Some(f.voice_room_id.as_str())),
            };
            if let Some(id) = chat_room {
                span.record("chat_room_id", logsafe::text(id));
            }
            if let Some(id) = voice_room {
                span.record("voice_room_id", logsafe::text(id));
            }
        }
        let result = match body {
            Body::Tree(value) => {
                self.route(connection, &env.action, value)
                    .instrument(span.clone())
                    .await
            }
            Body::Signal(relay, f) => {
                let payload = f.payload.to_owned();
                signal(
                    relay,
                    connection,
                    f.voice_room_id,
                    f.token,
                    &f.to,
                    f.kind,
                    payload,
                )
                .instrument(span.clone())
                .await
            }
        };
        let refused = match &result {
            Ok(_) => None,
            Err(r) => {
                let _g = span.enter();
                match r.class {
                    ErrorClass::Internal | ErrorClass::Unavailable => {
                        warn!(code = %r.error.code, detail = r.detail.as_deref().unwrap_or(""), "request failed");
                    }
                    _ => info!(code = %r.error.code, "request refused"),
                }
                Some(r.class)
            }
        };
        Handled {
            frame: reply_frame(&env, result.map_err(|r| r.error)),
            refused,
        }
    }

    /// Every action this executor serves, for the unknown-action message.
    fn served(&self) -> String {
        let mut served: Vec<&str> = Vec::new();
        if self.chat.is_some() {
            served.extend(CHAT_ACTIONS);
        }
        served.extend(VOICE_ACTIONS);
        served.extend(RECORDING_ACTIONS);
        if self.signals.is_some() {
            served.push("signal");
        }
        served.push("ping");
        served.join(", ")
    }

    async fn route(
        &self,
        connection: &ConnectionId,
        action: &str,
        value: Value,
    ) -> Result<Value, Refusal> {
        if VOICE_ACTIONS.contains(&action) {
            let req: VoiceRequest = fields(value)?;
            let cmd = req
                .try_into_command()
                .map_err(|e| Refusal::bad_request(e.to_string()))?;
            return self.voice_command(connection, cmd).await;
        }
        match (action, &self.chat, &self.signals) {
            // Liveness for clients that cannot see WebSocket pings (browsers): allowed before
            // `hello`, answered at once.
            ("ping", _, _) => Ok(json!({})),
            ("listRecordings", _, _) => {
                let f: InRoom = fields(value)?;
                let chat_room = room_id(&f.room_id)?;
                let files = self
                    .recordings
                    .as_ref()
                    .ok_or(RecordingFilesError::Disabled)?;
                let viewer = self
                    .voice
                    .recordings_access(connection, &chat_room)
                    .await
                    .map_err(Refusal::use_case)?;
                let mut list = files.list(&chat_room, &viewer).await?;
                if self.finish_closed(files.as_ref(), &chat_room, &list).await {
                    list = files.list(&chat_room, &viewer).await?;
                }
                Ok(json!({"roomId": chat_room.to_string(), "recordings": data(list)}))
            }
            ("recordingUploadUrls", _, _) => {
                let f: RecorderUpload = fields(value)?;
                let (files, room, _) = self.recorder_upload(connection, &f, false).await?;
                let recording = room
                    .recording()
                    .cloned()
                    .ok_or_else(|| Refusal::from(RecordingFilesError::Unavailable))?;
                Ok(data(files.upload_urls(&room, &recording, f.from).await?))
            }
            ("finishRecording", _, _) => {
                let f: RecorderUpload = fields(value)?;
                let (files, room, rec) = self.recorder_upload(connection, &f, true).await?;
                files.finish(room.chat_room(), &rec).await?;
                Ok(json!({"recordingId": rec.to_string()}))
            }
            ("hello", Some(chat), _) => {
                let f: Hello = fields(value)?;
                let d = chat
                    .hello(connection, &f.name, f.resume_token.as_deref())
                    .await?;
                Ok(data(d))
            }
            ("signal", _, Some(relay)) => {
                let f: Signal = fields(value)?;
                let payload = serde_json::value::to_raw_value(&f.payload)
                    .map_err(|e| Refusal::bad_request(format!("payload: {e}")))?;
                signal(
                    relay,
                    connection,
                    f.voice_room_id,
                    f.token,
                    &f.to,
                    f.kind,
                    payload,
                )
                .await
            }
            (a, Some(chat), _) if CHAT_ACTIONS.contains(&a) => {
                let user = chat.identify(connection).await?;
                self.chat_action(chat, &user, a, value).await
            }
            (other, _, _) => Err(Refusal {
                class: ErrorClass::BadRequest,
                error: WireError {
                    code: "UNKNOWN_ACTION".into(),
                    message: format!("unknown action {other:?}; actions are {}", self.served()),
                    retryable: false,
                },
                detail: None,
            }),
        }
    }

    async fn chat_action(
        &self,
        chat: &ChatService,
        user: &UserId,
        action: &str,
        value: Value,
    ) -> Result<Value, Refusal> {
        Ok(match action {
            "createRoom" => {
                let f: Named = fields(value)?;
                let r = chat.create_room(user, &f.name).await?;
                json!({"roomId": r.id.to_string(), "name": r.name})
            }
            "listRooms" => {
                let f: Paged = fields(value)?;
                data(chat.list_rooms(user, f.cursor.as_deref(), f.limit).await?)
            }
            "requestJoin" => {
                let f: InRoom = fields(value)?;
                let state = chat.request_join(user, &room_id(&f.room_id)?).await?;
                json!({"state": state})
            }
            "approveJoin" | "denyJoin" => {
                let f: Decide = fields(value)?;
                let (room, who) = (room_id(&f.room_id)?, user_id(&f.user_id)?);
                let state = chat
                    .decide_join(user, &room, &who, action == "approveJoin")
                    .await?;
                json!({"roomId": room.to_string(), "userId": who.to_string(), "state": state})
            }
            "removeMember" | "banMember" => {
                let f: Decide = fields(value)?;
                let (room, who) = (room_id(&f.room_id)?, user_id(&f.user_id)?);
                let ban = action == "banMember";
                let removal = chat.remove_member(user, &room, &who, ban).await?;
                self.leave_voice_after_removal(&removal).await;
                json!({"roomId": room.to_string(), "userId": who.to_string(), "state": "none", "banned": ban})
            }
            "unbanMember" => {
                let f: Decide = fields(value)?;
                let (room, who) = (room_id(&f.room_id)?, user_id(&f.user_id)?);
                let was = chat.unban_member(user, &room, &who).await?;
                json!({"roomId": room.to_string(), "userId": who.to_string(), "wasBanned": was})
            }
            "signOutEverywhere" => {
                chat.sign_out_everywhere(user).await?;
                json!({})
            }
            "listMembers" => {
                let f: Paged = fields(value)?;
                data(
                    chat.list_members(user, &f.room()?, f.cursor.as_deref(), f.limit)
                        .await?,
                )
            }
            "sendMessage" => {
                let f: Send = fields(value)?;
                data(
                    chat.send_message(user, &room_id(&f.room_id)?, &f.text)
                        .await?,
                )
            }
            "getMessages" => {
                let f: Paged = fields(value)?;
                data(chat.messages(user, &f.room()?, f.cursor.as_deref()).await?)
            }
            other => {
                return Err(Refusal {
                    class: ErrorClass::Internal,
                    error: WireError {
                        code: "INTERNAL".into(),
                        message: format!("the action {other:?} is not implemented"),
                        retryable: false,
                    },
                    detail: Some(format!("{other} is listed in CHAT_ACTIONS but not routed")),
                })
            }
        })
    }

    /// A removed member's connections leave the chat room's active voice room at once, through
    /// voice's own `leave` use case (hand-over, channel deletion and events as for any leave).
    /// Only the connection that is the participant succeeds; the others are not participants.
    /// A participant whose connection already dropped (reconnecting) cannot resume (voice
    /// checks membership on join) and is removed by the sweep after the reconnect grace.
    async fn leave_voice_after_removal(&self, removal: &Removal) {
        let Some(voice_room) = &removal.voice_room else {
            return;
        };
        for conn in &removal.connections {
            match self.voice.leave_voice(conn, voice_room).await {
                Ok(_) => info!("removed member left the voice room"),
                Err(LeaveVoiceError::NotParticipant | LeaveVoiceError::Ended) => {}
                Err(e) => warn!(error = %e, "removed member could not be taken out of voice"),
            }
        }
    }

    /// Runs one voice command and shapes its outcome for the wire.
    async fn voice_command(
        &self,
        caller: &ConnectionId,
        command: VoiceCommand,
    ) -> Result<Value, Refusal> {
        let voice = &self.voice;
        let room = |r: VoiceRoom| data(VoiceRoomView::from(&r));
        match command {
            VoiceCommand::Create(chat) => voice
                .start_voice(caller, &chat)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::GetCredentials(id) => voice
                .join_voice(caller, &id)
                .await
                .map(|g| data(VoiceGrantView::from(&g)))
                .map_err(Refusal::use_case),
            VoiceCommand::RefreshCredentials(id) => voice
                .refresh_voice(caller, &id)
                .await
                .map(|g| data(VoiceGrantView::from(&g)))
                .map_err(Refusal::use_case),
            VoiceCommand::End(id) => voice
                .end_voice(caller, &id)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::Leave(id) => voice
                .leave_voice(caller, &id)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::SetMute(id, muted) => voice
                .set_mute(caller, &id, muted)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::ServerMute(id, target, muted) => voice
                .server_mute(caller, &id, &target, muted)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::Get(chat) => voice
                .active_voice(caller, &chat)
                .await
                .map(|r| {
                    data(ActiveVoiceRoomView {
                        voice_room: r.as_ref().map(VoiceRoomView::from),
                    })
                })
                .map_err(Refusal::use_case),
            VoiceCommand::StartRecording(id) => self.start_recording(caller, &id).await,
            VoiceCommand::StopRecording(id) => voice
                .stop_recording(caller, &id)
                .await
                .map(|r| json!({"room": VoiceRoomView::from(&r)}))
                .map_err(Refusal::use_case),
            VoiceCommand::StartScreenShare(id) => voice
                .start_screen_share(caller, &id)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::StopScreenShare(id) => voice
                .stop_screen_share(caller, &id)
                .await
                .map(room)
                .map_err(Refusal::use_case),
            VoiceCommand::SetScreenSharePolicy(id, policy) => voice
                .set_screen_share_policy(caller, &id, policy)
                .await
                .map(room)
                .map_err(Refusal::use_case),
        }
    }

    /// Finishes every listed recording still `preparing` whose uploads the domain no longer
    /// takes (the final-chunk grace has passed, or its room is gone): the recorder died or
    /// never said it was done. Says whether it finished any. A failure is logged and left for
    /// the next listing.
    async fn finish_closed(
        &self,
        files: &dyn RecordingFiles,
        chat_room: &ChatRoomId,
        list: &[crate::recording::RecordingEntry],
    ) -> bool {
        let mut finished = false;
        for entry in list.iter().filter(|e| e.preparing) {
            let (Ok(voice_room), Ok(rec)) = (
                VoiceRoomId::parse(&entry.voice_room_id),
                RecordingId::parse(&entry.recording_id),
            ) else {
                continue;
            };
            match self.voice.recording_upload(&voice_room, &rec).await {
                Err(RecordingUploadError::Closed | RecordingUploadError::VoiceRoomNotFound) => {
                    match files.finish(chat_room, &rec).await {
                        Ok(()) => finished = true,
                        Err(e) => warn!(error = %e, "could not finish a recording"),
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "could not ask whether a recording takes uploads"),
            }
        }
        finished
    }

    /// `startRecording`: the domain decides and announces; the storage then says where to
    /// upload. Without storage nothing starts; if the storage fails, the recording is stopped
    /// again (announced), so no member is told "recording" for a file that cannot exist.
    async fn start_recording(
        &self,
        caller: &ConnectionId,
        id: &VoiceRoomId,
    ) -> Result<Value, Refusal> {
        let files = self
            .recordings
            .as_ref()
            .ok_or(RecordingFilesError::Disabled)?;
        let room = self
            .voice
            .start_recording(caller, id)
            .await
            .map_err(Refusal::use_case)?;
        let recording = room
            .running_recording()
            .cloned()
            .ok_or_else(|| Refusal::from(RecordingFilesError::Unavailable))?;
        match files.prepare(&room, &recording).await {
            Ok(grant) => Ok(json!({"room": VoiceRoomView::from(&room), "upload": data(grant)})),
            Err(e) => {
                if let Err(stop) = self.voice.stop_recording(caller, id).await {
                    warn!(error = %stop, "could not stop a recording whose storage failed");
                }
                Err(e.into())
            }
        }
    }

    /// `recordingUploadUrls` and `finishRecording` (`finishing`): storage present, and the
    /// domain lets this connection upload to (or close) that recording. Returns the storage,
    /// the room as it is now, and the recording id.
    async fn recorder_upload(
        &self,
        caller: &ConnectionId,
        f: &RecorderUpload,
        finishing: bool,
    ) -> Result<(&Arc<dyn RecordingFiles>, VoiceRoom, RecordingId), Refusal> {
        let (voice_room, rec) = f.ids()?;
        let files = self
            .recordings
            .as_ref()
            .ok_or(RecordingFilesError::Disabled)?;
        let room = self
            .voice
            .recorder_upload(caller, &voice_room, &rec, finishing)
            .await
            .map_err(Refusal::use_case)?;
        Ok((files, room, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use voice_adapters_memory::memory_service;
    use voice_domain::ServiceConfig;

    /// One relayed request: voice room, token, recipient, kind, payload.
    type Seen = (String, String, String, SignalKind, String);

    /// Records what it is asked to relay.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Seen>>);

    #[async_trait::async_trait]
    impl SignalRelay for Recorder {
        async fn relay(&self, _: &ConnectionId, r: &SignalRequest) -> Result<(), SignalError> {
            self.0.lock().unwrap().push((
                r.voice_room.to_string(),
                r.token.clone(),
                r.to.to_string(),
                r.kind,
                r.payload.get().to_owned(),
            ));
            Ok(())
        }
    }

    #[tokio::test]
    async fn signal_frames_reach_the_relay_alike_on_the_hot_path_and_the_general_one() {
        let recorder = Arc::new(Recorder::default());
        let (service, _) = memory_service(ServiceConfig::default());
        let ex = Executor::new(Arc::new(service)).with_signals(recorder.clone());
        let conn = ConnectionId::parse("c1").unwrap();
        let payload = r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1"}"#;
        let plain = format!(
            r#"{{"action":"signal","requestId":"r1","voiceRoomId":"v1","token":"t.s","to":"bob","kind":"offer","payload":{payload}}}"#
        );
        // Escapes in the action, a numeric-looking extra field: the general path.
        let escaped = format!(
            r#"{{"action":"sig\u006eal","requestId":"r1","extra":1,"voiceRoomId":"v1","token":"t.s","to":"bob","kind":"offer","payload":{payload}}}"#
        );
        assert!(
            signal_frame(&plain).is_some(),
            "a plain frame takes the hot path"
        );
        assert!(signal_frame(&escaped).is_none());
        for frame in [&plain, &escaped] {
            let h = ex.handle(&conn, frame).await;
            assert_eq!(h.refused, None, "{}", h.frame);
            let reply: Value = serde_json::from_str(&h.frame).unwrap();
            assert_eq!(
                reply,
                json!({"type":"reply","requestId":"r1","action":"signal","ok":true,"data":{}})
            );
        }
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        // The hot path forwards the payload exactly as sent; the general one re-serialises the
        // same value.
        assert_eq!(seen[0].4, payload);
        assert_eq!(
            serde_json::from_str::<Value>(&seen[0].4).unwrap(),
            serde_json::from_str::<Value>(&seen[1].4).unwrap()
        );
        assert_eq!(seen[0].0, seen[1].0);
        assert_eq!(
            (&seen[0].1, &seen[0].2, seen[0].3),
            (&seen[1].1, &seen[1].2, seen[1].3)
        );
        // Refusals are the general path's: a bad id, a long requestId, a wrong type.
        for (frame, code) in [
            (plain.replace("\"bob\"", "\"b ob\""), "BAD_REQUEST"),
            (
                plain.replace("\"r1\"", &format!("\"{}\"", "r".repeat(200))),
                "BAD_REQUEST",
            ),
            (
                plain.replace("\"offer\",\"payload\"", "\"shout\",\"payload\""),
                "BAD_REQUEST",
            ),
        ] {
            let h = ex.handle(&conn, &frame).await;
            let reply: Value = serde_json::from_str(&h.frame).unwrap();
            assert_eq!(reply["error"]["code"], code, "{frame}");
        }
        assert_eq!(
            recorder.0.lock().unwrap().len(),
            2,
            "nothing refused was relayed"
        );
    }
}
