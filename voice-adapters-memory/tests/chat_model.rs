//! Model-based property test of the chat domain: random command sequences on the real
//! `ChatService` over the in-memory adapters, each step checked against a small model.
//!
//! The world: four connections (a user may hold several, and a connection may be reopened),
//! display and room names from a small set (so names collide case-insensitively, and some are
//! refused as empty or invisible-laden), resume tokens kept from every `hello` (and a forged
//! one), a manual clock, and tight quotas (2 rooms per user, 1 waiting request per room, 2 per
//! user, 2 bans per room, resume tokens good for 10 minutes, 16 KiB of history per reply) so
//! that every quota is reached. Commands also name a user id nobody signed in with, which may
//! be removed (a no-op) but not banned.
//!
//! After every step:
//! - the answer (success, or the error's wire code) is the one the model predicts, in the
//!   rule's order (identification, then the room, then the admin or approved-member gate,
//!   then validation, then quotas);
//! - the store agrees with the model: who is on each connection, each room's members and their
//!   states, bans (a banned user is never pending or approved), each room's message history;
//! - no quota is ever exceeded (rooms per admin, waiting requests per room and per user, in
//!   the store; bans per room, in the model whose bans every `requestJoin` and `unbanMember`
//!   answer checks against the store);
//! - events go exactly where the rules say: a message to the room's approved members' open
//!   connections and nobody else, a join request to the admin's connections only, a new room
//!   to every identified connection, a removal to the room and the removed user;
//! - `listRooms`, `listMembers` and `getMessages` page (2 rooms and 2 members a page here):
//!   following `nextCursor` visits every room and member exactly once, pages are never longer
//!   than the limit, and the history pages back to exactly the model's history, every page in
//!   the byte budget;
//! - a resume token resumes its user only while genuine, unexpired and not revoked by a later
//!   `signOutEverywhere`; otherwise `hello` makes a new user.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    ChatAdapters, ChatError, ChatEvent, ChatEvents, ChatLimits, ChatMessage, ChatService,
    ChatStore, ResumeClaims, SessionTokens, MESSAGE_HISTORY,
};
use futures::executor::block_on;
use proptest::prelude::*;
use voice_adapters_memory::{ManualClock, MemoryChat, MemoryStore, SequentialIds};
use voice_domain::ports::{ChatDirectory as _, MemberState};
use voice_domain::{ChatRoomId, ConnectionId, Timestamp, UserId};

const CONNS: usize = 4;
const LIMITS: ChatLimits = ChatLimits {
    rooms_per_user: 2,
    pending_per_room: 1,
    pending_per_user: 2,
    bans_per_room: 2,
    resume_ttl: Duration::from_secs(600),
    history_bytes: HISTORY_BYTES,
    rooms_page: 2,
    members_page: 2,
};
/// The most pages a listing may take in a test (a loop guard: the world is small).
const MAX_PAGES: usize = 1_000;
/// One message of 2 000 escaped characters (12 KB as JSON) and a few short ones.
const HISTORY_BYTES: usize = 16_384;
/// Names offered to `hello` and `createRoom`: two that collide case-insensitively, one with a
/// zero-width space (refused), one blank (refused).
const NAMES: [&str; 5] = ["Kim", "kim", "Sam", "bad\u{200B}name", "   "];

/// One push: its recipients and the event.
type Pushed = (Vec<ConnectionId>, ChatEvent);

/// Every pushed event and who it went to.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Pushed>>>);

#[async_trait]
impl ChatEvents for Recorder {
    async fn push(&self, to: &[ConnectionId], event: &ChatEvent) {
        self.0.lock().unwrap().push((to.to_vec(), event.clone()));
    }
}

