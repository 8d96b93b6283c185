//! The chat use cases: validation, the approved-member and admin gates, and who is told what.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{info, warn};
use voice_domain::ports::{MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId, VoiceRoomId};

use crate::errors::ChatError;
use crate::events::{
    ChatEvent, HelloData, MemberView, MembersPage, MessagesPage, RoomView, RoomsPage,
};
use crate::model::{
    clean_name, clean_text, ChatMessage, RoomRecord, MESSAGE_HISTORY, MESSAGE_HISTORY_BYTES,
};
use crate::page::{
    decode_cursor, encode_cursor, page_size, CursorKind, StoredMessage, MEMBERS_PAGE, ROOMS_PAGE,
};
use std::sync::Arc;

use crate::ports::{
    AdmitAll, ChatAdapters, ChatStoreError, JoinQuotas, Quota, ResumeClaims, SignUpGate,
};

/// The quotas: how much one user may make others store and read. Without them one user (or
/// a script opening many anonymous connections) can create rooms without end, bloating
/// `listRooms` for everyone, or flood a room's admin with join requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Rooms one user may be the admin of.
    pub rooms_per_user: usize,
    /// Join requests that may wait in one room for its admin's decision.
    pub pending_per_room: usize,
    /// Join requests one user may have waiting, across all rooms.
    pub pending_per_user: usize,
    /// Bans one room may hold. A ban may name someone who is not a member (a pre-emptive
    /// ban), so without a bound one admin could write ban rows without end.
    pub bans_per_room: usize,
    /// How long a resume token stays good after it was issued. Sliding: every `hello` issues a
    /// fresh one, so only a user away longer than this comes back as a new user.
    pub resume_ttl: Duration,
    /// The most bytes of messages (as JSON, escapes included) one `getMessages` reply
    /// carries: the newest that fit. Default [`MESSAGE_HISTORY_BYTES`].
    pub history_bytes: usize,
    /// Rooms per `listRooms` page (at most [`MAX_PAGE`](crate::page::MAX_PAGE)). Default
    /// [`ROOMS_PAGE`].
    pub rooms_page: usize,
    /// Members per `listMembers` page (at most [`MAX_PAGE`](crate::page::MAX_PAGE)).
    /// Default [`MEMBERS_PAGE`].
    pub members_page: usize,
}

impl Default for ChatLimits {
    /// Generous for people, small for scripts: 10 rooms, 50 waiting requests per room, 20
    /// waiting requests per user, 1 000 bans per room; resume tokens good for 30 days; 96 KiB of history per
    /// `getMessages` reply; pages of 50 rooms and 100 members.
    fn default() -> Self {
        Self {
            rooms_per_user: 10,
            pending_per_room: 50,
            pending_per_user: 20,
            bans_per_room: 1_000,
            resume_ttl: Duration::from_secs(30 * 24 * 3600),
            history_bytes: MESSAGE_HISTORY_BYTES,
            rooms_page: ROOMS_PAGE,
            members_page: MEMBERS_PAGE,
        }
    }
}

/// What a removal changed, for the entrypoint to finish in voice: the removed user's
/// connections must leave the room's active voice room at once (voice's own `leave` use case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The removed user's state in the room before (approved, pending, or none).
    pub before: MemberState,
    /// The removed user's open connections.
    pub connections: Vec<ConnectionId>,
    /// The chat room's active voice room, which those connections must leave.
    pub voice_room: Option<VoiceRoomId>,
}

/// The chat rules over [`ChatAdapters`]. Cheap to clone (shared adapters): one per process,
/// cloned into every connection's task.
#[derive(Clone)]
pub struct ChatService {
    ports: ChatAdapters,
    limits: ChatLimits,
    sign_ups: Arc<dyn SignUpGate>,
}

impl ChatService {
    /// The rules over `ports`, with the default [`ChatLimits`].
    pub fn new(ports: ChatAdapters) -> Self {
        Self {
            ports,
            limits: ChatLimits::default(),
            sign_ups: Arc::new(AdmitAll),
        }
    }

