//! Model-based property test: random command sequences on the real `VoiceService` over the
//! in-memory adapters, checked after every step against a simple model and the invariants.
//!
//! The world: 3 chat rooms (plus one id that does not exist), 6 users with random memberships
//! and a random admin per chat room, connections that come and go (a user may have several
//! tabs), a capacity of 2 to 4. Commands: start, join (new, refresh, reconnect from another
//! tab), leave, mute, end, active room lookup, disconnect (with or without the `$disconnect`
//! reaching voice), a socket dying unnoticed (the notifier then says "gone"), sweep, clock
//! moves, membership changes (approve, make pending, revoke), and a server restart (every
//! connection gone, `restarted`, users come back on new connections).
//!
//! Resume: a disconnected participant becomes reconnecting (keeping place, role, mute and
//! channel); the same user joining from a new connection resumes it; the sweep marks
//! participants on forgotten connections reconnecting and removes those reconnecting for the
//! reconnect grace (30 s) or longer, as leaves.
//!
//! After every step:
//! - every response (success or error code) is the one the model predicts, and for successes
//!   the returned room / grant agrees with the model (a start on a chat room with an active room
//!   is `ALREADY_ACTIVE` naming that room, etc.);
//! - the stored rooms are exactly the model's: status, master, participants in join order with
//!   connection, mute state and channel;
//! - at most one active room per chat room, and the store's index agrees;
//! - every stored room passes `VoiceRoom::from_parts` (participants ≤ capacity, the master is a
//!   participant while active, ended rooms have none, no user or channel twice);
//! - the channels in `MemoryChannels` are exactly the active participants' channels, one each,
//!   all distinct: no orphan, no participant without its channel;
//! - admission: every participant was an approved member (or the admin) of the chat room at
//!   the moment it entered the room, by start, join, or reconnect from a new connection. This
//!   is checked from the directory, independently of the model. Revoking a membership later
//!   does NOT evict: the domain has no eviction on revoke (by design, the chat app's change only
//!   stops new joins and credential refreshes, since the gate runs on every
//!   `getVoiceCredentials`); a revoked participant stays until it leaves, disconnects, is
//!   swept or the room ends, and its refresh is refused (checked through the model);
//! - events reach only open connections of the chat room's approved members, and a start
//!   reaches every one of them that is not dead;
//! - a join's credentials were issued for exactly its plan: master of its own channel, viewer
//!   on each earlier participant's, in join order;
//! - a participant holds exactly one connection: no connection is any other participant's in
//!   the room, a replaced connection can no longer leave, mute or end for it, and after a sweep
//!   every participant that is not reconnecting is on a connection the chat app knows;
//! - after a sweep no participant has been reconnecting for the grace or longer.
//!
//! Cases: 1000 by default; `PROPTEST_CASES` may ask for more.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::executor::block_on;
use proptest::prelude::*;
use voice_adapters_memory::{
    ManualClock, MemoryChannels, MemoryCredentials, MemoryDirectory, MemoryNotifier, MemoryStore,
    SequentialIds,
};
use voice_domain::errors::UseCaseError;
use voice_domain::ports::{Adapters, MemberState, Ports, VoiceRoomStore};
use voice_domain::room::ChannelGrant;
use voice_domain::{
    Capacity, ChannelArn, ChannelRole, ChatRoomId, ConnectionId, ServiceConfig, SignalingChannel,
    Timestamp, UserId, VoiceEvent, VoiceRoom, VoiceRoomId, VoiceService,
};

const CHATS: usize = 3;
const USERS: usize = 6;

struct ModelPorts;

impl Ports for ModelPorts {
    type Store = MemoryStore;
    type Directory = MemoryDirectory;
    type Channels = MemoryChannels<ManualClock>;
    type Credentials = MemoryCredentials<ManualClock>;
    type Notifier = MemoryNotifier;
    type Clock = ManualClock;
    type Ids = SequentialIds;
    type Pool = voice_domain::pool::NoPool;
}

fn user_id(u: usize) -> UserId {
    UserId::parse(format!("u{u}")).unwrap()
}

/// Chat room `chat`; index `CHATS` is a chat room that does not exist.
fn chat_id(chat: usize) -> ChatRoomId {
    ChatRoomId::parse(format!("chat-{chat}")).unwrap()
}

/// Which voice room a command addresses.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The active room of chat `n % CHATS`, else its latest room, else an unknown id.
    OfChat(usize),
    /// Any room ever started, by index (`n % (rooms + 1)`; the extra one is an unknown id).
    Any(usize),
}

#[derive(Debug, Clone)]
enum Cmd {
    Start {
        conn: usize,
        chat: usize,
    },
    Join {
        conn: usize,
        target: Target,
    },
    Leave {
        conn: usize,
        target: Target,
    },
    Mute {
        conn: usize,
        target: Target,
        muted: bool,
    },
    End {
        conn: usize,
        target: Target,
    },
    ActiveVoice {
        conn: usize,
        chat: usize,
    },
    /// A new connection (tab) for `user`.
    Connect {
        user: usize,
    },
    /// The socket closes and the chat app forgets the connection; `notify_voice` says whether
    /// `$disconnect` reaches voice (else the sweep must notice).
    Disconnect {
        conn: usize,
        notify_voice: bool,
    },
    /// The socket dies but the chat app has not noticed: sending to it says "gone".
    Drop {
        conn: usize,
    },
    SetMembership {
        chat: usize,
        user: usize,
        state: MemberState,
    },
    Sweep,
    Advance {
        secs: u64,
    },
    /// The server restarts: every connection dies, `restarted` runs, then each user comes back
    /// on a new connection.
    Restart,
}

