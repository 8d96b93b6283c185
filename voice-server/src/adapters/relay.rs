//! The self-hosted signaling relay.
//!
//! - [`RelayChannels`]: the [`SignalingChannels`] port. Channels are bookkeeping only (the
//!   relay routes by user over the same WebSocket), so it wraps [`MemoryChannels`] and answers
//!   `endpoints` with this server's WebSocket URL and the configured ICE servers, with fresh
//!   TURN credentials for the asking user.
//! - [`Relay`]: checks a `signal` and forwards it. Who may talk to whom, and in which role, is
//!   the domain's decision ([`VoiceRoom::link_between`]); the relay only checks that the
//!   sender's token grants that link's channel in that role and that the kind fits the role.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tracing::{debug, warn};
use voice_adapters_memory::MemoryChannels;
use voice_domain::ports::{
    ChannelEndpoints, ChannelError, ChannelTags, ChatDirectory, Clock, ListedChannel,
    SignalingChannels, VoiceRoomStore,
};
use voice_domain::{ChannelName, ChannelRole, ClientId, ConnectionId, SignalingChannel, VoiceRoom};

use crate::adapters::hub::Hub;
use crate::adapters::ice::IceConfig;
use crate::adapters::store::ServerStore;
use crate::adapters::token::{TokenError, TokenKey};
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
    payload: &'a serde_json::Value,
}

/// Checks and forwards signals.
#[derive(Clone)]
pub struct Relay {
    key: TokenKey,
    store: ServerStore,
    directory: StoreDirectory,
    hub: Hub,
    clock: Arc<dyn Clock>,
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
        }
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
        let size = serde_json::to_string(&req.payload)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > MAX_SIGNAL_PAYLOAD {
            return Err(SignalError::TooLarge { size });
        }
        let claims = self
            .key
            .verify(&req.token, self.clock.now())
            .map_err(|e: TokenError| {
                warn!(reason = %e, user_id = %user, voice_room_id = %req.voice_room, "signal refused: bad token");
                SignalError::Unauthorized
            })?;
        if claims.voice_room_id != req.voice_room.as_str() || claims.user_id != user.as_str() {
            warn!(user_id = %user, voice_room_id = %req.voice_room, "signal refused: token is for another room or user");
            return Err(SignalError::Unauthorized);
        }
        let room: VoiceRoom = self
            .store
            .get(&req.voice_room)
            .await
            .map_err(|_| SignalError::Unavailable)?
            .filter(VoiceRoom::is_active)
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
