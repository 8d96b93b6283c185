//! What chat members are told (events) and what replies show (views), in their wire shapes.

use serde::Serialize;
use voice_domain::ports::MemberState;
use voice_domain::protocol::EventEnvelope;

use crate::model::ChatMessage;

/// Chat events, pushed as `{"type":"event","event":"<name>",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ChatEvent {
    /// To the admin: someone asked to join.
    JoinRequested {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
        /// Their name.
        name: String,
    },
    /// To the requester: approved.
    JoinApproved {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
    },
    /// To the requester: denied.
    JoinDenied {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
    },
    /// To the approved members: a new member.
    MemberJoined {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
        /// Their name.
        name: String,
    },
    /// To the removed user and the room's approved members: the admin removed (or banned)
    /// a member or a pending requester. The removed user's page drops the room.
    MemberRemoved {
        /// The room.
        room_id: String,
        /// Who.
        user_id: String,
        /// Whether they are also banned (may not ask to join again).
        banned: bool,
    },
    /// To the approved members: a message.
    Message(ChatMessage),
    /// To every identified connection: a new room exists (the room list is live).
    RoomCreated {
        /// The room.
        room_id: String,
        /// Its name.
        name: String,
        /// Its admin.
        admin_user_id: String,
    },
    /// To the approved members of every room the user is in: the user came online (first
    /// connection) or went offline (last connection closed).
    PresenceChanged {
        /// Who.
        user_id: String,
        /// Whether they have an open connection now.
        online: bool,
    },
}

/// Wraps any `{"event": ...}` shape into `{"type":"event", ...}` (the protocol's one event
/// envelope, shared with voice events).
pub fn event_frame(event: &impl Serialize) -> String {
    serde_json::to_string(&EventEnvelope::new(event))
        .expect("wire types always serialise: string keys, no non-finite floats")
}

/// `hello` reply data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloData {
    /// The user id (stable across reloads when `resumeToken` is sent back).
    pub user_id: String,
    /// The display name.
    pub name: String,
    /// This connection's id.
    pub connection_id: String,
    /// Send it back in `hello` after a reload to stay the same user.
    pub resume_token: String,
    /// Whether the `resumeToken` sent was accepted.
    pub resumed: bool,
}

/// A room as `listRooms` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    /// Its id.
    pub room_id: String,
    /// Its name.
    pub name: String,
    /// Its admin.
    pub admin_user_id: String,
    /// Approved members.
    pub member_count: usize,
    /// The caller's state: `approved`, `pending` or `none`.
    pub my_state: MemberState,
    /// The active voice room, shown to approved members only.
    pub voice_room_id: Option<String>,
}

/// A member as `listMembers` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// Who.
    pub user_id: String,
    /// Their name.
    pub name: String,
    /// `approved` or `pending`.
    pub state: MemberState,
    /// Whether they are the admin.
    pub is_admin: bool,
    /// Whether they have an open connection.
    pub online: bool,
}

/// One page of `listRooms`: the rooms and where the next page starts (`null` on the last).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomsPage {
    /// The rooms of this page.
    pub rooms: Vec<RoomView>,
    /// Send it back as `cursor` for the next page; `null` when there is none.
    pub next_cursor: Option<String>,
}

/// One page of `listMembers`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersPage {
    /// The members and requesters of this page.
    pub members: Vec<MemberView>,
    /// Send it back as `cursor` for the next page; `null` when there is none.
    pub next_cursor: Option<String>,
}

/// One page of `getMessages`: messages oldest first; the cursor pages to *older* history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesPage {
    /// The messages of this page, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Send it back as `cursor` for the messages before these; `null` when there are none.
    pub next_cursor: Option<String>,
}
