//! The wire protocol shared by both entrypoints (API Gateway WebSocket routes and the
//! self-hosted server), so that one web client speaks to both deployments.
//!
//! This module is the domain's edge: it only defines serde shapes and converts them to and
//! from domain types. The service never sees these types; `voice-executor` runs them. Every message is documented with
//! examples in `docs/protocol.md`.
//!
//! - Requests: `{"action": "...", "requestId": "...", ...fields}` ([`VoiceRequest`]).
//! - Replies: `{"type": "reply", "requestId", "action", "ok": true, "data": {...}}` or
//!   `{"type": "reply", "requestId", "action", "ok": false, "error": {code, message, retryable}}`.
//! - Events: `{"type": "event", "event": "voiceStarted", ...fields}` ([`EventEnvelope`]).

use serde::{Deserialize, Serialize};

use crate::errors::UseCaseError;
use crate::ids::{ChatRoomId, ClientId, IdError, UserId, VoiceRoomId};
use crate::ports::{Credentials, IceServer};
use crate::room::{ChannelRole, EndReason, RoomStatus, VoiceEvent, VoiceRoom};
use crate::screen::ScreenSharePolicy;
use crate::service::{ChannelAccess, VoiceGrant};

/// Action names of the voice routes; the original's three plus `leaveVoiceRoom`, `setMute`,
/// `serverMute` and `getVoiceRoom`.
pub const VOICE_ACTIONS: &[&str] = &[
    "createVoiceRoom",
    "getVoiceCredentials",
    "endVoiceRoom",
    "leaveVoiceRoom",
    "setMute",
    "serverMute",
    "getVoiceRoom",
    "startRecording",
    "stopRecording",
    "startScreenShare",
    "stopScreenShare",
    "setScreenSharePolicy",
];

/// A voice request as it arrives (ids not yet validated).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum VoiceRequest {
    /// Start a voice room in a chat room.
    CreateVoiceRoom {
        /// The chat room (the original's field name).
        room_id: String,
    },
    /// Join (or refresh credentials for) a voice room.
    GetVoiceCredentials {
        /// The voice room.
        voice_room_id: String,
        /// Only a refresh: refused (`NOT_PARTICIPANT`) rather than joining a caller who is no
        /// longer a participant. Absent: join or refresh, as the original.
        #[serde(default)]
        refresh: bool,
    },
    /// End a voice room (master or chat admin).
    EndVoiceRoom {
        /// The voice room.
        voice_room_id: String,
    },
    /// Leave a voice room.
    LeaveVoiceRoom {
        /// The voice room.
        voice_room_id: String,
    },
    /// Mute or unmute.
    SetMute {
        /// The voice room.
        voice_room_id: String,
        /// The new state.
        muted: bool,
    },
    /// A moderator mutes a participant for everyone, or lifts it.
    ServerMute {
        /// The voice room.
        voice_room_id: String,
        /// Who.
        user_id: String,
        /// Mute (true) or lift (false).
        muted: bool,
    },
    /// The active voice room of a chat room, if any.
    GetVoiceRoom {
        /// The chat room.
        room_id: String,
    },
    /// Start recording a voice room (master or chat admin, in the room).
    StartRecording {
        /// The voice room.
        voice_room_id: String,
    },
    /// Stop recording a voice room (master, chat admin or the recorder).
    StopRecording {
        /// The voice room.
        voice_room_id: String,
    },
    /// Ask to share one's screen (before `getDisplayMedia`).
    StartScreenShare {
        /// The voice room.
        voice_room_id: String,
    },
    /// Stop the running screen share (the sharer, the master or the chat admin).
    StopScreenShare {
        /// The voice room.
        voice_room_id: String,
    },
    /// Set who may share a screen (master or chat admin).
    SetScreenSharePolicy {
        /// The voice room.
        voice_room_id: String,
        /// `anyone` or `hosts`; anything else is a bad request.
        policy: ScreenSharePolicy,
    },
}