#[derive(Debug, Clone)]
struct Setup {
    admins: [usize; CHATS],
    members: [[MemberState; USERS]; CHATS],
    capacity: u8,
}

fn member_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        3 => Just(MemberState::Approved),
        1 => Just(MemberState::Pending),
        1 => Just(MemberState::None),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::array::uniform3(0..USERS),
        proptest::array::uniform3(proptest::array::uniform6(member_state())),
        2u8..=4,
    )
        .prop_map(|(admins, members, capacity)| Setup {
            admins,
            members,
            capacity,
        })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (0..CHATS).prop_map(Target::OfChat),
        1 => any::<u8>().prop_map(|n| Target::Any(usize::from(n))),
    ]
}

/// A chat room, now and then one that does not exist.
fn chat() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0..CHATS, 1 => Just(CHATS)]
}

fn conn() -> impl Strategy<Value = usize> {
    any::<u8>().prop_map(usize::from)
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        5 => (conn(), chat()).prop_map(|(conn, chat)| Cmd::Start { conn, chat }),
        8 => (conn(), target()).prop_map(|(conn, target)| Cmd::Join { conn, target }),
        3 => (conn(), target()).prop_map(|(conn, target)| Cmd::Leave { conn, target }),
        2 => (conn(), target(), any::<bool>())
            .prop_map(|(conn, target, muted)| Cmd::Mute { conn, target, muted }),
        2 => (conn(), target()).prop_map(|(conn, target)| Cmd::End { conn, target }),
        1 => (conn(), chat()).prop_map(|(conn, chat)| Cmd::ActiveVoice { conn, chat }),
        2 => (0..USERS).prop_map(|user| Cmd::Connect { user }),
        2 => (conn(), any::<bool>())
            .prop_map(|(conn, notify_voice)| Cmd::Disconnect { conn, notify_voice }),
        1 => conn().prop_map(|conn| Cmd::Drop { conn }),
        2 => (0..CHATS, 0..USERS, member_state())
            .prop_map(|(chat, user, state)| Cmd::SetMembership { chat, user, state }),
        1 => Just(Cmd::Sweep),
        2 => prop_oneof![0u64..40, 0u64..600].prop_map(|secs| Cmd::Advance { secs }),
        1 => Just(Cmd::Restart),
    ]
}

#[derive(Debug, Clone)]
struct ConnM {
    id: ConnectionId,
    user: usize,
    /// Known to the chat app.
    registered: bool,
    /// The socket is dead: the notifier says "gone".
    gone: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct PartM {
    user: usize,
    conn: usize,
    muted: bool,
    channel: SignalingChannel,
    /// Since when (ms) its connection is gone, while it may resume.
    reconnecting_since: Option<u64>,
}

#[derive(Debug, Clone)]
struct RoomM {
    id: VoiceRoomId,
    chat: usize,
    active: bool,
    master: usize,
    parts: Vec<PartM>,
}

/// What the model expects of the world.
struct Model {
    admins: [usize; CHATS],
    members: [[MemberState; USERS]; CHATS],
    capacity: usize,
    conns: Vec<ConnM>,
    /// Every room ever started, oldest first.
    rooms: Vec<RoomM>,
    /// How often each kind of outcome happened, so the test can show it is not vacuous.
    stats: BTreeMap<String, u64>,
    /// The clock, ms.
    now: u64,
}

/// The service's reconnect grace (the default).
const RECONNECT_GRACE: Duration = voice_domain::DEFAULT_RECONNECT_GRACE;

impl Model {
    fn count(&mut self, what: impl Into<String>) {
        *self.stats.entry(what.into()).or_default() += 1;
    }

    fn approved(&self, chat: usize, user: usize) -> bool {
        chat < CHATS
            && (self.admins[chat] == user || self.members[chat][user] == MemberState::Approved)
    }

    /// The membership gate's answer.
    fn gate(&self, chat: usize, user: usize) -> Result<(), &'static str> {
        if chat >= CHATS {
            return Err("CHAT_ROOM_NOT_FOUND");
        }
        if self.admins[chat] == user {
            return Ok(());
        }
        match self.members[chat][user] {
            MemberState::Approved => Ok(()),
            MemberState::Pending => Err("NOT_APPROVED"),
            MemberState::None => Err("NOT_MEMBER"),
        }
    }

    fn active_in(&self, chat: usize) -> Option<usize> {
        self.rooms.iter().position(|r| r.active && r.chat == chat)
    }

