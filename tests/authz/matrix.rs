//! The authorization matrix of the voice actions: who may do what, and the exact refusal
//! otherwise. One table, included (`#[path]`) by both entrypoints' tests, so the self-hosted
//! server (over real sockets, `voice-server/tests/authz.rs`) and the Lambda handler (over the
//! in-memory adapters, `voice-lambda/tests/authz_memory.rs`) are held to the same answers.
//!
//! The world every case starts from (fresh for each case):
//! - chat room **A**: admin Ada; approved members Mo, Pia and Bo; Pat's join request pending;
//! - voice room **V** in A: Mo started it (master, first participant), Pia joined second;
//!   Ada (the chat admin) and Bo are not in it;
//! - chat room **B**: admin Oz, who started B's own voice room **VB** and is its master;
//! - Out is identified but in no chat room; a connection that never identified is "no identity".
//!
//! The signaling relay (self-hosted only, the one place tokens exist) has its own table in
//! `voice-server/tests/authz.rs`, over the same world.
#![allow(dead_code)]

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A connection with no user behind it (server: no `hello`; Lambda: unknown to the chat app).
    NoIdentity,
    /// Out: identified, not in chat room A (not even pending).
    NotMember,
    /// Pat: asked to join A, not approved yet.
    Pending,
    /// Bo: approved member of A, not in the voice room.
    ApprovedMember,
    /// Ada: the chat room's admin, not in the voice room.
    ChatAdmin,
    /// Mo: the voice room's master (and its first participant).
    VoiceMaster,
    /// Pia: a participant who is neither master nor admin.
    Participant,
    /// Oz: admin of chat room B and master of B's voice room; nothing in A.
    OtherChatMember,
}

/// Every caller kind, in table order.
pub const CALLERS: [Caller; 8] = [
    Caller::NoIdentity,
    Caller::NotMember,
    Caller::Pending,
    Caller::ApprovedMember,
    Caller::ChatAdmin,
    Caller::VoiceMaster,
    Caller::Participant,
    Caller::OtherChatMember,
];

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `createVoiceRoom {roomId: A}` while V is active.
    CreateWhileActive,
    /// `createVoiceRoom {roomId: A}` after Mo ended V (A has no active voice room).
    CreateWhenIdle,
    /// `getVoiceCredentials {voiceRoomId: V}`: a join for non-participants, a refresh for
    /// participants.
    GetCredentials,
    /// `endVoiceRoom {voiceRoomId: V}`.
    End,
    /// `leaveVoiceRoom {voiceRoomId: V}`.
    Leave,
    /// `setMute {voiceRoomId: V, muted: true}`.
    SetMute,
    /// `serverMute {voiceRoomId: V, userId: Pia, muted: true}`: mute Pia for everyone.
    ServerMute,
    /// `getVoiceRoom {roomId: A}`.
    GetVoiceRoom,
    /// `startScreenShare {voiceRoomId: V}` under V's default policy (`anyone`).
    StartShare,
    /// `startScreenShare {voiceRoomId: V}` after Mo set V's policy to `hosts`.
    StartShareHosts,
    /// `stopScreenShare {voiceRoomId: V}` while Pia shares her screen.
    StopShare,
    /// `setScreenSharePolicy {voiceRoomId: V, policy: "hosts"}`.
    SetSharePolicy,
}

/// Every action, in table order (the columns of [`MATRIX`]).
pub const ACTIONS: [Action; 12] = [
    Action::CreateWhileActive,
    Action::CreateWhenIdle,
    Action::GetCredentials,
    Action::End,
    Action::Leave,
    Action::SetMute,
    Action::ServerMute,
    Action::GetVoiceRoom,
    Action::StartShare,
    Action::StartShareHosts,
    Action::StopShare,
    Action::SetSharePolicy,
];

impl Action {
    /// The wire action name.
    pub fn wire(self) -> &'static str {
        match self {
            Self::CreateWhileActive | Self::CreateWhenIdle => "createVoiceRoom",
            Self::GetCredentials => "getVoiceCredentials",
            Self::End => "endVoiceRoom",
            Self::Leave => "leaveVoiceRoom",
            Self::SetMute => "setMute",
            Self::ServerMute => "serverMute",
            Self::GetVoiceRoom => "getVoiceRoom",
            Self::StartShare | Self::StartShareHosts => "startScreenShare",
            Self::StopShare => "stopScreenShare",
            Self::SetSharePolicy => "setScreenSharePolicy",
        }
    }

    /// Whether an allowed call changes the voice rooms.
    pub fn mutates(self) -> bool {
        !matches!(self, Self::GetVoiceRoom)
    }
}