/// A voice request with validated ids: what the entrypoints hand to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceCommand {
    /// `createVoiceRoom`.
    Create(ChatRoomId),
    /// `getVoiceCredentials`: join, resume or refresh.
    GetCredentials(VoiceRoomId),
    /// `getVoiceCredentials` with `"refresh": true`: refresh or resume, never a new join.
    RefreshCredentials(VoiceRoomId),
    /// `endVoiceRoom`.
    End(VoiceRoomId),
    /// `leaveVoiceRoom`.
    Leave(VoiceRoomId),
    /// `setMute`.
    SetMute(VoiceRoomId, bool),
    /// `serverMute`: room, target, on or off.
    ServerMute(VoiceRoomId, UserId, bool),
    /// `getVoiceRoom`.
    Get(ChatRoomId),
    /// `startRecording`.
    StartRecording(VoiceRoomId),
    /// `stopRecording`.
    StopRecording(VoiceRoomId),
    /// `startScreenShare`.
    StartScreenShare(VoiceRoomId),
    /// `stopScreenShare`.
    StopScreenShare(VoiceRoomId),
    /// `setScreenSharePolicy`.
    SetScreenSharePolicy(VoiceRoomId, ScreenSharePolicy),
}

impl VoiceRequest {
    /// Validates the ids.
    ///
    /// # Errors
    /// [`IdError`] naming the field's rule.
    pub fn try_into_command(self) -> Result<VoiceCommand, IdError> {
        Ok(match self {
            Self::CreateVoiceRoom { room_id } => VoiceCommand::Create(ChatRoomId::parse(room_id)?),
            Self::GetVoiceCredentials {
                voice_room_id,
                refresh: false,
            } => VoiceCommand::GetCredentials(VoiceRoomId::parse(voice_room_id)?),
            Self::GetVoiceCredentials {
                voice_room_id,
                refresh: true,
            } => VoiceCommand::RefreshCredentials(VoiceRoomId::parse(voice_room_id)?),
            Self::EndVoiceRoom { voice_room_id } => {
                VoiceCommand::End(VoiceRoomId::parse(voice_room_id)?)
            }
            Self::LeaveVoiceRoom { voice_room_id } => {
                VoiceCommand::Leave(VoiceRoomId::parse(voice_room_id)?)
            }
            Self::SetMute {
                voice_room_id,
                muted,
            } => VoiceCommand::SetMute(VoiceRoomId::parse(voice_room_id)?, muted),
            Self::ServerMute {
                voice_room_id,
                user_id,
                muted,
            } => VoiceCommand::ServerMute(
                VoiceRoomId::parse(voice_room_id)?,
                UserId::parse(user_id)?,
                muted,
            ),
            Self::GetVoiceRoom { room_id } => VoiceCommand::Get(ChatRoomId::parse(room_id)?),
            Self::StartRecording { voice_room_id } => {
                VoiceCommand::StartRecording(VoiceRoomId::parse(voice_room_id)?)
            }
            Self::StopRecording { voice_room_id } => {
                VoiceCommand::StopRecording(VoiceRoomId::parse(voice_room_id)?)
            }
            Self::StartScreenShare { voice_room_id } => {
                VoiceCommand::StartScreenShare(VoiceRoomId::parse(voice_room_id)?)
            }
            Self::StopScreenShare { voice_room_id } => {
                VoiceCommand::StopScreenShare(VoiceRoomId::parse(voice_room_id)?)
            }
            Self::SetScreenSharePolicy {
                voice_room_id,
                policy,
            } => VoiceCommand::SetScreenSharePolicy(VoiceRoomId::parse(voice_room_id)?, policy),
        })
    }
}

impl VoiceCommand {
    /// The wire action name.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Create(_) => "createVoiceRoom",
            Self::GetCredentials(_) | Self::RefreshCredentials(_) => "getVoiceCredentials",
            Self::End(_) => "endVoiceRoom",
            Self::Leave(_) => "leaveVoiceRoom",
            Self::SetMute(..) => "setMute",
            Self::ServerMute(..) => "serverMute",
            Self::Get(_) => "getVoiceRoom",
            Self::StartRecording(_) => "startRecording",
            Self::StopRecording(_) => "stopRecording",
            Self::StartScreenShare(_) => "startScreenShare",
            Self::StopScreenShare(_) => "stopScreenShare",
            Self::SetScreenSharePolicy(..) => "setScreenSharePolicy",
        }
    }
}

/// A refusal on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Stable code (`NOT_APPROVED`, `BAD_REQUEST`, ...).
    pub code: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// Whether sending the same request again may work.
    pub retryable: bool,
}