    /// The room index a target names; `None` is an id the store does not know.
    fn resolve(&self, target: Target) -> Option<usize> {
        match target {
            Target::OfChat(c) => self
                .active_in(c)
                .or_else(|| self.rooms.iter().rposition(|r| r.chat == c)),
            Target::Any(n) => {
                let i = n % (self.rooms.len() + 1);
                (i < self.rooms.len()).then_some(i)
            }
        }
    }

    /// Removes participant `idx` of room `r`: the earliest remaining takes over as master; the
    /// last one out ends the room.
    fn remove_part(&mut self, r: usize, idx: usize) {
        let room = &mut self.rooms[r];
        let gone = room.parts.remove(idx);
        let what = match room.parts.first() {
            None => {
                room.active = false;
                "model: last one out ends the room"
            }
            Some(first) if room.master == gone.user => {
                room.master = first.user;
                "model: master hand-over"
            }
            Some(_) => "model: participant removed",
        };
        self.count(what);
    }

    /// Marks the participant on connection `c` reconnecting in every active room; returns the
    /// chat rooms that changed.
    fn remove_conn(&mut self, c: usize) -> Vec<usize> {
        let now = self.now;
        let mut chats = Vec::new();
        for room in self.rooms.iter_mut().filter(|r| r.active) {
            if let Some(p) = room
                .parts
                .iter_mut()
                .find(|p| p.conn == c && p.reconnecting_since.is_none())
            {
                p.reconnecting_since = Some(now);
                chats.push(room.chat);
            }
        }
        chats
    }

    /// Removes, in join order, every participant of room `r` reconnecting for the grace or
    /// longer; returns whether any was.
    fn expire(&mut self, r: usize) -> bool {
        let grace = u64::try_from(RECONNECT_GRACE.as_millis()).unwrap();
        let now = self.now;
        let mut any = false;
        while self.rooms[r].active {
            let Some(idx) = self.rooms[r]
                .parts
                .iter()
                .position(|p| p.reconnecting_since.is_some_and(|t| now - t >= grace))
            else {
                break;
            };
            self.remove_part(r, idx);
            any = true;
        }
        any
    }

    /// Events about `chats` are sent to the open connections of their approved members; those
    /// that turn out gone are removed from their rooms, whose events are sent in turn.
    fn publish(&mut self, chats: Vec<usize>) {
        let mut handled = HashSet::new();
        let mut queue = chats;
        while !queue.is_empty() {
            let mut gone = BTreeSet::new();
            for &chat in &queue {
                for (i, c) in self.conns.iter().enumerate() {
                    if c.registered && c.gone && self.approved(chat, c.user) {
                        gone.insert(i);
                    }
                }
            }
            queue = Vec::new();
            for c in gone {
                if handled.insert(c) {
                    let chats = self.remove_conn(c);
                    if !chats.is_empty() {
                        self.count("model: gone connection marked reconnecting while publishing");
                    }
                    queue.extend(chats);
                }
            }
        }
    }
}

/// The real world: the service and handles onto its adapters.
struct World {
    service: VoiceService<ModelPorts>,
    store: MemoryStore,
    directory: MemoryDirectory,
    channels: MemoryChannels<ManualClock>,
    credentials: MemoryCredentials<ManualClock>,
    notifier: MemoryNotifier,
    clock: ManualClock,
    /// Participants seen so far, (room, user, connection), for the admission check.
    admitted: HashSet<(VoiceRoomId, UserId, ConnectionId)>,
}

fn code_of<T, E: UseCaseError>(r: &Result<T, E>) -> Result<(), &'static str> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.code()),
    }
}

struct Harness {
    w: World,
    m: Model,
    next_conn: usize,
}

impl Harness {
    fn new(setup: &Setup) -> Self {
        let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
        let store = MemoryStore::new();
        let directory = MemoryDirectory::new();
        let channels = MemoryChannels::new(clock.clone());
        let credentials = MemoryCredentials::new(clock.clone());
        let notifier = MemoryNotifier::new();
        let service = VoiceService::new(
            Adapters::<ModelPorts> {
                store: store.clone(),
                directory: directory.clone(),
                channels: channels.clone(),
                credentials: credentials.clone(),
                notifier: notifier.clone(),
                clock: clock.clone(),
                ids: SequentialIds::default(),
                pool: voice_domain::pool::NoPool,
            },
            ServiceConfig {
                capacity: Capacity::new(setup.capacity).unwrap(),
                ..ServiceConfig::default()
            },
        );
        let mut members = setup.members;
        for (chat, (&admin, states)) in setup.admins.iter().zip(members.iter_mut()).enumerate() {
            states[admin] = MemberState::Approved;
            directory
                .create_room(chat_id(chat), user_id(admin))
                .unwrap();
            for (u, &state) in states.iter().enumerate() {
                if u != admin {
                    directory
                        .set_state(&chat_id(chat), user_id(u), state)
                        .unwrap();
                }
            }
        }
        let mut h = Self {
            w: World {
                service,
                store,
                directory,
                channels,
                credentials,
                notifier,
                clock,
                admitted: HashSet::new(),
            },
            m: Model {
                admins: setup.admins,
                members,
                capacity: usize::from(setup.capacity),
                conns: Vec::new(),
                rooms: Vec::new(),
                stats: BTreeMap::new(),
                now: 1_700_000_000_000,
            },
            next_conn: 0,
        };
        for u in 0..USERS {
            h.connect(u);
        }
        h
    }

