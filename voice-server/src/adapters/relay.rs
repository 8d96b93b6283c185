//! The self-hosted signaling relay.
//!
//! - [`RelayChannels`]: the [`SignalingChannels`] port. Channels are bookkeeping only (the
//!   relay routes by user over the same WebSocket), so it wraps [`MemoryChannels`] and answers
//!   `endpoints` with this server's WebSocket URL and the configured ICE servers, with fresh
//!   TURN credentials for the asking user.
//! - [`Relay`]: checks a `signal` and forwards it. Who may talk to whom, and in which role, is
//!   the domain's decision ([`VoiceRoom::link_between`]); the relay only checks that the
//!   sender's token grants that link's channel in that role and that the kind fits the role.
//!
//! Per signal the relay reads no more than it must: a connection's voice token is verified
//! (HMAC, then its claims parsed) once and its claims kept until they expire or the connection
//! presents another token or closes ([`TokenCache`]); the voice room is read from the store
//! once and shared ([`RoomCache`]) until a voice event about any room, or [`ROOM_CACHE_TTL`],
//! whichever comes first. Every check still runs on every signal against those: the token's
//! expiry, room and user, the sender's current connection, the mesh link, the grant, the role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use serde::Serialize;
use tracing::{debug, warn};
use voice_adapters_memory::MemoryChannels;
use voice_domain::ports::{
    ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, Clock, ListedChannel,
    SignalingChannels,
};
use voice_domain::{
    ChannelName, ChannelRole, ClientId, ConnectionId, SignalingChannel, UserId, VoiceRoom,
    VoiceRoomId,
};

use crate::adapters::hub::Hub;
use crate::adapters::ice::IceConfig;
use crate::adapters::relay_cache::{same_token, VerifiedToken};
use crate::adapters::store::ServerStore;
use crate::adapters::token::{Claims, TokenError, TokenKey};
use crate::quota::{Bucket, RateLimit};
use chat_domain::{event_frame, StoreDirectory};
use voice_executor::{SignalError, SignalKind, SignalRelay, SignalRequest, MAX_SIGNAL_PAYLOAD};

/// The [`SignalingChannels`] port of the self-hosted server.
#[derive(Clone)]
pub struct RelayChannels {
    inner: MemoryChannels,
    ws_url: String,
    ice: IceConfig,
    directory: StoreDirectory,
    clock: Arc<dyn Clock>,
}

impl RelayChannels {
    /// Channels telling clients `ws_url` and `ice`'s servers; `directory` resolves the asking
    /// user for TURN usernames.
    pub fn new(
        inner: MemoryChannels,
        ws_url: String,
        ice: IceConfig,
        directory: StoreDirectory,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner,
            ws_url,
            ice,
            directory,
            clock,
        }
    }
}

#[async_trait]
impl SignalingChannels for RelayChannels {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        self.inner.create(name, tags).await
    }

    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        self.inner.delete(channel).await
    }

    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        // Existence check (NotFound) stays the inner adapter's.
        self.inner.endpoints(channel, role, client_id).await?;
        let user = match client_id.connection() {
            Some(conn) => self.directory.user_of(&conn).await.ok().flatten(),
            None => None,
        };
        let user = user.map_or_else(|| client_id.to_string(), |u| u.to_string());
        Ok(ChannelEndpoints {
            wss: self.ws_url.clone(),
            https: None,
            ice_servers: self.ice.servers_for(&user, self.clock.now()),
        })
    }

    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        self.inner.list().await
    }
}

/// The `signal` event the peer receives.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename = "signal", rename_all = "camelCase")]
struct SignalEvent<'a> {
    voice_room_id: &'a str,
    from: &'a str,
    kind: SignalKind,
    payload: &'a serde_json::value::RawValue,
}

/// Checks and forwards signals.
#[derive(Clone)]
pub struct Relay {
    key: TokenKey,
    store: ServerStore,
    directory: StoreDirectory,
    hub: Hub,
    clock: Arc<dyn Clock>,
    descriptions: Arc<LinkPacing>,
}