impl Recorder {
    fn take(&self) -> Vec<Pushed> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Readable tokens: genuineness is the `tok|` prefix (a real key's MAC is tested in
/// voice-adapters-std); expiry and revocation are the rule's, which is what is modelled.
struct PlainTokens;

impl SessionTokens for PlainTokens {
    fn issue(&self, c: &ResumeClaims) -> String {
        format!("tok|{}|{}|{}", c.user, c.issued_at_ms, c.generation)
    }
    fn verify(&self, token: &str) -> Option<ResumeClaims> {
        let mut parts = token.strip_prefix("tok|")?.split('|');
        let user = UserId::parse(parts.next()?).ok()?;
        let issued_at_ms = parts.next()?.parse().ok()?;
        let generation = parts.next()?.parse().ok()?;
        Some(ResumeClaims {
            user,
            issued_at_ms,
            generation,
        })
    }
}

#[derive(Debug, Clone)]
enum Cmd {
    /// `hello` on a connection with a name and a token: none, a kept one (by index), or forged.
    Hello {
        conn: usize,
        name: usize,
        token: Tok,
    },
    Disconnect {
        conn: usize,
    },
    CreateRoom {
        conn: usize,
        name: usize,
    },
    RequestJoin {
        conn: usize,
        room: usize,
    },
    Decide {
        conn: usize,
        room: usize,
        user: usize,
        approve: bool,
    },
    Remove {
        conn: usize,
        room: usize,
        user: usize,
        ban: bool,
    },
    Unban {
        conn: usize,
        room: usize,
        user: usize,
    },
    /// A message of `len` characters; `wide` and long ones are U+0001, which JSON escapes to 6
    /// bytes (so a few reach the history budget).
    Send {
        conn: usize,
        room: usize,
        len: usize,
        wide: bool,
    },
    Messages {
        conn: usize,
        room: usize,
    },
    ListMembers {
        conn: usize,
        room: usize,
    },
    ListRooms {
        conn: usize,
    },
    SignOutEverywhere {
        conn: usize,
    },
    Advance {
        secs: u64,
    },
}

#[derive(Debug, Clone)]
enum Tok {
    None,
    Kept(usize),
    Forged,
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let conn = 0..CONNS;
    // Room and user indexes beyond what exists pick "no such room" / an unknown user.
    let room = 0usize..3;
    let user = 0usize..6;
    prop_oneof![
        4 => (conn.clone(), 0..NAMES.len(), prop_oneof![
            Just(Tok::None), (0usize..8).prop_map(Tok::Kept), Just(Tok::Forged)
        ]).prop_map(|(conn, name, token)| Cmd::Hello { conn, name, token }),
        2 => conn.clone().prop_map(|conn| Cmd::Disconnect { conn }),
        3 => (conn.clone(), 0..NAMES.len()).prop_map(|(conn, name)| Cmd::CreateRoom { conn, name }),
        4 => (conn.clone(), room.clone()).prop_map(|(conn, room)| Cmd::RequestJoin { conn, room }),
        4 => (conn.clone(), room.clone(), user.clone(), any::<bool>())
            .prop_map(|(conn, room, user, approve)| Cmd::Decide { conn, room, user, approve }),
        // Mostly the living room's admin in that room, so that its ban quota is reached.
        4 => (prop_oneof![3 => Just(0), 1 => conn.clone()], prop_oneof![3 => Just(0), 1 => room.clone()],
              user.clone(), any::<bool>())
            .prop_map(|(conn, room, user, ban)| Cmd::Remove { conn, room, user, ban }),
        1 => (conn.clone(), room.clone(), user.clone())
            .prop_map(|(conn, room, user)| Cmd::Unban { conn, room, user }),
        6 => (conn.clone(), room.clone(), prop_oneof![1 => Just(0usize), 4 => 1usize..20, 3 => 1900usize..=2000, 1 => Just(2001)], any::<bool>())
            .prop_map(|(conn, room, len, wide)| Cmd::Send { conn, room, len, wide }),
        3 => (conn.clone(), room.clone()).prop_map(|(conn, room)| Cmd::Messages { conn, room }),
        1 => (conn.clone(), room.clone()).prop_map(|(conn, room)| Cmd::ListMembers { conn, room }),
        1 => conn.clone().prop_map(|conn| Cmd::ListRooms { conn }),
        1 => conn.prop_map(|conn| Cmd::SignOutEverywhere { conn }),
        1 => prop_oneof![1u64..60, 300u64..700].prop_map(|secs| Cmd::Advance { secs }),
    ]
}

#[derive(Debug, Clone)]
struct RoomM {
    id: ChatRoomId,
    name: String,
    admin: UserId,
    members: BTreeMap<UserId, MemberState>,
    bans: BTreeSet<UserId>,
    messages: Vec<ChatMessage>,
}

#[derive(Default)]
struct Model {
    conns: BTreeMap<usize, UserId>,
    /// Users in order of creation (commands pick them by index).
    users: Vec<UserId>,
    generation: BTreeMap<UserId, u64>,
    rooms: Vec<RoomM>,
    /// Every token issued, with its user, issue time and generation.
    tokens: Vec<(String, UserId, u64, u64)>,
    now_ms: u64,
}

impl Model {
    fn conns_of(&self, user: &UserId) -> BTreeSet<ConnectionId> {
        self.conns
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(c, _)| conn_id(*c))
            .collect()
    }

    fn approved_conns(&self, room: &RoomM) -> BTreeSet<ConnectionId> {
        room.members
            .iter()
            .filter(|(_, s)| **s == MemberState::Approved)
            .flat_map(|(u, _)| self.conns_of(u))
            .collect()
    }

    fn pending_of(&self, user: &UserId) -> usize {
        self.rooms
            .iter()
            .filter(|r| r.members.get(user) == Some(&MemberState::Pending))
            .count()
    }

    /// The approved-member gate's refusal, if any.
    fn gate(&self, room: Option<&RoomM>, user: &UserId) -> Result<(), &'static str> {
        let room = room.ok_or("CHAT_ROOM_NOT_FOUND")?;
        match room.members.get(user) {
            Some(MemberState::Approved) => Ok(()),
            Some(MemberState::Pending) => Err("NOT_APPROVED"),
            _ if &room.admin == user => Ok(()),
            _ => Err("NOT_MEMBER"),
        }
    }
}