    fn connect(&mut self, user: usize) {
        self.next_conn += 1;
        let id = ConnectionId::parse(format!("u{user}-c{}", self.next_conn)).unwrap();
        self.w.directory.connect(id.clone(), user_id(user));
        self.m.conns.push(ConnM {
            id,
            user,
            registered: true,
            gone: false,
        });
    }

    fn room_id(&self, r: Option<usize>) -> VoiceRoomId {
        r.map_or_else(
            || VoiceRoomId::parse("vr-unknown").unwrap(),
            |r| self.m.rooms[r].id.clone(),
        )
    }

    /// Checks a room returned by a use case against the model's room `r`.
    fn assert_returned(&self, step: &str, got: &VoiceRoom, r: usize) {
        let want = &self.m.rooms[r];
        assert_eq!(got.id(), &want.id, "{step}: returned room id");
        assert_eq!(got.is_active(), want.active, "{step}: returned status");
        assert_eq!(
            self.parts_of(got),
            want.parts,
            "{step}: returned participants"
        );
        if want.active {
            assert_eq!(
                got.master(),
                &user_id(want.master),
                "{step}: returned master"
            );
        }
    }

    /// A real room's participants in the model's terms.
    fn parts_of(&self, room: &VoiceRoom) -> Vec<PartM> {
        room.participants()
            .iter()
            .map(|p| PartM {
                user: p.user.as_str()[1..].parse().unwrap(),
                conn: self
                    .m
                    .conns
                    .iter()
                    .position(|c| c.id == p.connection)
                    .expect("a known connection"),
                muted: p.muted,
                channel: p.channel.clone(),
                reconnecting_since: p.reconnecting_since.map(Timestamp::as_millis),
            })
            .collect()
    }

    /// Records the outcome of a use case under `kind`.
    fn tally(&mut self, kind: &str, outcome: Result<(), &'static str>) {
        let what = format!("{kind}: {}", outcome.err().unwrap_or("ok"));
        self.m.count(what);
    }