impl WireError {
    /// A refusal from a use case.
    pub fn from_use_case(e: &impl UseCaseError) -> Self {
        Self {
            code: e.code().to_owned(),
            message: e.to_string(),
            retryable: e.retryable(),
        }
    }

    /// A malformed request (bad JSON, missing field, invalid id).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: "BAD_REQUEST".into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// A reply to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply<T> {
    /// Always `"reply"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request's `requestId`, echoed so the client can match replies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request's action.
    pub action: String,
    /// Whether it worked.
    pub ok: bool,
    /// The result, when it worked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// The refusal, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl<T> Reply<T> {
    /// A successful reply.
    pub fn ok(request_id: Option<String>, action: impl Into<String>, data: T) -> Self {
        Self {
            kind: "reply".into(),
            request_id,
            action: action.into(),
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    /// A refusal.
    pub fn err(request_id: Option<String>, action: impl Into<String>, error: WireError) -> Self {
        Self {
            kind: "reply".into(),
            request_id,
            action: action.into(),
            ok: false,
            data: None,
            error: Some(error),
        }
    }
}

/// An event pushed to a connection: `{"type": "event", "event": "...", ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct EventEnvelope<'a, E = VoiceEvent> {
    /// Always `"event"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event, flattened: a voice event, or any other `{"event": ...}` shape (the chat
    /// domain's, the relay's) so that every event frame has one envelope.
    #[serde(flatten)]
    pub event: &'a E,
}

impl<'a, E> EventEnvelope<'a, E> {
    /// Wraps a domain event.
    pub fn new(event: &'a E) -> Self {
        Self {
            kind: "event",
            event,
        }
    }
}

/// A participant as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    /// Who.
    pub user_id: String,
    /// Muted or not.
    pub muted: bool,
    /// Muted by a moderator (the master or the chat room's admin): the participant cannot
    /// unmute until a moderator lifts it, and clients do not play its audio meanwhile.
    #[serde(default)]
    pub server_muted: bool,
    /// Join time, ms since epoch.
    pub joined_at: u64,
    /// Its own channel's ARN (the mesh plan is built from these).
    pub channel_arn: String,
    /// Its signaling client id. KVS names a viewer only by client id, so the master side needs
    /// this to tell which participant an offer comes from. It changes when the participant
    /// resumes on a new connection.
    pub client_id: String,
    /// `connected`, or `reconnecting` while its connection is gone and it may still resume
    /// (within the reconnect grace), so that clients show it as reconnecting, not gone.
    pub connection: String,
}

/// A voice room as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceRoomView {
    /// The room.
    pub voice_room_id: String,
    /// Its chat room.
    pub chat_room_id: String,
    /// `active` or `ended`.
    pub status: String,
    /// The current master.
    pub master_user_id: String,
    /// In join order.
    pub participants: Vec<ParticipantView>,
    /// Max participants.
    pub capacity: u8,
    /// Why it ended, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<EndReason>,
    /// The running recording, if the room is being recorded (absent otherwise): a client shows
    /// it to everyone in the room and tells a joiner before capturing its audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingView>,
    /// Who may share a screen: `anyone` or `hosts` (the master and the chat room's admin), so
    /// that a client shows or hides its Share button and the master's control.
    #[serde(default)]
    pub screen_share_policy: ScreenSharePolicy,
    /// The running screen share, if any (absent otherwise): receivers show a screen track large
    /// only from this participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_share: Option<ScreenShareView>,
}

/// A running screen share as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScreenShareView {
    /// Who shares.
    pub user_id: String,
    /// Since when, ms since epoch.
    pub since: u64,
}

/// A running recording as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    /// The recording.
    pub recording_id: String,
    /// Who records it.
    pub by: String,
    /// Since when, ms since epoch.
    pub started_at: u64,
}