fn conn_id(c: usize) -> ConnectionId {
    ConnectionId::parse(format!("conn-{c}")).unwrap()
}

struct World {
    service: ChatService,
    store: MemoryChat,
    clock: ManualClock,
    events: Recorder,
    model: Model,
}

fn world() -> World {
    let store = MemoryChat::new();
    let clock = ManualClock::at(Timestamp::from_millis(1_000_000));
    let events = Recorder::default();
    let service = ChatService::new(ChatAdapters {
        store: Arc::new(store.clone()),
        events: Arc::new(events.clone()),
        tokens: Arc::new(PlainTokens),
        ids: Arc::new(SequentialIds::default()),
        voice: Arc::new(MemoryStore::new()),
        clock: Arc::new(clock.clone()),
    })
    .with_limits(LIMITS);
    World {
        service,
        store,
        clock,
        events,
        model: Model {
            now_ms: 1_000_000,
            ..Model::default()
        },
    }
}

fn code<T>(r: &Result<T, ChatError>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

fn name_ok(raw: &str) -> Result<String, &'static str> {
    let t = raw.trim();
    if t.is_empty() || t.contains('\u{200B}') {
        Err("BAD_REQUEST")
    } else {
        Ok(t.to_owned())
    }
}

impl World {
    /// The connection's user, or the code identification fails with.
    fn who(&self, conn: usize) -> Result<UserId, &'static str> {
        let got = block_on(self.service.identify(&conn_id(conn)));
        let want = self.model.conns.get(&conn).cloned();
        assert_eq!(got.as_ref().ok(), want.as_ref(), "identify conn-{conn}");
        want.ok_or("NOT_IDENTIFIED")
    }

    fn room(&self, i: usize) -> (ChatRoomId, Option<usize>) {
        match self.model.rooms.get(i) {
            Some(r) => (r.id.clone(), Some(i)),
            None => (ChatRoomId::parse("room-none").unwrap(), None),
        }
    }

    fn user(&self, i: usize) -> UserId {
        self.model
            .users
            .get(i)
            .cloned()
            .unwrap_or_else(|| UserId::parse("user-none").unwrap())
    }

    fn step(&mut self, cmd: &Cmd) {
        let events_before = self.events.take();
        assert!(events_before.is_empty());
        match cmd.clone() {
            Cmd::Hello { conn, name, token } => self.hello(conn, name, &token),
            Cmd::Disconnect { conn } => {
                block_on(self.service.disconnect(&conn_id(conn)));
                self.model.conns.remove(&conn);
            }
            Cmd::CreateRoom { conn, name } => {
                let Ok(user) = self.who(conn) else { return };
                let got = block_on(self.service.create_room(&user, NAMES[name]));
                let want = name_ok(NAMES[name]).and_then(|n| {
                    let held = self.model.rooms.iter().filter(|r| r.admin == user).count();
                    if held >= LIMITS.rooms_per_user {
                        Err("QUOTA_EXCEEDED")
                    } else if self
                        .model
                        .rooms
                        .iter()
                        .any(|r| r.name.to_lowercase() == n.to_lowercase())
                    {
                        Err("ROOM_EXISTS")
                    } else {
                        Ok(n)
                    }
                });
                assert_eq!(code(&got), want.as_ref().err().copied().unwrap_or("OK"));
                if let (Ok(record), Ok(n)) = (got, want) {
                    assert_eq!(record.name, n);
                    let everyone: BTreeSet<_> =
                        self.model.conns.keys().map(|c| conn_id(*c)).collect();
                    self.expect_event(|e| matches!(e, ChatEvent::RoomCreated { .. }), &everyone);
                    self.model.rooms.push(RoomM {
                        id: record.id,
                        name: n,
                        admin: user.clone(),
                        members: BTreeMap::from([(user, MemberState::Approved)]),
                        bans: BTreeSet::new(),
                        messages: Vec::new(),
                    });
                }
            }
            Cmd::RequestJoin { conn, room } => {
                let Ok(user) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let got = block_on(self.service.request_join(&user, &id));
                let want: Result<MemberState, &str> = match idx.map(|i| &self.model.rooms[i]) {
                    None => Err("CHAT_ROOM_NOT_FOUND"),
                    Some(r) => match r.members.get(&user) {
                        Some(s) => Ok(*s),
                        None => {
                            let waiting = r
                                .members
                                .values()
                                .filter(|s| **s == MemberState::Pending)
                                .count();
                            // A ban is told before any quota: a banned user waiting
                            // for room in a quota would wait for nothing.
                            if r.bans.contains(&user) {
                                Err("BANNED")
                            } else if waiting >= LIMITS.pending_per_room
                                || self.model.pending_of(&user) >= LIMITS.pending_per_user
                            {
                                Err("QUOTA_EXCEEDED")
                            } else {
                                Ok(MemberState::Pending)
                            }
                        }
                    },
                };
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(after), Some(i)) = (got, idx) {
                    assert_eq!(Ok(after), want);
                    let r = &mut self.model.rooms[i];
                    let fresh = !r.members.contains_key(&user);
                    r.members.entry(user).or_insert(MemberState::Pending);
                    if fresh {
                        let admin = self.model.conns_of(&self.model.rooms[i].admin.clone());
                        self.expect_event(|e| matches!(e, ChatEvent::JoinRequested { .. }), &admin);
                    }
                }
            }
            Cmd::Decide {
                conn,
                room,
                user,
                approve,
            } => {
                let Ok(actor) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let target = self.user(user);
                let got = block_on(self.service.decide_join(&actor, &id, &target, approve));
                let want = match idx.map(|i| &self.model.rooms[i]) {
                    None => Err("CHAT_ROOM_NOT_FOUND"),
                    Some(r) if r.admin != actor => Err("NOT_ADMIN"),
                    Some(r) if r.members.get(&target) != Some(&MemberState::Pending) => {
                        Err("NO_PENDING_REQUEST")
                    }
                    Some(_) => Ok(()),
                };
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(_), Some(i)) = (got, idx) {
                    if approve {
                        self.model.rooms[i]
                            .members
                            .insert(target.clone(), MemberState::Approved);
                        let members = self.model.approved_conns(&self.model.rooms[i]);
                        self.expect_event(
                            |e| matches!(e, ChatEvent::MemberJoined { .. }),
                            &members,
                        );
                    } else {
                        self.model.rooms[i].members.remove(&target);
                        let theirs = self.model.conns_of(&target);
                        self.expect_event(|e| matches!(e, ChatEvent::JoinDenied { .. }), &theirs);
                    }
                }
            }
            Cmd::Remove {
                conn,
                room,
                user,
                ban,
            } => {
                let Ok(actor) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let target = self.user(user);
                let got = block_on(self.service.remove_member(&actor, &id, &target, ban));
                let want = match idx.map(|i| &self.model.rooms[i]) {
                    None => Err("CHAT_ROOM_NOT_FOUND"),
                    Some(r) if r.admin != actor => Err("NOT_ADMIN"),
                    Some(_) if target == actor => Err("BAD_REQUEST"),
                    Some(_) if ban && !self.model.users.contains(&target) => Err("BAD_REQUEST"),
                    Some(r)
                        if ban
                            && !r.bans.contains(&target)
                            && r.bans.len() >= LIMITS.bans_per_room =>
                    {
                        Err("QUOTA_EXCEEDED")
                    }
                    Some(_) => Ok(()),
                };
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(removal), Some(i)) = (got, idx) {
                    let before = self.model.rooms[i].members.remove(&target);
                    assert_eq!(removal.before, before.unwrap_or(MemberState::None));
                    if ban {
                        self.model.rooms[i].bans.insert(target.clone());
                    }
                    if before.is_some() || ban {
                        let mut to = self.model.approved_conns(&self.model.rooms[i]);
                        to.extend(self.model.conns_of(&target));
                        self.expect_event(|e| matches!(e, ChatEvent::MemberRemoved { .. }), &to);
                    }
                }
            }
            Cmd::Unban { conn, room, user } => {
                let Ok(actor) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let target = self.user(user);
                let got = block_on(self.service.unban_member(&actor, &id, &target));
                let want = match idx.map(|i| &self.model.rooms[i]) {
                    None => Err("CHAT_ROOM_NOT_FOUND"),
                    Some(r) if r.admin != actor => Err("NOT_ADMIN"),
                    Some(r) => Ok(r.bans.contains(&target)),
                };
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(was), Some(i)) = (got, idx) {
                    assert_eq!(Ok(was), want);
                    self.model.rooms[i].bans.remove(&target);
                }
            }
            Cmd::Send {
                conn,
                room,
                len,
                wide,
            } => {
                let Ok(user) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let text = if wide || len >= 1900 { "\u{1}" } else { "m" }.repeat(len);
                let got = block_on(self.service.send_message(&user, &id, &text));
                let room_m = idx.map(|i| &self.model.rooms[i]);
                let text_ok = match len {
                    0 => Err("BAD_REQUEST"),
                    n if n > 2000 => Err("TOO_LARGE"),
                    _ => Ok(()),
                };
                let want = self.model.gate(room_m, &user).and(text_ok);
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(m), Some(i)) = (got, idx) {
                    assert_eq!(
                        (m.user_id.as_str(), m.text.as_str()),
                        (user.as_str(), text.as_str())
                    );
                    let to = self.model.approved_conns(&self.model.rooms[i]);
                    self.expect_event(|e| matches!(e, ChatEvent::Message(_)), &to);
                    let msgs = &mut self.model.rooms[i].messages;
                    msgs.push(m);
                    if msgs.len() > MESSAGE_HISTORY {
                        msgs.remove(0);
                    }
                }
            }
            Cmd::Messages { conn, room } => {
                let Ok(user) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let got = block_on(self.service.messages(&user, &id, None));
                let want = self.model.gate(idx.map(|i| &self.model.rooms[i]), &user);
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(page), Some(i)) = (got, idx) {
                    // The newest messages, oldest first, as many as fit in the byte budget.
                    let all = &self.model.rooms[i].messages;
                    let got = page.messages;
                    assert!(got.len() <= all.len());
                    assert_eq!(got, all[all.len() - got.len()..], "the newest, in order");
                    let size = |ms: &[ChatMessage]| -> usize {
                        ms.iter()
                            .map(|m| serde_json::to_string(m).unwrap().len() + 1)
                            .sum()
                    };
                    assert!(size(&got) <= HISTORY_BYTES, "within the budget");
                    assert!(
                        !got.is_empty() || all.is_empty(),
                        "the newest message always fits"
                    );
                    if got.len() < all.len() {
                        let one_more = &all[all.len() - got.len() - 1..];
                        assert!(size(one_more) > HISTORY_BYTES, "no room for one more");
                    }
                    // Paging back with the cursors gives exactly the whole history.
                    let mut history = got;
                    let mut cursor = page.next_cursor;
                    for _ in 0..MAX_PAGES {
                        let Some(c) = cursor.take() else { break };
                        let older = block_on(self.service.messages(&user, &id, Some(&c))).unwrap();
                        assert!(size(&older.messages) <= HISTORY_BYTES, "within the budget");
                        assert!(!older.messages.is_empty(), "a cursor never leads nowhere");
                        history.splice(0..0, older.messages);
                        cursor = older.next_cursor;
                    }
                    assert_eq!(&history, all, "paging back gives the whole history");
                }
            }
            Cmd::ListMembers { conn, room } => {
                let Ok(user) = self.who(conn) else { return };
                let (id, idx) = self.room(room);
                let got = block_on(self.service.list_members(&user, &id, None, None));
                let want = self.model.gate(idx.map(|i| &self.model.rooms[i]), &user);
                assert_eq!(code(&got), want.err().unwrap_or("OK"), "{cmd:?}");
                if let (Ok(first), Some(i)) = (got, idx) {
                    let mut views = first.members;
                    let mut cursor = first.next_cursor;
                    for _ in 0..MAX_PAGES {
                        let Some(c) = cursor.take() else { break };
                        let page = block_on(self.service.list_members(&user, &id, Some(&c), None))
                            .unwrap();
                        assert!(page.members.len() <= LIMITS.members_page);
                        views.extend(page.members);
                        cursor = page.next_cursor;
                    }
                    let r = &self.model.rooms[i];
                    let got: BTreeMap<_, _> = views
                        .iter()
                        .map(|v| (v.user_id.clone(), (v.state, v.is_admin, v.online)))
                        .collect();
                    assert_eq!(got.len(), views.len(), "each member once");
                    let want: BTreeMap<_, _> = r
                        .members
                        .iter()
                        .map(|(u, s)| {
                            (
                                u.to_string(),
                                (*s, *u == r.admin, !self.model.conns_of(u).is_empty()),
                            )
                        })
                        .collect();
                    assert_eq!(got, want);
                }
            }
            Cmd::ListRooms { conn } => {
                let Ok(user) = self.who(conn) else { return };
                let first = block_on(self.service.list_rooms(&user, None, None)).unwrap();
                assert!(first.rooms.len() <= LIMITS.rooms_page);
                let mut views = first.rooms;
                let mut cursor = first.next_cursor;
                for _ in 0..MAX_PAGES {
                    let Some(c) = cursor.take() else { break };
                    let page = block_on(self.service.list_rooms(&user, Some(&c), None)).unwrap();
                    assert!(page.rooms.len() <= LIMITS.rooms_page);
                    views.extend(page.rooms);
                    cursor = page.next_cursor;
                }
                let got: BTreeMap<_, _> = views
                    .iter()
                    .map(|v| {
                        (
                            v.room_id.clone(),
                            (v.name.clone(), v.my_state, v.member_count),
                        )
                    })
                    .collect();
                assert_eq!(got.len(), views.len(), "each room once");
                let want: BTreeMap<_, _> = self
                    .model
                    .rooms
                    .iter()
                    .map(|r| {
                        let approved = r
                            .members
                            .values()
                            .filter(|s| **s == MemberState::Approved)
                            .count();
                        let mine = r.members.get(&user).copied().unwrap_or(MemberState::None);
                        (r.id.to_string(), (r.name.clone(), mine, approved))
                    })
                    .collect();
                assert_eq!(got, want);
            }
            Cmd::SignOutEverywhere { conn } => {
                let Ok(user) = self.who(conn) else { return };
                block_on(self.service.sign_out_everywhere(&user)).unwrap();
                *self.model.generation.entry(user).or_default() += 1;
            }
            Cmd::Advance { secs } => {
                self.clock.advance(Duration::from_secs(secs));
                self.model.now_ms += secs * 1000;
            }
        }
        self.check_store();
    }

    fn hello(&mut self, conn: usize, name: usize, token: &Tok) {
        let token_text = match token {
            Tok::None => None,
            Tok::Kept(i) => self.model.tokens.get(*i).map(|t| t.0.clone()),
            Tok::Forged => Some("forged|user-1|0|0".to_owned()),
        };
        let got = block_on(
            self.service
                .hello(&conn_id(conn), NAMES[name], token_text.as_deref()),
        );
        let want_name = name_ok(NAMES[name]);
        assert_eq!(
            code(&got),
            want_name.as_ref().err().copied().unwrap_or("OK")
        );
        let (Ok(data), Ok(n)) = (got, want_name) else {
            return;
        };
        assert_eq!(data.name, n);
        let user = UserId::parse(data.user_id.clone()).unwrap();
        let resumed_user = token_text.as_ref().and_then(|t| {
            let (_, u, at, generation) = self.model.tokens.iter().find(|k| &k.0 == t)?;
            let current = self.model.generation.get(u).copied().unwrap_or(0);
            let fresh = self.model.now_ms - at <= LIMITS.resume_ttl.as_millis() as u64;
            (fresh && *generation >= current).then(|| u.clone())
        });
        let want_user = self
            .model
            .conns
            .get(&conn)
            .cloned()
            .or(resumed_user.clone());
        match want_user {
            Some(u) => assert_eq!(user, u, "hello on conn-{conn} keeps or resumes the user"),
            None => {
                assert!(
                    !self.model.users.contains(&user),
                    "a new user gets a new id"
                );
                self.model.users.push(user.clone());
            }
        }
        assert_eq!(
            data.resumed,
            !self.model.conns.contains_key(&conn) && resumed_user.is_some()
        );
        let generation = self.model.generation.get(&user).copied().unwrap_or(0);
        self.model.tokens.push((
            data.resume_token,
            user.clone(),
            self.model.now_ms,
            generation,
        ));
        self.model.conns.insert(conn, user);
    }

    /// Exactly one event matching `pred` was pushed, to exactly `to`.
    fn expect_event(&self, pred: impl Fn(&ChatEvent) -> bool, to: &BTreeSet<ConnectionId>) {
        let pushed = self.events.take();
        let hits: Vec<_> = pushed.iter().filter(|(_, e)| pred(e)).collect();
        assert_eq!(hits.len(), 1, "one such event, pushed: {pushed:?}");
        let got: BTreeSet<_> = hits[0].0.iter().cloned().collect();
        assert_eq!(&got, to, "recipients of {:?}", hits[0].1);
    }

    fn check_store(&self) {
        self.events.take();
        for (c, u) in &self.model.conns {
            assert_eq!(
                block_on(self.store.user_of(&conn_id(*c))).unwrap().as_ref(),
                Some(u)
            );
        }
        for r in &self.model.rooms {
            let stored: BTreeMap<_, _> = block_on(self.store.members(&r.id))
                .unwrap()
                .into_iter()
                .filter(|(_, s)| *s != MemberState::None)
                .collect();
            assert_eq!(stored, r.members, "members of {}", r.id);
            for banned in &r.bans {
                assert!(
                    !stored.contains_key(banned),
                    "a banned user holds a membership"
                );
            }
            let waiting = stored
                .values()
                .filter(|s| **s == MemberState::Pending)
                .count();
            assert!(waiting <= LIMITS.pending_per_room);
            assert!(r.bans.len() <= LIMITS.bans_per_room);
        }
        for u in &self.model.users {
            let usage = block_on(self.store.usage_of(u)).unwrap();
            assert!(usage.rooms_admin <= LIMITS.rooms_per_user);
            assert!(usage.pending_requests <= LIMITS.pending_per_user);
        }
    }
}