    fn step(&mut self, n: usize, cmd: &Cmd) {
        let step = format!("step {n} {cmd:?}");
        let nconns = self.m.conns.len();
        match *cmd {
            Cmd::Start { conn, chat } => {
                let c = conn % nconns;
                let ConnM {
                    id,
                    user,
                    registered,
                    ..
                } = self.m.conns[c].clone();
                let got = block_on(self.w.service.start_voice(&id, &chat_id(chat)));
                let want = if !registered {
                    Err("NOT_IDENTIFIED")
                } else {
                    self.m
                        .gate(chat, user)
                        .and_then(|()| match self.m.active_in(chat) {
                            Some(r) => Err("ALREADY_ACTIVE").inspect_err(|_| {
                                // The refusal names the active room.
                                let Err(voice_domain::errors::StartVoiceError::AlreadyActive {
                                    voice_room_id,
                                }) = &got
                                else {
                                    panic!("{step}: expected ALREADY_ACTIVE, got {got:?}");
                                };
                                assert_eq!(voice_room_id, &self.m.rooms[r].id, "{step}");
                            }),
                            None => Ok(()),
                        })
                };
                assert_eq!(code_of(&got), want, "{step}");
                self.tally("start", want);
                if let Ok(room) = got {
                    assert!(
                        self.m.rooms.iter().all(|r| &r.id != room.id()),
                        "{step}: reused a room id"
                    );
                    self.m.rooms.push(RoomM {
                        id: room.id().clone(),
                        chat,
                        active: true,
                        master: user,
                        parts: vec![PartM {
                            user,
                            conn: c,
                            muted: false,
                            channel: room.participants()[0].channel.clone(),
                            reconnecting_since: None,
                        }],
                    });
                    let r = self.m.rooms.len() - 1;
                    self.assert_returned(&step, &room, r);
                    self.check_start_announced(&step, &room, chat);
                    self.m.publish(vec![chat]);
                }
            }
            Cmd::Join { conn, target } => {
                let c = conn % nconns;
                let ConnM {
                    id,
                    user,
                    registered,
                    ..
                } = self.m.conns[c].clone();
                let r = self.m.resolve(target);
                let got = block_on(self.w.service.join_voice(&id, &self.room_id(r)));
                // identify, find the room, the gate, then the room's state.
                let outcome = if !registered {
                    Err("NOT_IDENTIFIED")
                } else if let Some(r) = r {
                    let room = &self.m.rooms[r];
                    self.m.gate(room.chat, user).and_then(|()| {
                        if !room.active {
                            Err("VOICE_ROOM_ENDED")
                        } else if room.parts.iter().any(|p| p.user == user) {
                            Ok(false)
                        } else if room.parts.len() >= self.m.capacity {
                            Err("ROOM_FULL")
                        } else {
                            Ok(true)
                        }
                    })
                } else {
                    Err("VOICE_ROOM_NOT_FOUND")
                };
                assert_eq!(code_of(&got), outcome.map(|_| ()), "{step}");
                self.tally("join", outcome.map(|_| ()));
                if let (Ok(grant), Ok(newly), Some(r)) = (got, outcome, r) {
                    assert_eq!(grant.newly_joined, newly, "{step}: newly_joined");
                    let mut resumed = false;
                    if !newly {
                        let p = self.m.rooms[r]
                            .parts
                            .iter()
                            .find(|p| p.user == user)
                            .unwrap();
                        let what = if p.reconnecting_since.is_some() {
                            "join: resume after a drop"
                        } else if p.conn == c {
                            "join: refresh"
                        } else {
                            "join: reconnect"
                        };
                        resumed = what != "join: refresh";
                        self.m.count(what);
                    }
                    let room = &mut self.m.rooms[r];
                    if newly {
                        room.parts.push(PartM {
                            user,
                            conn: c,
                            muted: false,
                            channel: grant.own.channel.clone(),
                            reconnecting_since: None,
                        });
                    } else {
                        // A refresh, or a resume on this connection: same channel, place, mute.
                        let p = room.parts.iter_mut().find(|p| p.user == user).unwrap();
                        assert_eq!(grant.own.channel, p.channel, "{step}: kept its channel");
                        p.conn = c;
                        p.reconnecting_since = None;
                    }
                    self.assert_returned(&step, &grant.room, r);
                    // The plan: master of its own channel, viewer on every earlier one.
                    let room = &self.m.rooms[r];
                    let idx = room.parts.iter().position(|p| p.user == user).unwrap();
                    assert_eq!(grant.own.role, ChannelRole::Master, "{step}");
                    let peers: Vec<(UserId, SignalingChannel, ChannelRole)> = grant
                        .peers
                        .iter()
                        .map(|p| (p.user.clone(), p.access.channel.clone(), p.access.role))
                        .collect();
                    let want_peers: Vec<_> = room.parts[..idx]
                        .iter()
                        .map(|p| (user_id(p.user), p.channel.clone(), ChannelRole::Viewer))
                        .collect();
                    assert_eq!(peers, want_peers, "{step}: peers");
                    // The credentials allow exactly that plan.
                    let (req, issued) = self.w.credentials.issued().pop().expect("issued");
                    assert_eq!(issued, grant.credentials, "{step}");
                    assert_eq!(req.user, user_id(user), "{step}");
                    assert_eq!(req.connection, id, "{step}");
                    assert_eq!(req.voice_room, room.id, "{step}");
                    let mut want_grants = vec![ChannelGrant {
                        channel: grant.own.channel.arn.clone(),
                        role: ChannelRole::Master,
                    }];
                    want_grants.extend(room.parts[..idx].iter().map(|p| ChannelGrant {
                        channel: p.channel.arn.clone(),
                        role: ChannelRole::Viewer,
                    }));
                    assert_eq!(req.grants, want_grants, "{step}: credential scope");
                    if newly || resumed {
                        self.m.publish(vec![room.chat]);
                    }
                }
            }
            Cmd::Leave { conn, target } => {
                let c = conn % nconns;
                let ConnM {
                    id,
                    user,
                    registered,
                    ..
                } = self.m.conns[c].clone();
                let r = self.m.resolve(target);
                let got = block_on(self.w.service.leave_voice(&id, &self.room_id(r)));
                let idx = r.and_then(|r| self.m.rooms[r].parts.iter().position(|p| p.user == user));
                let want = match r {
                    _ if !registered => Err("NOT_IDENTIFIED"),
                    None => Err("VOICE_ROOM_NOT_FOUND"),
                    Some(r) if !self.m.rooms[r].active => Err("VOICE_ROOM_ENDED"),
                    Some(_) if idx.is_none() => Err("NOT_PARTICIPANT"),
                    Some(r) if self.m.rooms[r].parts[idx.unwrap()].conn != c => {
                        self.m.count("leave: refused from a replaced connection");
                        Err("NOT_PARTICIPANT")
                    }
                    Some(_) => Ok(()),
                };
                assert_eq!(code_of(&got), want, "{step}");
                self.tally("leave", want);
                if let (Ok(room), Some(r), Some(idx)) = (got, r, idx) {
                    self.m.remove_part(r, idx);
                    self.assert_returned(&step, &room, r);
                    let chat = self.m.rooms[r].chat;
                    self.m.publish(vec![chat]);
                }
            }
            Cmd::Mute {
                conn,
                target,
                muted,
            } => {
                let c = conn % nconns;
                let ConnM {
                    id,
                    user,
                    registered,
                    ..
                } = self.m.conns[c].clone();
                let r = self.m.resolve(target);
                let got = block_on(self.w.service.set_mute(&id, &self.room_id(r), muted));
                let idx = r.and_then(|r| self.m.rooms[r].parts.iter().position(|p| p.user == user));
                let want = match r {
                    _ if !registered => Err("NOT_IDENTIFIED"),
                    None => Err("VOICE_ROOM_NOT_FOUND"),
                    Some(r) if !self.m.rooms[r].active => Err("VOICE_ROOM_ENDED"),
                    Some(_) if idx.is_none() => Err("NOT_PARTICIPANT"),
                    Some(r) if self.m.rooms[r].parts[idx.unwrap()].conn != c => {
                        Err("NOT_PARTICIPANT")
                    }
                    Some(_) => Ok(()),
                };
                assert_eq!(code_of(&got), want, "{step}");
                self.tally("mute", want);
                if let (Ok(room), Some(r), Some(idx)) = (got, r, idx) {
                    let p = &mut self.m.rooms[r].parts[idx];
                    let changed = p.muted != muted;
                    p.muted = muted;
                    self.assert_returned(&step, &room, r);
                    if changed {
                        let chat = self.m.rooms[r].chat;
                        self.m.publish(vec![chat]);
                    }
                }
            }
            Cmd::End { conn, target } => {
                let c = conn % nconns;
                let ConnM {
                    id,
                    user,
                    registered,
                    ..
                } = self.m.conns[c].clone();
                let r = self.m.resolve(target);
                let got = block_on(self.w.service.end_voice(&id, &self.room_id(r)));
                let want = match r {
                    _ if !registered => Err("NOT_IDENTIFIED"),
                    None => Err("VOICE_ROOM_NOT_FOUND"),
                    Some(r) if !self.m.rooms[r].active => Err("VOICE_ROOM_ENDED"),
                    Some(r)
                        if self.m.admins[self.m.rooms[r].chat] != user
                            && !(self.m.rooms[r].master == user
                                && self.m.rooms[r]
                                    .parts
                                    .iter()
                                    .any(|p| p.user == user && p.conn == c)) =>
                    {
                        Err("NOT_ALLOWED")
                    }
                    Some(_) => Ok(()),
                };
                assert_eq!(code_of(&got), want, "{step}");
                self.tally("end", want);
                if let (Ok(room), Some(r)) = (got, r) {
                    let m = &mut self.m.rooms[r];
                    m.active = false;
                    m.parts.clear();
                    let chat = m.chat;
                    self.assert_returned(&step, &room, r);
                    self.m.publish(vec![chat]);
                }
            }
            Cmd::ActiveVoice { conn, chat } => {
                let c = conn % nconns;
                let ConnM {
                    id,
                    user,
                    registered,
                    ..
                } = self.m.conns[c].clone();
                let got = block_on(self.w.service.active_voice(&id, &chat_id(chat)));
                let want = if registered {
                    self.m.gate(chat, user)
                } else {
                    Err("NOT_IDENTIFIED")
                };
                assert_eq!(code_of(&got), want, "{step}");
                self.tally("active_voice", want);
                if let Ok(active) = got {
                    assert_eq!(
                        active.map(|r| r.id().clone()),
                        self.m.active_in(chat).map(|r| self.m.rooms[r].id.clone()),
                        "{step}"
                    );
                }
            }
            Cmd::Connect { user } => self.connect(user),
            Cmd::Disconnect { conn, notify_voice } => {
                let c = conn % nconns;
                let id = self.m.conns[c].id.clone();
                self.w.directory.disconnect(&id);
                self.w.notifier.mark_gone(id.clone());
                self.m.conns[c].registered = false;
                self.m.conns[c].gone = true;
                if notify_voice {
                    let report = block_on(self.w.service.on_disconnect(&id))
                        .unwrap_or_else(|e| panic!("{step}: {e}"));
                    let chats = self.m.remove_conn(c);
                    assert!(report.rooms_left.is_empty(), "{step}");
                    assert_eq!(report.rooms_reconnecting.len(), chats.len(), "{step}");
                    if !chats.is_empty() {
                        self.m.count("on_disconnect: participant reconnecting");
                    }
                    self.m.publish(chats);
                }
            }
            Cmd::Drop { conn } => {
                let c = conn % nconns;
                self.w.notifier.mark_gone(self.m.conns[c].id.clone());
                self.m.conns[c].gone = true;
            }
            Cmd::SetMembership { chat, user, state } => {
                if self.m.admins[chat] != user {
                    let revoked = self.m.rooms.iter().any(|r| {
                        r.active && r.chat == chat && r.parts.iter().any(|p| p.user == user)
                    }) && state != MemberState::Approved;
                    if revoked {
                        self.m.count("membership revoked from a participant");
                    }
                    self.w
                        .directory
                        .set_state(&chat_id(chat), user_id(user), state)
                        .unwrap();
                    self.m.members[chat][user] = state;
                }
            }
            Cmd::Sweep => {
                let report =
                    block_on(self.w.service.sweep()).unwrap_or_else(|e| panic!("{step}: {e}"));
                assert_eq!(report.failures, 0, "{step}");
                assert_eq!(report.channels_deleted, 0, "{step}: there were orphans");
                // Every participant on a connection the chat app forgot becomes reconnecting;
                // those reconnecting for the grace leave (a room left empty ends).
                let mut chats = Vec::new();
                let now = self.m.now;
                for r in 0..self.m.rooms.len() {
                    if !self.m.rooms[r].active {
                        continue;
                    }
                    let conns = &self.m.conns;
                    let mut marked = false;
                    for p in &mut self.m.rooms[r].parts {
                        if p.reconnecting_since.is_none() && !conns[p.conn].registered {
                            p.reconnecting_since = Some(now);
                            marked = true;
                        }
                    }
                    if marked {
                        chats.push(self.m.rooms[r].chat);
                        self.m.count("sweep: marked dead participants reconnecting");
                    }
                    if self.m.expire(r) {
                        chats.push(self.m.rooms[r].chat);
                        self.m.count("sweep: reconnect grace passed");
                    }
                }
                for id in &report.rooms_ended {
                    assert!(
                        self.m.rooms.iter().any(|r| &r.id == id && !r.active),
                        "{step}: reported {id} ended"
                    );
                }
                self.m.publish(chats);
                self.check(&step);
                // Nobody reconnecting is past the grace, and everyone else is on a live
                // connection.
                for room in self.m.rooms.iter().filter(|r| r.active) {
                    for p in &room.parts {
                        match p.reconnecting_since {
                            Some(t) => assert!(
                                Duration::from_millis(self.m.now - t) < RECONNECT_GRACE,
                                "{step}: u{} reconnecting past the grace",
                                p.user
                            ),
                            None => assert!(
                                self.m.conns[p.conn].registered,
                                "{step}: u{} on a dead connection after the sweep",
                                p.user
                            ),
                        }
                    }
                }
            }
            Cmd::Advance { secs } => {
                self.w.clock.advance(Duration::from_secs(secs));
                self.m.now += secs * 1000;
            }
            Cmd::Restart => {
                for c in 0..nconns {
                    let id = self.m.conns[c].id.clone();
                    self.w.directory.disconnect(&id);
                    self.w.notifier.mark_gone(id);
                    self.m.conns[c].registered = false;
                    self.m.conns[c].gone = true;
                }
                let kept =
                    block_on(self.w.service.restarted()).unwrap_or_else(|e| panic!("{step}: {e}"));
                let now = self.m.now;
                let mut want = Vec::new();
                for room in self.m.rooms.iter_mut().filter(|r| r.active) {
                    for p in &mut room.parts {
                        p.reconnecting_since = Some(now);
                    }
                    want.push(room.id.clone());
                }
                let mut kept_sorted = kept.clone();
                kept_sorted.sort();
                want.sort();
                assert_eq!(kept_sorted, want, "{step}: rooms kept");
                if !want.is_empty() {
                    self.m.count("restart: rooms kept");
                }
                for u in 0..USERS {
                    self.connect(u);
                }
            }
        }
        self.check(&step);
    }