impl From<&VoiceRoom> for VoiceRoomView {
    fn from(r: &VoiceRoom) -> Self {
        let (status, ended_reason) = match r.status() {
            RoomStatus::Active => ("active", None),
            RoomStatus::Ended { reason, .. } => ("ended", Some(reason.clone())),
        };
        Self {
            voice_room_id: r.id().to_string(),
            chat_room_id: r.chat_room().to_string(),
            status: status.into(),
            master_user_id: r.master().to_string(),
            participants: r
                .participants()
                .iter()
                .map(|p| ParticipantView {
                    user_id: p.user.to_string(),
                    muted: p.muted,
                    server_muted: r.is_server_muted(&p.user),
                    joined_at: p.joined_at.as_millis(),
                    channel_arn: p.channel.arn.to_string(),
                    client_id: ClientId::from_connection(&p.connection)
                        .map(String::from)
                        .unwrap_or_default(),
                    connection: if p.is_reconnecting() {
                        "reconnecting"
                    } else {
                        "connected"
                    }
                    .into(),
                })
                .collect(),
            capacity: r.capacity().get(),
            ended_reason,
            recording: r.running_recording().map(|rec| RecordingView {
                recording_id: rec.id.to_string(),
                by: rec.by.to_string(),
                started_at: rec.started_at.as_millis(),
            }),
            screen_share_policy: r.screen_share_policy(),
            screen_share: r.screen_share().map(|s| ScreenShareView {
                user_id: s.by.to_string(),
                since: s.since.as_millis(),
            }),
        }
    }
}

/// Where and how to connect to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelAccessView {
    /// The channel's ARN (or relay id).
    pub channel_arn: String,
    /// Its name.
    pub channel_name: String,
    /// `MASTER` or `VIEWER`.
    pub role: ChannelRole,
    /// WebSocket signaling endpoint.
    pub wss_endpoint: String,
    /// HTTPS endpoint (KVS only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_endpoint: Option<String>,
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
}

impl From<&ChannelAccess> for ChannelAccessView {
    fn from(a: &ChannelAccess) -> Self {
        Self {
            channel_arn: a.channel.arn.to_string(),
            channel_name: a.channel.name.to_string(),
            role: a.role,
            wss_endpoint: a.endpoints.wss.clone(),
            https_endpoint: a.endpoints.https.clone(),
            ice_servers: a.endpoints.ice_servers.clone(),
        }
    }
}

/// A peer's channel, joined as viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// The peer (master of the channel).
    pub user_id: String,
    /// How to reach it.
    #[serde(flatten)]
    pub access: ChannelAccessView,
}

/// Credentials on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum CredentialsView {
    /// Temporary AWS credentials for the KVS JS SDK.
    Aws {
        /// Access key id.
        access_key_id: String,
        /// Secret key.
        secret_access_key: String,
        /// Session token.
        session_token: String,
        /// Region of the channels.
        region: String,
    },
    /// Bearer token for the self-hosted relay.
    Token {
        /// The token.
        token: String,
    },
}

impl From<&Credentials> for CredentialsView {
    fn from(c: &Credentials) -> Self {
        match c {
            Credentials::AwsSession {
                access_key_id,
                secret_access_key,
                session_token,
                region,
            } => Self::Aws {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.expose().to_owned(),
                session_token: session_token.expose().to_owned(),
                region: region.clone(),
            },
            Credentials::Token { token } => Self::Token {
                token: token.expose().to_owned(),
            },
        }
    }
}

/// The `getVoiceCredentials` reply data. `signalingChannelARN` and `role` keep the original's
/// field names (they describe the caller's own channel); `peers` is the rest of the mesh plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceGrantView {
    /// The room.
    pub voice_room_id: String,
    /// Its chat room.
    pub chat_room_id: String,
    /// The caller.
    pub user_id: String,
    /// The caller's KVS client id.
    pub client_id: String,
    /// Own channel ARN (original field name).
    #[serde(rename = "signalingChannelARN")]
    pub signaling_channel_arn: String,
    /// Role on the own channel: always `MASTER` (original field name).
    pub role: ChannelRole,
    /// Own channel access.
    #[serde(rename = "self")]
    pub own: ChannelAccessView,
    /// Earlier participants' channels, joined as viewer.
    pub peers: Vec<PeerView>,
    /// Credentials for exactly `self` and `peers`.
    pub credentials: CredentialsView,
    /// Expiry, ms since epoch; refresh before.
    pub expires_at: u64,
    /// When the server issued the credentials, ms since epoch by the server's clock: the
    /// lifetime is `expires_at - issued_at`, whatever the client's clock says.
    pub issued_at: u64,
    /// Whether this call added the caller.
    pub newly_joined: bool,
    /// The room after the join.
    pub room: VoiceRoomView,
}