/// Offers and answers one participant may send another at once, and then per second: a
/// change of tracks or an ICE restart is one offer and one answer, so five covers a burst of
/// renegotiation; a peer offering 40 a second (issue 13, finding 3) gets one a second through.
/// Kinesis Video Streams paces the same traffic at 5 per second per socket.
const LINK_DESCRIPTIONS: RateLimit = RateLimit {
    burst: 5,
    per_second: 1.0,
};

/// Links remembered before refilled ones are forgotten.
const MAX_PACED_LINKS: usize = 65_536;

/// The offer/answer budget of each (room, sender, recipient) link.
#[derive(Default)]
struct LinkPacing(Mutex<HashMap<(VoiceRoomId, UserId, UserId), Bucket>>);

impl LinkPacing {
    /// Takes one description from the link's budget.
    fn take(&self, room: &VoiceRoomId, from: &UserId, to: &UserId) -> Result<(), SignalError> {
        let now = Instant::now();
        let mut links = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (room.clone(), from.clone(), to.clone());
        if links.len() >= MAX_PACED_LINKS && !links.contains_key(&key) {
            links.retain(|_, b| !b.is_full(now));
        }
        if links
            .entry(key)
            .or_insert_with(|| Bucket::new(LINK_DESCRIPTIONS))
            .take(now)
        {
            Ok(())
        } else {
            Err(SignalError::RateLimited {
                burst: LINK_DESCRIPTIONS.burst,
                // Whole descriptions per minute, for the message (the rate is a whole number).
                per_minute: (LINK_DESCRIPTIONS.per_second * 60.0) as u32,
            })
        }
    }
}

impl Relay {
    /// A relay verifying with `key`, reading rooms from `store`.
    pub fn new(
        key: TokenKey,
        store: ServerStore,
        directory: StoreDirectory,
        hub: Hub,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            key,
            store,
            directory,
            hub,
            clock,
            descriptions: Arc::default(),
        }
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<ConnectionId, VerifiedToken>> {
        self.hub.voice_tokens().lock()
    }