    /// A successful start reaches every live connection of the chat room's approved members.
    fn check_start_announced(&self, step: &str, room: &VoiceRoom, chat: usize) {
        let started = VoiceEvent::VoiceStarted {
            voice_room_id: room.id().clone(),
            chat_room_id: chat_id(chat),
            master: room.master().clone(),
        };
        for c in &self.m.conns {
            if c.registered && !c.gone && self.m.approved(chat, c.user) {
                let mut inbox = self.w.notifier.take(&c.id);
                assert!(
                    inbox.contains(&started),
                    "{step}: {} was not told of the start",
                    c.id
                );
                // Put them back for the targeting check.
                inbox.retain(|e| e != &started);
                self.check_targets(step, &c.id, c.user, &inbox);
                assert!(self.m.approved(chat, c.user));
            }
        }
    }

    /// Events only reach open connections of approved members of the event's chat room.
    fn check_targets(&self, step: &str, to: &ConnectionId, user: usize, events: &[VoiceEvent]) {
        let c = self.m.conns.iter().find(|c| &c.id == to).unwrap();
        for e in events {
            let chat: usize = e.chat_room_id().as_str()["chat-".len()..].parse().unwrap();
            assert!(
                c.registered,
                "{step}: event sent to a closed connection {to}"
            );
            assert!(
                self.m.approved(chat, user),
                "{step}: event {e:?} sent to {to}, not an approved member"
            );
        }
    }