impl From<&VoiceGrant> for VoiceGrantView {
    fn from(g: &VoiceGrant) -> Self {
        Self {
            voice_room_id: g.room.id().to_string(),
            chat_room_id: g.room.chat_room().to_string(),
            user_id: g.user.to_string(),
            client_id: g.client_id.to_string(),
            signaling_channel_arn: g.own.channel.arn.to_string(),
            role: g.own.role,
            own: (&g.own).into(),
            peers: g
                .peers
                .iter()
                .map(|p| PeerView {
                    user_id: p.user.to_string(),
                    access: (&p.access).into(),
                })
                .collect(),
            credentials: (&g.credentials.credentials).into(),
            expires_at: g.credentials.expires_at.as_millis(),
            issued_at: g.issued_at.as_millis(),
            newly_joined: g.newly_joined,
            room: (&g.room).into(),
        }
    }
}

/// The `getVoiceRoom` reply data: `{"voiceRoom": VoiceRoomView | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveVoiceRoomView {
    /// The chat room's active voice room, if any.
    pub voice_room: Option<VoiceRoomView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_the_original_field_names() {
        let r: VoiceRequest =
            serde_json::from_str(r#"{"action":"createVoiceRoom","roomId":"r1"}"#).unwrap();
        assert_eq!(
            r.try_into_command().unwrap(),
            VoiceCommand::Create(ChatRoomId::parse("r1").unwrap())
        );
        let r: VoiceRequest = serde_json::from_str(
            r#"{"action":"setMute","voiceRoomId":"v1","muted":true,"requestId":"7"}"#,
        )
        .unwrap();
        assert_eq!(r.try_into_command().unwrap().action(), "setMute");
    }

    #[test]
    fn get_voice_credentials_is_a_join_unless_it_says_refresh() {
        let v1 = VoiceRoomId::parse("v1").unwrap();
        let parse = |json: &str| {
            serde_json::from_str::<VoiceRequest>(json)
                .unwrap()
                .try_into_command()
                .unwrap()
        };
        assert_eq!(
            parse(r#"{"action":"getVoiceCredentials","voiceRoomId":"v1"}"#),
            VoiceCommand::GetCredentials(v1.clone())
        );
        assert_eq!(
            parse(r#"{"action":"getVoiceCredentials","voiceRoomId":"v1","refresh":false}"#),
            VoiceCommand::GetCredentials(v1.clone())
        );
        let refresh =
            parse(r#"{"action":"getVoiceCredentials","voiceRoomId":"v1","refresh":true}"#);
        assert_eq!(refresh, VoiceCommand::RefreshCredentials(v1));
        assert_eq!(refresh.action(), "getVoiceCredentials");
        assert!(serde_json::from_str::<VoiceRequest>(
            r#"{"action":"getVoiceCredentials","voiceRoomId":"v1","refresh":"yes"}"#
        )
        .is_err());
    }

    #[test]
    fn screen_share_requests_parse_and_an_unknown_policy_is_a_bad_request() {
        let r: VoiceRequest = serde_json::from_str(
            r#"{"action":"setScreenSharePolicy","voiceRoomId":"v1","policy":"hosts"}"#,
        )
        .unwrap();
        assert_eq!(
            r.try_into_command().unwrap(),
            VoiceCommand::SetScreenSharePolicy(
                VoiceRoomId::parse("v1").unwrap(),
                ScreenSharePolicy::Hosts
            )
        );
        for bad in [
            r#"{"action":"setScreenSharePolicy","voiceRoomId":"v1","policy":"everyone"}"#,
            r#"{"action":"setScreenSharePolicy","voiceRoomId":"v1"}"#,
            r#"{"action":"startScreenShare"}"#,
        ] {
            assert!(serde_json::from_str::<VoiceRequest>(bad).is_err(), "{bad}");
        }
        for action in ["startScreenShare", "stopScreenShare"] {
            let r: VoiceRequest =
                serde_json::from_str(&format!(r#"{{"action":"{action}","voiceRoomId":"v1"}}"#))
                    .unwrap();
            assert_eq!(r.try_into_command().unwrap().action(), action);
            assert!(VOICE_ACTIONS.contains(&action));
        }
    }

    #[test]
    fn bad_requests_are_refused_not_panicked() {
        assert!(
            serde_json::from_str::<VoiceRequest>(r#"{"action":"setMute","voiceRoomId":"v"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<VoiceRequest>(r#"{"action":"nope"}"#).is_err());
        let r: VoiceRequest =
            serde_json::from_str(r#"{"action":"endVoiceRoom","voiceRoomId":""}"#).unwrap();
        assert!(r.try_into_command().is_err());
    }

    #[test]
    fn events_are_flat_with_a_type_and_event_name() {
        let ev = VoiceEvent::MuteChanged {
            voice_room_id: VoiceRoomId::parse("v1").unwrap(),
            chat_room_id: ChatRoomId::parse("c1").unwrap(),
            user: crate::ids::UserId::parse("bob").unwrap(),
            muted: true,
            server_muted: false,
        };
        let v = serde_json::to_value(EventEnvelope::new(&ev)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"event","event":"muteChanged","voiceRoomId":"v1","chatRoomId":"c1","user":"bob","muted":true,"serverMuted":false})
        );
        for (ev, name) in [
            (
                VoiceEvent::ParticipantReconnecting {
                    voice_room_id: VoiceRoomId::parse("v1").unwrap(),
                    chat_room_id: ChatRoomId::parse("c1").unwrap(),
                    user: crate::ids::UserId::parse("bob").unwrap(),
                },
                "participantReconnecting",
            ),
            (
                VoiceEvent::ParticipantResumed {
                    voice_room_id: VoiceRoomId::parse("v1").unwrap(),
                    chat_room_id: ChatRoomId::parse("c1").unwrap(),
                    user: crate::ids::UserId::parse("bob").unwrap(),
                    client_id: None,
                },
                "participantResumed",
            ),
        ] {
            assert_eq!(
                serde_json::to_value(EventEnvelope::new(&ev)).unwrap(),
                serde_json::json!({"type":"event","event":name,"voiceRoomId":"v1","chatRoomId":"c1","user":"bob"})
            );
        }
        let joined = VoiceEvent::ParticipantJoined {
            voice_room_id: VoiceRoomId::parse("v1").unwrap(),
            chat_room_id: ChatRoomId::parse("c1").unwrap(),
            user: crate::ids::UserId::parse("bob").unwrap(),
            client_id: Some(ClientId::parse("c-b.2E1").unwrap()),
            muted: false,
        };
        assert_eq!(
            serde_json::to_value(EventEnvelope::new(&joined)).unwrap(),
            serde_json::json!({"type":"event","event":"participantJoined","voiceRoomId":"v1","chatRoomId":"c1","user":"bob","clientId":"c-b.2E1","muted":false})
        );
    }

    #[test]
    fn replies_carry_request_id_and_error() {
        let r: Reply<()> = Reply::err(
            Some("9".into()),
            "endVoiceRoom",
            WireError::bad_request("x"),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["requestId"], "9");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "BAD_REQUEST");
        assert!(v.get("data").is_none());
    }

    mod fuzz {
        //! The decoder never panics, whatever arrives: arbitrary bytes, and JSON objects that
        //! look almost right (a real action, fields of random types and lengths).
        use super::super::*;
        use proptest::prelude::*;

        fn decode(bytes: &[u8]) -> Option<VoiceCommand> {
            serde_json::from_slice::<VoiceRequest>(bytes)
                .ok()
                .and_then(|r| r.try_into_command().ok())
        }

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,300}".prop_map(serde_json::Value::from),
                prop::collection::vec(any::<u8>(), 0..4).prop_map(serde_json::Value::from),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
            ))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode(&bytes);
            }

            #[test]
            fn near_miss_requests_never_panic_and_valid_ids_round_trip(
                action in prop::sample::select(VOICE_ACTIONS),
                room_id in json_value(),
                voice_room_id in json_value(),
                muted in json_value(),
                extra in json_value(),
            ) {
                let msg = serde_json::json!({
                    "action": action,
                    "roomId": room_id,
                    "voiceRoomId": voice_room_id,
                    "muted": muted,
                    "requestId": extra,
                });
                let bytes = serde_json::to_vec(&msg).unwrap();
                if let Some(cmd) = decode(&bytes) {
                    // Whatever decoded is the action that was sent, with ids that are valid.
                    prop_assert_eq!(cmd.action(), action);
                }
            }
        }
    }
}