/// Every history starts from a small chat: three users (one connection each), a room of the
/// first with the second approved, so that random commands mostly act in a living room; and a
/// fourth user, gone offline, banned from that room, so that one more ban reaches the room's
/// ban quota (2) and the next new one is refused.
fn setup() -> Vec<Cmd> {
    vec![
        Cmd::Hello {
            conn: 0,
            name: 0,
            token: Tok::None,
        },
        Cmd::Hello {
            conn: 1,
            name: 2,
            token: Tok::None,
        },
        Cmd::Hello {
            conn: 2,
            name: 1,
            token: Tok::None,
        },
        Cmd::CreateRoom { conn: 0, name: 2 },
        Cmd::RequestJoin { conn: 1, room: 0 },
        Cmd::Decide {
            conn: 0,
            room: 0,
            user: 1,
            approve: true,
        },
        Cmd::Hello {
            conn: 3,
            name: 2,
            token: Tok::None,
        },
        Cmd::Disconnect { conn: 3 },
        Cmd::Remove {
            conn: 0,
            room: 0,
            user: 3,
            ban: true,
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn chat_rules_match_the_model(cmds in proptest::collection::vec(cmd(), 1..80)) {
        let mut w = world();
        for c in setup().iter().chain(&cmds) {
            w.step(c);
        }
    }
}