    /// The claims of `token` sent by `sender`: verified (signature, then expiry) the first time
    /// the connection presents it, from the cache afterwards with the expiry checked again.
    fn claims(
        &self,
        sender: &ConnectionId,
        token: &str,
        now: voice_domain::Timestamp,
    ) -> Result<Arc<Claims>, TokenError> {
        let cached = self
            .tokens()
            .get(sender)
            .and_then(|v| same_token(&v.token, token).then(|| v.claims.clone()));
        if let Some(claims) = cached {
            if now.as_millis() >= claims.exp.saturating_mul(1000) {
                self.hub.voice_tokens().forget(sender);
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = Arc::new(self.key.verify(token, now)?);
        self.tokens().insert(
            sender.clone(),
            VerifiedToken {
                token: token.into(),
                claims: claims.clone(),
            },
        );
        Ok(claims)
    }

    /// Checks `req` from `sender` and forwards it to the peer's connection in the room.
    ///
    /// Order of checks: identified, size, token (signature, expiry, room, user), the mesh link
    /// (both current participants, sender on this connection), the token's grant for the link
    /// in the sender's role, the kind for that role, then delivery.
    ///
    /// # Errors
    /// [`SignalError`].
    pub async fn relay(
        &self,
        sender: &ConnectionId,
        req: &SignalRequest,
    ) -> Result<(), SignalError> {
        let user = self
            .directory
            .user_of(sender)
            .await
            .map_err(|_| SignalError::Unavailable)?
            .ok_or(SignalError::NotIdentified)?;
        let size = req.payload.get().len();
        if size > MAX_SIGNAL_PAYLOAD {
            return Err(SignalError::TooLarge { size });
        }
        let claims = self
            .claims(sender, &req.token, self.clock.now())
            .map_err(|e: TokenError| {
                warn!(reason = %e, user_id = %user, voice_room_id = %req.voice_room, "signal refused: bad token");
                SignalError::Unauthorized
            })?;
        if claims.voice_room_id != req.voice_room.as_str() || claims.user_id != user.as_str() {
            warn!(user_id = %user, voice_room_id = %req.voice_room, "signal refused: token is for another room or user");
            return Err(SignalError::Unauthorized);
        }
        let room: Arc<VoiceRoom> = self
            .hub
            .voice_rooms()
            .get(&self.store, &req.voice_room)
            .await
            .map_err(|_| SignalError::Unavailable)?
            .filter(|r| r.is_active())
            .ok_or(SignalError::NotPeer("this voice room is not active"))?;
        let me = room.participant(&user).ok_or(SignalError::NotPeer(
            "you are not a participant of this voice room",
        ))?;
        // After a resume the participant's connection is the new one: the old one may no
        // longer signal for it. A reconnecting participant must resume (getVoiceCredentials)
        // first.
        if &me.connection != sender || me.is_reconnecting() {
            return Err(SignalError::NotPeer(
                "this connection is not the one you joined (or last resumed) the voice room with; call getVoiceCredentials from it first",
            ));
        }
        let link = room
            .link_between(&user, &req.to)
            .ok_or(SignalError::NotPeer(
                "the recipient is not another participant of this voice room",
            ))?;
        let my_role = if link.viewer == user {
            ChannelRole::Viewer
        } else {
            ChannelRole::Master
        };
        if !claims.allows(link.channel.arn.as_str(), my_role) {
            warn!(user_id = %user, voice_room_id = %req.voice_room, "signal refused: token does not grant this link");
            return Err(SignalError::Unauthorized);
        }
        match (req.kind, my_role) {
            (SignalKind::Offer, ChannelRole::Master) => {
                return Err(SignalError::NotPeer(
                    "offers go from the later joiner (viewer) to the earlier one (master); wait for the peer's offer",
                ))
            }
            (SignalKind::Answer, ChannelRole::Viewer) => {
                return Err(SignalError::NotPeer(
                    "answers go from the earlier joiner (master) to the later one (viewer)",
                ))
            }
            _ => {}
        }
        if matches!(req.kind, SignalKind::Offer | SignalKind::Answer) {
            self.descriptions.take(&req.voice_room, &user, &req.to)?;
        }
        let to = room
            .participant(&req.to)
            .ok_or(SignalError::NotPeer("the recipient left"))?;
        if to.is_reconnecting() {
            return Err(SignalError::NotPeer(
                "the recipient is reconnecting; wait for its participantResumed event",
            ));
        }
        let to_conn = to.connection.clone();
        let frame = event_frame(&SignalEvent {
            voice_room_id: req.voice_room.as_str(),
            from: user.as_str(),
            kind: req.kind,
            payload: &req.payload,
        });
        self.hub
            .send(&to_conn, frame)
            .map_err(|_| SignalError::NotPeer("the recipient is not connected"))?;
        debug!(user_id = %user, to = %req.to, kind = ?req.kind, "signal relayed");
        Ok(())
    }
}

#[async_trait]
impl SignalRelay for Relay {
    async fn relay(
        &self,
        sender: &ConnectionId,
        request: &SignalRequest,
    ) -> Result<(), SignalError> {
        Relay::relay(self, sender, request).await?;
        crate::metrics::signal_relayed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::relay_cache::ROOM_CACHE_TTL;
    use voice_domain::ports::Secret;
    use voice_domain::ports::VoiceRoomStore as _;
    use voice_domain::VoiceRoomId;
    use voice_domain::{Timestamp, UserId, VoiceEvent};

    #[tokio::test]
    async fn a_cached_room_is_read_again_after_any_voice_event() {
        use voice_domain::ports::{Notifier as _, NotifyError};
        use voice_domain::{Capacity, ChannelArn, ChatRoomId};
        let memory = voice_adapters_memory::MemoryStore::new();
        let store = ServerStore::Memory(memory.clone());
        let (room, _) = VoiceRoom::start(
            VoiceRoomId::parse("v1").unwrap(),
            ChatRoomId::parse("r1").unwrap(),
            UserId::parse("u1").unwrap(),
            ConnectionId::parse("c1").unwrap(),
            SignalingChannel {
                name: ChannelName::from_unique("t-1").unwrap(),
                arn: ChannelArn::parse("arn:local:voice:channel/voice-t-1").unwrap(),
            },
            Capacity::default(),
            Timestamp::from_millis(1),
        );
        memory.create_if_none_active(&room).await.unwrap();
        let hub = Hub::new();
        let cache = hub.voice_rooms().clone();
        let first = cache.get(&store, room.id()).await.unwrap().unwrap();
        let again = cache.get(&store, room.id()).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "one store read while nothing changed"
        );
        let mut next = room.clone();
        next.bump_version();
        memory.update(&next).await.unwrap();
        // The service tells the chat room's connections of every change; telling even a
        // connection that is gone drops the cached rooms.
        let event = VoiceEvent::VoiceEnded {
            voice_room_id: room.id().clone(),
            chat_room_id: ChatRoomId::parse("r1").unwrap(),
            reason: voice_domain::room::EndReason::Abandoned,
        };
        let notifier = crate::adapters::hub::HubNotifier::new(hub.clone());
        assert_eq!(
            notifier
                .send(&ConnectionId::parse("gone").unwrap(), &event)
                .await,
            Err(NotifyError::Gone)
        );
        let fresh = cache.get(&store, room.id()).await.unwrap().unwrap();
        assert_eq!(fresh.version(), next.version());
        // Without any event, the entry still lives no longer than the TTL.
        next.bump_version();
        memory.update(&next).await.unwrap();
        tokio::time::sleep(ROOM_CACHE_TTL).await;
        let aged = cache.get(&store, room.id()).await.unwrap().unwrap();
        assert_eq!(aged.version(), next.version());
    }

    #[test]
    fn tokens_compare_equal_only_when_every_byte_is() {
        let t = "abcdefghij.klmnopqrstuvwxyz0123456789";
        assert!(same_token(t, t));
        assert!(same_token("", ""));
        for i in 0..t.len() {
            let mut b = t.as_bytes().to_vec();
            b[i] ^= 1;
            assert!(!same_token(t, std::str::from_utf8(&b).unwrap()), "byte {i}");
        }
        assert!(!same_token(t, &t[..t.len() - 1]));
    }

    #[test]
    fn a_token_is_verified_once_per_connection_and_still_expires() {
        let key = TokenKey::new(Secret::new("k".repeat(32)));
        let relay = Relay::new(
            key.clone(),
            ServerStore::default(),
            StoreDirectory(Arc::new(voice_adapters_memory::MemoryChat::new())),
            Hub::new(),
            Arc::new(voice_adapters_std::SystemClock),
        );
        let claims = Claims {
            voice_room_id: "v".into(),
            user_id: "u".into(),
            grants: vec![],
            exp: 100,
        };
        let token = key.sign(&claims);
        let conn = ConnectionId::parse("c1").unwrap();
        let at = |secs: u64| Timestamp::from_millis(secs * 1000);
        assert_eq!(
            *relay.claims(&conn, token.expose(), at(10)).unwrap(),
            claims
        );
        assert!(
            relay.tokens().contains_key(&conn),
            "kept after the first check"
        );
        assert_eq!(
            *relay.claims(&conn, token.expose(), at(11)).unwrap(),
            claims
        );
        // Another token on the same connection is verified, never taken from the cache.
        let forged = TokenKey::new(Secret::new("f".repeat(32))).sign(&claims);
        assert_eq!(
            relay.claims(&conn, forged.expose(), at(12)).unwrap_err(),
            TokenError::BadSignature
        );
        assert!(relay.claims(&conn, "x.y", at(12)).is_err());
        // The cached claims still expire.
        relay.claims(&conn, token.expose(), at(99)).unwrap();
        assert_eq!(
            relay.claims(&conn, token.expose(), at(100)).unwrap_err(),
            TokenError::Expired
        );
        relay
            .claims(&ConnectionId::parse("c2").unwrap(), token.expose(), at(50))
            .unwrap();
        relay.hub.remove(&ConnectionId::parse("c2").unwrap());
        assert!(
            relay.tokens().is_empty(),
            "an expired token and a closed connection's are forgotten"
        );
    }
}