    fn check(&mut self, step: &str) {
        // Events delivered this step went to the right people.
        for c in self.m.conns.clone() {
            let inbox = self.w.notifier.take(&c.id);
            self.check_targets(step, &c.id, c.user, &inbox);
        }

        let stored: BTreeMap<VoiceRoomId, VoiceRoom> = self
            .w
            .store
            .all()
            .into_iter()
            .map(|r| (r.id().clone(), r))
            .collect();
        // Exactly the model's rooms.
        let ids: BTreeSet<_> = self.m.rooms.iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            stored.keys().cloned().collect::<BTreeSet<_>>(),
            ids,
            "{step}: room ids"
        );
        for (i, want) in self.m.rooms.iter().enumerate() {
            let got = &stored[&want.id];
            assert_eq!(got.chat_room(), &chat_id(want.chat), "{step}");
            assert_eq!(got.is_active(), want.active, "{step}: status of room {i}");
            assert_eq!(
                self.parts_of(got),
                want.parts,
                "{step}: participants of room {i}"
            );
            if want.active {
                assert_eq!(
                    got.master(),
                    &user_id(want.master),
                    "{step}: master of room {i}"
                );
            }
        }

        // The stored state keeps every invariant.
        let mut active_per_chat: HashMap<ChatRoomId, usize> = HashMap::new();
        let mut held: BTreeSet<ChannelArn> = BTreeSet::new();
        for room in stored.values() {
            VoiceRoom::from_parts(room.parts().clone()).unwrap_or_else(|e| panic!("{step}: {e}"));
            assert!(
                room.participants().len() <= self.m.capacity,
                "{step}: over capacity"
            );
            if room.is_active() {
                *active_per_chat.entry(room.chat_room().clone()).or_default() += 1;
                assert!(
                    room.participant(room.master()).is_some(),
                    "{step}: master not in room"
                );
            } else {
                assert!(
                    room.participants().is_empty(),
                    "{step}: ended room not empty"
                );
            }
            let mut conns = HashSet::new();
            for p in room.participants() {
                assert!(
                    held.insert(p.channel.arn.clone()),
                    "{step}: channel held twice"
                );
                assert!(
                    conns.insert(p.connection.clone()),
                    "{step}: a connection held by two participants"
                );
            }
        }
        for chat in 0..CHATS {
            let n = active_per_chat.get(&chat_id(chat)).copied().unwrap_or(0);
            assert!(n <= 1, "{step}: {n} active rooms in chat {chat}");
            let indexed = block_on(self.w.store.active_in_chat_room(&chat_id(chat))).unwrap();
            assert_eq!(
                indexed.map(|r| r.id().clone()),
                self.m.active_in(chat).map(|r| self.m.rooms[r].id.clone()),
                "{step}: active index of chat {chat}"
            );
        }