/// The expected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Succeeds (and does what it says; each test checks the effect).
    Allow,
    /// Refused with exactly this code, changing nothing and telling nobody.
    Refuse(&'static str),
}

use Expect::{Allow, Refuse};

const NOT_IDENTIFIED: Expect = Refuse("NOT_IDENTIFIED");
const NOT_MEMBER: Expect = Refuse("NOT_MEMBER");
const NOT_APPROVED: Expect = Refuse("NOT_APPROVED");
const NOT_ALLOWED: Expect = Refuse("NOT_ALLOWED");
const NOT_PARTICIPANT: Expect = Refuse("NOT_PARTICIPANT");
const ALREADY_ACTIVE: Expect = Refuse("ALREADY_ACTIVE");
const NOT_IN_VOICE: Expect = Refuse("NOT_IN_VOICE");

/// Rows: callers. Columns: [`ACTIONS`].
#[rustfmt::skip]
pub const MATRIX: [(Caller, [Expect; 12]); 8] = [
    //                          create (active)  create (idle)  getVoiceCredentials  endVoiceRoom  leaveVoiceRoom   setMute          serverMute      getVoiceRoom    startScreenShare startScreenShare (hosts) stopScreenShare (Pia shares) setScreenSharePolicy
    (Caller::NoIdentity,      [NOT_IDENTIFIED,  NOT_IDENTIFIED, NOT_IDENTIFIED,      NOT_IDENTIFIED, NOT_IDENTIFIED, NOT_IDENTIFIED, NOT_IDENTIFIED, NOT_IDENTIFIED, NOT_IDENTIFIED,  NOT_IDENTIFIED,          NOT_IDENTIFIED,              NOT_IDENTIFIED]),
    (Caller::NotMember,       [NOT_MEMBER,      NOT_MEMBER,     NOT_MEMBER,          NOT_ALLOWED,    NOT_PARTICIPANT, NOT_PARTICIPANT, NOT_ALLOWED,    NOT_MEMBER,     NOT_MEMBER,      NOT_MEMBER,              NOT_ALLOWED,                 NOT_ALLOWED]),
    (Caller::Pending,         [NOT_APPROVED,    NOT_APPROVED,   NOT_APPROVED,        NOT_ALLOWED,    NOT_PARTICIPANT, NOT_PARTICIPANT, NOT_ALLOWED,    NOT_APPROVED,   NOT_APPROVED,    NOT_APPROVED,            NOT_ALLOWED,                 NOT_ALLOWED]),
    (Caller::ApprovedMember,  [ALREADY_ACTIVE,  Allow,          Allow,               NOT_ALLOWED,    NOT_PARTICIPANT, NOT_PARTICIPANT, NOT_ALLOWED,    Allow,          NOT_IN_VOICE,    NOT_IN_VOICE,            NOT_ALLOWED,                 NOT_ALLOWED]),
    (Caller::ChatAdmin,       [ALREADY_ACTIVE,  Allow,          Allow,               Allow,          NOT_PARTICIPANT, NOT_PARTICIPANT, Allow,          Allow,          NOT_IN_VOICE,    NOT_IN_VOICE,            Allow,                       Allow]),
    (Caller::VoiceMaster,     [ALREADY_ACTIVE,  Allow,          Allow,               Allow,          Allow,           Allow,           Allow,          Allow,          Allow,           Allow,                   Allow,                       Allow]),
    (Caller::Participant,     [ALREADY_ACTIVE,  Allow,          Allow,               NOT_ALLOWED,    Allow,           Allow,           NOT_ALLOWED,    Allow,          Allow,           NOT_ALLOWED,             Allow,                       NOT_ALLOWED]),
    (Caller::OtherChatMember, [NOT_MEMBER,      NOT_MEMBER,     NOT_MEMBER,          NOT_ALLOWED,    NOT_PARTICIPANT, NOT_PARTICIPANT, NOT_ALLOWED,    NOT_MEMBER,     NOT_MEMBER,      NOT_MEMBER,              NOT_ALLOWED,                 NOT_ALLOWED]),
];

/// Every (caller, action, expected) cell, row by row.
pub fn cells() -> Vec<(Caller, Action, Expect)> {
    let cells: Vec<_> = MATRIX
        .iter()
        .flat_map(|(caller, row)| {
            ACTIONS
                .iter()
                .zip(row.iter())
                .map(move |(action, expect)| (*caller, *action, *expect))
        })
        .collect();
    // The table covers every caller exactly once, in order: a row cannot go missing unnoticed.
    assert_eq!(
        MATRIX.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        CALLERS.to_vec(),
        "one row per caller kind"
    );
    assert_eq!(cells.len(), CALLERS.len() * ACTIONS.len());
    cells
}