    /// The same rules with new users admitted only by `gate` (the self-hosted server's
    /// per-address quota). Without it every sign-up is admitted.
    #[must_use]
    pub fn with_sign_ups(mut self, gate: Arc<dyn SignUpGate>) -> Self {
        self.sign_ups = gate;
        self
    }

    /// The same rules with other quotas (the operator's flags).
    #[must_use]
    pub fn with_limits(mut self, limits: ChatLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The adapters, for an entrypoint that also hands the store to voice as its directory.
    pub fn ports(&self) -> &ChatAdapters {
        &self.ports
    }

    async fn push_to_user(&self, user: &UserId, event: &ChatEvent) -> Result<(), ChatError> {
        let conns = self.ports.store.connections_of_user(user).await?;
        self.ports.events.push(&conns, event).await;
        Ok(())
    }

    async fn push_to_members(&self, room: &ChatRoomId, event: &ChatEvent) -> Result<(), ChatError> {
        let conns = self.ports.store.connections_of(room).await?;
        self.ports.events.push(&conns, event).await;
        Ok(())
    }

    /// Tells the members of every room `user` belongs to that they came online or went
    /// offline (each connection once, however many rooms it shares with the user).
    async fn push_presence(&self, user: &UserId, online: bool) -> Result<(), ChatError> {
        let mut to = Vec::new();
        for room in self.ports.store.rooms_of_member(user).await? {
            to.extend(self.ports.store.connections_of(&room).await?);
        }
        to.sort();
        to.dedup();
        let event = ChatEvent::PresenceChanged {
            user_id: user.to_string(),
            online,
        };
        self.ports.events.push(&to, &event).await;
        Ok(())
    }

    /// The user on `connection`.
    ///
    /// # Errors
    /// [`ChatError::NotIdentified`] (no `hello` on it yet), [`ChatError::Unavailable`].
    pub async fn identify(&self, connection: &ConnectionId) -> Result<UserId, ChatError> {
        self.ports
            .store
            .user_of(connection)
            .await?
            .ok_or(ChatError::NotIdentified)
    }

    async fn name_of(&self, user: &UserId) -> Result<String, ChatError> {
        Ok(self
            .ports
            .store
            .user_name(user)
            .await?
            .unwrap_or_else(|| user.to_string()))
    }

    /// The approved-member gate (`Membership::require_approved`, the rule voice applies too):
    /// `user` is the admin or an approved member of `room`.
    ///
    /// # Errors
    /// [`ChatError::ChatRoomNotFound`], [`ChatError::NotApproved`] (pending),
    /// [`ChatError::NotMember`], [`ChatError::Unavailable`].
    pub async fn approved(
        &self,
        room: &ChatRoomId,
        user: &UserId,
    ) -> Result<Membership, ChatError> {
        let m = self.ports.store.membership(room, user).await?;
        Ok(Membership::require_approved(m)?)
    }

    /// A genuine resume token's user, unless it expired (issued longer than
    /// [`ChatLimits::resume_ttl`] ago) or was revoked (issued before the user's last
    /// `signOutEverywhere`).
    async fn still_good(&self, c: ResumeClaims, now: u64) -> Result<Option<UserId>, ChatError> {
        let ttl = u64::try_from(self.limits.resume_ttl.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(c.issued_at_ms) > ttl {
            info!(user_id = %c.user, "expired resume token: a new user");
            return Ok(None);
        }
        if c.generation < self.ports.store.token_generation(&c.user).await? {
            info!(user_id = %c.user, "revoked resume token: a new user");
            return Ok(None);
        }
        Ok(Some(c.user))
    }

    /// `signOutEverywhere`: every resume token the user holds stops working (a leaked one
    /// included); the next `hello` with one of them is a new user. Connections already open
    /// stay identified until they close.
    ///
    /// # Errors
    /// [`ChatError::Unavailable`].
    pub async fn sign_out_everywhere(&self, user: &UserId) -> Result<(), ChatError> {
        let generation = self.ports.store.bump_token_generation(user).await?;
        info!(user_id = %user, generation, "signed out everywhere");
        Ok(())
    }

    /// `hello`: identifies the connection. A valid `resume_token` (genuine, not expired, not
    /// revoked) keeps the user id of an earlier connection; otherwise a new user is created.
    /// Saying hello again renames. Every hello issues a fresh token (the expiry slides).
    ///
    /// # Errors
    /// [`ChatError::BadRequest`]/[`ChatError::TooLarge`] for a bad name,
    /// [`ChatError::QuotaExceeded`] when a new user would be created and the [`SignUpGate`]
    /// refuses (nothing is stored), [`ChatError::Unavailable`].
    pub async fn hello(
        &self,
        connection: &ConnectionId,
        name: &str,
        resume_token: Option<&str>,
    ) -> Result<HelloData, ChatError> {
        let name = clean_name("name", name)?;
        let existing = self.ports.store.user_of(connection).await?;
        let now = self.ports.clock.now().as_millis();
        let resumed_user = match resume_token.and_then(|t| self.ports.tokens.verify(t)) {
            Some(c) => self.still_good(c, now).await?,
            None => None,
        };
        let resumed = existing.is_none() && resumed_user.is_some();
        let user = match (existing, resumed_user) {
            (Some(u), _) | (None, Some(u)) => u,
            (None, None) => {
                // Checked before anything is stored: a refused sign-up leaves no user row.
                let admitted = self
                    .sign_ups
                    .admit(connection)
                    .await
                    .map_err(ChatStoreError::Unavailable)?;
                if !admitted {
                    info!("sign-up refused: the origin's new-user quota is used up");
                    return Err(ChatError::QuotaExceeded(
                        "too many new users were created from your network recently; sign in \
                         with a saved session (the same browser) or try again later"
                            .into(),
                    ));
                }
                self.ports.ids.user_id()
            }
        };
        let was_online = !self
            .ports
            .store
            .connections_of_user(&user)
            .await?
            .is_empty();
        self.ports
            .store
            .bind_connection(connection, &user, &name)
            .await?;
        info!(user_id = %user, resumed, "connection identified");
        if !was_online {
            self.push_presence(&user, true).await?;
        }
        Ok(HelloData {
            user_id: user.to_string(),
            name,
            connection_id: connection.to_string(),
            resume_token: self.ports.tokens.issue(&ResumeClaims {
                generation: self.ports.store.token_generation(&user).await?,
                user: user.clone(),
                issued_at_ms: now,
            }),
            resumed,
        })
    }

    /// `createRoom`: the caller becomes admin and approved member.
    ///
    /// # Errors
    /// [`ChatError::BadRequest`]/[`ChatError::TooLarge`] for a bad name,
    /// [`ChatError::RoomExists`], [`ChatError::QuotaExceeded`] (the user already admins
    /// [`ChatLimits::rooms_per_user`] rooms), [`ChatError::Unavailable`].
    pub async fn create_room(&self, user: &UserId, name: &str) -> Result<RoomRecord, ChatError> {
        let name = clean_name("room name", name)?;
        let room = RoomRecord {
            id: self.ports.ids.chat_room_id(),
            name,
            admin: user.clone(),
        };
        // The store counts the user's rooms in the same atomic step as the insert: a check
        // here, then a write, let two simultaneous requests both take the last free place.
        self.ports
            .store
            .create_room(&room, self.limits.rooms_per_user)
            .await
            .map_err(|e| self.quota_refusal(e, user, None))?;
        info!(chat_room_id = %room.id, user_id = %user, "chat room created");
        let everyone = self.ports.store.identified_connections().await?;
        let event = ChatEvent::RoomCreated {
            room_id: room.id.to_string(),
            name: room.name.clone(),
            admin_user_id: room.admin.to_string(),
        };
        self.ports.events.push(&everyone, &event).await;
        Ok(room)
    }

    /// `listRooms`: one page of rooms (at most [`ChatLimits::rooms_page`], or the smaller
    /// `limit` asked), after `cursor` (from the previous page's `nextCursor`), each with the
    /// caller's state in it and, for approved members, the active voice room. One chat-store
    /// query and at most one voice-store lookup per page (for the page's rooms the caller is
    /// approved in, all at once).
    ///
    /// # Errors
    /// [`ChatError::BadRequest`] for a damaged cursor, [`ChatError::Unavailable`].
    pub async fn list_rooms(
        &self,
        user: &UserId,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<RoomsPage, ChatError> {
        let after = cursor
            .map(|c| decode_cursor(CursorKind::Rooms, c))
            .transpose()?;
        let limit = page_size(limit, self.limits.rooms_page);
        let page = self
            .ports
            .store
            .room_page(user, after.as_deref(), limit)
            .await
            .map_err(bad_cursor)?;
        // One voice lookup for the whole page, only for the rooms the caller is approved in:
        // a loop of `listRooms` costs the voice store one query per page, not one per room.
        let approved: Vec<ChatRoomId> = page
            .items
            .iter()
            .filter(|r| r.my_state == MemberState::Approved)
            .map(|r| r.record.id.clone())
            .collect();
        let mut live = if approved.is_empty() {
            HashMap::new()
        } else {
            self.ports
                .voice
                .active_voice_rooms(&approved)
                .await
                .map_err(|e| {
                    warn!(error = %e, "voice store failed");
                    ChatError::Unavailable
                })?
        };
        let rooms = page
            .items
            .into_iter()
            .map(|room| RoomView {
                voice_room_id: live.remove(&room.record.id).map(|v| v.to_string()),
                room_id: room.record.id.to_string(),
                name: room.record.name,
                admin_user_id: room.record.admin.to_string(),
                member_count: room.member_count,
                my_state: room.my_state,
            })
            .collect();
        Ok(RoomsPage {
            rooms,
            next_cursor: page.next.map(|p| encode_cursor(CursorKind::Rooms, &p)),
        })
    }

    /// A store refusal in the user's words: a quota says which one and what frees it.
    fn quota_refusal(
        &self,
        e: ChatStoreError,
        user: &UserId,
        room: Option<&ChatRoomId>,
    ) -> ChatError {
        let l = &self.limits;
        match e {
            ChatStoreError::QuotaExceeded(Quota::RoomsPerUser) => {
                info!(user_id = %user, limit = l.rooms_per_user, "room quota reached");
                ChatError::QuotaExceeded(format!(
                    "you already run {} chat rooms, the most this server allows one person",
                    l.rooms_per_user
                ))
            }
            ChatStoreError::QuotaExceeded(Quota::PendingPerRoom) => {
                if let Some(room) = room {
                    info!(chat_room_id = %room, limit = l.pending_per_room, "pending-request quota of the room reached");
                }
                ChatError::QuotaExceeded(format!(
                    "this chat room already has {} join requests waiting for its admin; try again after the admin has answered some",
                    l.pending_per_room
                ))
            }
            ChatStoreError::QuotaExceeded(Quota::PendingPerUser) => {
                info!(user_id = %user, limit = l.pending_per_user, "pending-request quota of the user reached");
                ChatError::QuotaExceeded(format!(
                    "you already have {} join requests waiting; wait until some are answered before asking to join more rooms",
                    l.pending_per_user
                ))
            }
            ChatStoreError::QuotaExceeded(Quota::BansPerRoom) => {
                if let Some(room) = room {
                    info!(chat_room_id = %room, limit = l.bans_per_room, "ban quota of the room reached");
                }
                ChatError::QuotaExceeded(format!(
                    "this chat room already has {} bans, the most this server allows; lift some with unban first",
                    l.bans_per_room
                ))
            }
            other => other.into(),
        }
    }

    /// `requestJoin`: records a request and tells the admin (once, not on every repeat).
    ///
    /// # Errors
    /// [`ChatError::ChatRoomNotFound`], [`ChatError::QuotaExceeded`] (a new request when the
    /// room already has [`ChatLimits::pending_per_room`] waiting, or the user
    /// [`ChatLimits::pending_per_user`]), [`ChatError::Unavailable`].
    pub async fn request_join(
        &self,
        user: &UserId,
        room: &ChatRoomId,
    ) -> Result<MemberState, ChatError> {
        let record = self.room_record(room).await?;
        // The store checks both quotas in the same atomic step as the insert (a repeat or an
        // approved member is never refused for them).
        let quotas = JoinQuotas {
            per_room: self.limits.pending_per_room,
            per_user: self.limits.pending_per_user,
        };
        let (before, after) = self
            .ports
            .store
            .request_join(room, user, quotas)
            .await
            .map_err(|e| self.quota_refusal(e, user, Some(room)))?;
        if before == MemberState::None && after == MemberState::Pending {
            info!(chat_room_id = %room, user_id = %user, "join requested");
            let event = ChatEvent::JoinRequested {
                room_id: room.to_string(),
                user_id: user.to_string(),
                name: self.name_of(user).await?,
            };
            self.push_to_user(&record.admin, &event).await?;
        }
        Ok(after)
    }

    /// `approveJoin` / `denyJoin`: the admin decides; the requester is told, and on approval
    /// every approved member hears `memberJoined`.
    ///
    /// # Errors
    /// [`ChatError::ChatRoomNotFound`], [`ChatError::NotAdmin`],
    /// [`ChatError::NoPendingRequest`], [`ChatError::Unavailable`].
    pub async fn decide_join(
        &self,
        admin: &UserId,
        room: &ChatRoomId,
        user: &UserId,
        approve: bool,
    ) -> Result<MemberState, ChatError> {
        self.require_admin(admin, room).await?;
        self.ports.store.decide_join(room, user, approve).await?;
        info!(chat_room_id = %room, user_id = %user, approve, "join request decided");
        let (room_id, user_id) = (room.to_string(), user.to_string());
        if approve {
            self.push_to_user(
                user,
                &ChatEvent::JoinApproved {
                    room_id: room_id.clone(),
                    user_id: user_id.clone(),
                },
            )
            .await?;
            let name = self.name_of(user).await?;
            self.push_to_members(
                room,
                &ChatEvent::MemberJoined {
                    room_id,
                    user_id,
                    name,
                },
            )
            .await?;
            Ok(MemberState::Approved)
        } else {
            self.push_to_user(user, &ChatEvent::JoinDenied { room_id, user_id })
                .await?;
            Ok(MemberState::None)
        }
    }

    /// The admin gate: `admin` is the room's admin.
    async fn require_admin(&self, admin: &UserId, room: &ChatRoomId) -> Result<(), ChatError> {
        if &self.room_record(room).await?.admin != admin {
            return Err(ChatError::NotAdmin);
        }
        Ok(())
    }

    /// The room, or [`ChatError::ChatRoomNotFound`].
    async fn room_record(&self, room: &ChatRoomId) -> Result<RoomRecord, ChatError> {
        self.ports
            .store
            .room(room)
            .await?
            .ok_or(ChatError::ChatRoomNotFound)
    }

    /// `removeMember` / `banMember`: the admin removes a member or a pending requester; with
    /// `ban` they may not ask again (until `unbanMember`). The user and the room's approved
    /// members hear `memberRemoved`. Banning a user who holds no membership is allowed (a
    /// pre-emptive ban), but only a user who exists (has signed in): a ban is a stored row,
    /// and made-up ids would let one admin store rows without end. Removing someone without a
    /// membership is a silent no-op that still answers.
    ///
    /// # Errors
    /// [`ChatError::ChatRoomNotFound`], [`ChatError::NotAdmin`],
    /// [`ChatError::CannotRemoveAdmin`], [`ChatError::UnknownUser`] (a ban of a user id
    /// nobody has signed in with), [`ChatError::QuotaExceeded`] (a new ban when the room
    /// already has [`ChatLimits::bans_per_room`]), [`ChatError::Unavailable`].
    pub async fn remove_member(
        &self,
        admin: &UserId,
        room: &ChatRoomId,
        user: &UserId,
        ban: bool,
    ) -> Result<Removal, ChatError> {
        self.require_admin(admin, room).await?;
        if user == admin {
            return Err(ChatError::CannotRemoveAdmin);
        }
        // Users are never deleted, so a user seen now still exists when the ban is written.
        if ban && self.ports.store.user_name(user).await?.is_none() {
            return Err(ChatError::UnknownUser);
        }
        // The store counts the room's bans in the same atomic step as the insert (a re-ban
        // and a plain removal are never refused for it).
        let before = self
            .ports
            .store
            .remove_member(room, user, ban, self.limits.bans_per_room)
            .await
            .map_err(|e| self.quota_refusal(e, admin, Some(room)))?;
        info!(chat_room_id = %room, user_id = %user, ban, "member removed");
        let event = ChatEvent::MemberRemoved {
            room_id: room.to_string(),
            user_id: user.to_string(),
            banned: ban,
        };
        let connections = self.ports.store.connections_of_user(user).await?;
        // Nothing to tell when a stranger was "removed" (no membership, no ban).
        if before != MemberState::None || ban {
            let mut to = self.ports.store.connections_of(room).await?;
            to.extend(connections.iter().cloned());
            to.sort();
            to.dedup();
            self.ports.events.push(&to, &event).await;
        }
        let voice_room = self
            .ports
            .voice
            .active_voice_room(room)
            .await
            .map_err(|e| {
                warn!(error = %e, "voice store failed");
                ChatError::Unavailable
            })?;
        Ok(Removal {
            before,
            connections,
            voice_room,
        })
    }

    /// `unbanMember`: the admin lifts a ban (the user may ask to join again). Returns whether
    /// there was one.
    ///
    /// # Errors
    /// [`ChatError::ChatRoomNotFound`], [`ChatError::NotAdmin`], [`ChatError::Unavailable`].
    pub async fn unban_member(
        &self,
        admin: &UserId,
        room: &ChatRoomId,
        user: &UserId,
    ) -> Result<bool, ChatError> {
        self.require_admin(admin, room).await?;
        let was = self.ports.store.unban(room, user).await?;
        info!(chat_room_id = %room, user_id = %user, was, "ban lifted");
        Ok(was)
    }

    /// `listMembers`: approved members only. One page (at most [`ChatLimits::members_page`],
    /// or the smaller `limit` asked) of members and requesters after `cursor`, in user-id
    /// order across pages; within a page the admin first, then by name. One store query per
    /// page (names and presence come with it), never one per member.
    ///
    /// # Errors
    /// The approved-member gate's ([`ChatService::approved`]), [`ChatError::BadRequest`] for
    /// a damaged cursor.
    pub async fn list_members(
        &self,
        user: &UserId,
        room: &ChatRoomId,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<MembersPage, ChatError> {
        let membership = self.approved(room, user).await?;
        let after = cursor
            .map(|c| {
                let raw = decode_cursor(CursorKind::Members, c)?;
                UserId::parse(raw).map_err(|_| bad_cursor(ChatStoreError::BadCursor))
            })
            .transpose()?;
        let admin = if membership.is_admin {
            Some(user.clone())
        } else {
            self.ports.store.room(room).await?.map(|r| r.admin)
        };
        let limit = page_size(limit, self.limits.members_page);
        let page = self
            .ports
            .store
            .member_page(room, after.as_ref(), limit)
            .await
            .map_err(bad_cursor)?;
        let mut out: Vec<MemberView> = page
            .items
            .into_iter()
            .map(|m| MemberView {
                user_id: m.user.to_string(),
                name: m.name.unwrap_or_else(|| m.user.to_string()),
                state: m.state,
                is_admin: admin.as_ref() == Some(&m.user),
                online: m.online,
            })
            .collect();
        out.sort_by(|a, b| {
            b.is_admin
                .cmp(&a.is_admin)
                .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
                .then_with(|| a.user_id.cmp(&b.user_id))
        });
        Ok(MembersPage {
            members: out,
            next_cursor: page.next.map(|p| encode_cursor(CursorKind::Members, &p)),
        })
    }

    /// `sendMessage`: approved members only; every approved member hears `message`.
    ///
    /// # Errors
    /// The approved-member gate's, [`ChatError::BadRequest`]/[`ChatError::TooLarge`] for the
    /// text, [`ChatError::Unavailable`].
    pub async fn send_message(
        &self,
        user: &UserId,
        room: &ChatRoomId,
        text: &str,
    ) -> Result<ChatMessage, ChatError> {
        self.approved(room, user).await?;
        let text = clean_text(text)?;
        let message = ChatMessage {
            room_id: room.to_string(),
            user_id: user.to_string(),
            name: self.name_of(user).await?,
            text,
            at: self.ports.clock.now().as_millis(),
        };
        self.ports.store.append_message(room, &message).await?;
        self.push_to_members(room, &ChatEvent::Message(message.clone()))
            .await?;
        Ok(message)
    }

    /// `getMessages`: approved members only. The newest [`MESSAGE_HISTORY`] messages older
    /// than `cursor` (none: the newest of all), oldest first, of which only the newest that fit
    /// in [`ChatLimits::history_bytes`] of JSON; `nextCursor` asks for the ones before them.
    /// One store query per page (it asks one message more than it returns, to know whether
    /// older ones exist).
    ///
    /// # Errors
    /// The approved-member gate's, [`ChatError::BadRequest`] for a damaged cursor,
    /// [`ChatError::Unavailable`].
    pub async fn messages(
        &self,
        user: &UserId,
        room: &ChatRoomId,
        cursor: Option<&str>,
    ) -> Result<MessagesPage, ChatError> {
        self.approved(room, user).await?;
        let before = cursor
            .map(|c| {
                decode_cursor(CursorKind::Messages, c)?
                    .parse::<u64>()
                    .map_err(|_| bad_cursor(ChatStoreError::BadCursor))
            })
            .transpose()?;
        let mut page: Vec<StoredMessage> = self
            .ports
            .store
            .message_page(room, before, MESSAGE_HISTORY + 1)
            .await?;
        let mut older = page.len() > MESSAGE_HISTORY;
        if older {
            page.remove(0);
        }
        let keep = newest_within(&page, self.limits.history_bytes);
        if keep < page.len() {
            info!(chat_room_id = %room, kept = keep, of = page.len(), "history reply cut to its byte budget");
            older = true;
        }
        // Not even the newest message fits the budget (only with a tiny configured budget):
        // the cursor skips it, so the client can still page past it.
        let skip_to = page.last().map(|m| m.seq);
        let page = page.split_off(page.len() - keep);
        let next_cursor = match page.first() {
            Some(first) if older => Some(first.seq),
            None if older => skip_to,
            _ => None,
        }
        .map(|seq| encode_cursor(CursorKind::Messages, &seq.to_string()));
        Ok(MessagesPage {
            messages: page.into_iter().map(|m| m.message).collect(),
            next_cursor,
        })
    }

    /// The connection closed: it is no longer the user's, and when it was the user's last one
    /// the members of the user's rooms hear `presenceChanged` (offline). A store failure is
    /// logged: the connection is gone either way.
    pub async fn disconnect(&self, connection: &ConnectionId) {
        let user = self.ports.store.user_of(connection).await.ok().flatten();
        if let Err(e) = self.ports.store.unbind_connection(connection).await {
            warn!(error = %e, "could not remove the connection from chat presence");
            return;
        }
        let Some(user) = user else { return };
        let gone = match self.ports.store.connections_of_user(&user).await {
            Ok(left) => left.is_empty(),
            Err(e) => {
                warn!(error = %e, "could not read the user's remaining connections");
                false
            }
        };
        if gone {
            if let Err(e) = self.push_presence(&user, false).await {
                warn!(error = %e, "could not tell the user's rooms they went offline");
            }
        }
    }
}

/// How many of the last `messages` fit in `budget` bytes of JSON (each message as it goes on
/// the wire, escapes included, plus its comma).
fn newest_within(messages: &[StoredMessage], budget: usize) -> usize {
    let mut used = 0usize;
    messages
        .iter()
        .rev()
        .take_while(|m| {
            used += serde_json::to_string(&m.message).map_or(usize::MAX / 2, |j| j.len() + 1);
            used <= budget
        })
        .count()
}

/// A store's "not a position of this list" as the client's bad request; other errors as they
/// are.
fn bad_cursor(e: ChatStoreError) -> ChatError {
    match e {
        ChatStoreError::BadCursor => ChatError::BadRequest(
            "cursor: this is not a cursor this server gave out for this list (it may be \
             damaged or from another list); ask again without a cursor to start from the first \
             page"
                .into(),
        ),
        other => other.into(),
    }
}