        // Channels: exactly the participants' ones.
        let existing: BTreeSet<ChannelArn> = self
            .w
            .channels
            .list_now()
            .into_iter()
            .map(|l| l.channel.arn)
            .collect();
        assert_eq!(
            existing, held,
            "{step}: channels vs participants (orphans or missing)"
        );

        // Admission: a participant entered (start, join, reconnect) as an approved member.
        let mut present = HashSet::new();
        for room in stored.values() {
            let chat: usize = room.chat_room().as_str()["chat-".len()..].parse().unwrap();
            for p in room.participants() {
                let key = (room.id().clone(), p.user.clone(), p.connection.clone());
                if !self.w.admitted.contains(&key) {
                    let u: usize = p.user.as_str()[1..].parse().unwrap();
                    assert!(
                        self.m.approved(chat, u),
                        "{step}: {} entered {} without being an approved member",
                        p.user,
                        room.id()
                    );
                }
                present.insert(key);
            }
        }
        self.w.admitted = present;
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Outcomes that must each have happened at least once over the run, or the generator no
/// longer reaches them and the test has gone soft.
const MUST_SEE: &[&str] = &[
    "start: ok",
    "start: ALREADY_ACTIVE",
    "start: NOT_IDENTIFIED",
    "start: CHAT_ROOM_NOT_FOUND",
    "start: NOT_MEMBER",
    "start: NOT_APPROVED",
    "join: ok",
    "join: refresh",
    "join: reconnect",
    "join: ROOM_FULL",
    "join: VOICE_ROOM_ENDED",
    "join: VOICE_ROOM_NOT_FOUND",
    "join: NOT_APPROVED",
    "join: NOT_MEMBER",
    "join: NOT_IDENTIFIED",
    "leave: ok",
    "leave: NOT_PARTICIPANT",
    "leave: VOICE_ROOM_ENDED",
    "mute: ok",
    "mute: NOT_PARTICIPANT",
    "end: ok",
    "end: NOT_ALLOWED",
    "end: VOICE_ROOM_ENDED",
    "active_voice: ok",
    "active_voice: NOT_MEMBER",
    "on_disconnect: participant reconnecting",
    "sweep: marked dead participants reconnecting",
    "sweep: reconnect grace passed",
    "join: resume after a drop",
    "leave: refused from a replaced connection",
    "restart: rooms kept",
    "model: master hand-over",
    "model: last one out ends the room",
    "model: gone connection marked reconnecting while publishing",
    "membership revoked from a participant",
];

#[test]
fn voice_rooms_follow_the_model() {
    let config = config();
    let cases = config.cases;
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let stats = std::cell::RefCell::new(BTreeMap::<String, u64>::new());
    let steps = std::cell::Cell::new(0u64);
    let strategy = (setup(), proptest::collection::vec(cmd(), 1..100));
    let result = runner.run(&strategy, |(setup, cmds)| {
        let mut h = Harness::new(&setup);
        h.check("initial");
        for (n, cmd) in cmds.iter().enumerate() {
            h.step(n, cmd);
        }
        steps.set(steps.get() + cmds.len() as u64);
        let mut all = stats.borrow_mut();
        for (k, v) in h.m.stats {
            *all.entry(k).or_default() += v;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let stats = stats.into_inner();
    println!(
        "model test: {cases} cases, {} steps, invariants checked after each; outcomes: {stats:#?}",
        steps.get()
    );
    for what in MUST_SEE {
        assert!(
            stats.get(*what).copied().unwrap_or(0) > 0,
            "over {cases} cases, never saw \"{what}\": the generator no longer reaches it"
        );
    }
}
