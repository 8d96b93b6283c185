//! Signaling channels in memory: which exist, their tags, and the endpoints a client is told.
//! The self-hosted server's relay routes by these channels' ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_adapters_std::SystemClock;
use voice_domain::ports::{
    ChannelEndpoints, ChannelError, ChannelTags, Clock, IceServer, ListedChannel, SignalingChannels,
};
use voice_domain::{ChannelArn, ChannelName, ChannelRole, ClientId, SignalingChannel};

#[derive(Default)]
struct Inner {
    channels: BTreeMap<ChannelArn, ListedChannel>,
    wss: String,
    ice_servers: Vec<IceServer>,
    created_total: u64,
}

/// Signaling channels in memory. Clones share the same channels.
#[derive(Clone)]
pub struct MemoryChannels<C: Clock + Clone = SystemClock> {
    inner: Arc<Mutex<Inner>>,
    clock: C,
}

impl<C: Clock + Clone> MemoryChannels<C> {
    /// No channels; endpoints say `ws://127.0.0.1/ws` until [`Self::set_endpoints`].
    pub fn new(clock: C) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                wss: "ws://127.0.0.1/ws".into(),
                ..Inner::default()
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `endpoints` returns from now on: the relay's WebSocket URL and the ICE servers.
    pub fn set_endpoints(&self, wss: impl Into<String>, ice_servers: Vec<IceServer>) {
        let mut inner = self.lock();
        inner.wss = wss.into();
        inner.ice_servers = ice_servers;
    }

    /// Whether a channel exists.
    pub fn exists(&self, arn: &ChannelArn) -> bool {
        self.lock().channels.contains_key(arn)
    }

    /// Every existing channel.
    pub fn list_now(&self) -> Vec<ListedChannel> {
        self.lock().channels.values().cloned().collect()
    }

    /// Records `channel`, which a stored voice room holds, as existing (created now, not counted
    /// as created). The self-hosted server's channels are routes of its relay, kept in memory:
    /// after a restart it re-registers the channels of the voice rooms it keeps, so that their
    /// participants can resume on them.
    pub fn adopt(&self, channel: SignalingChannel, tags: ChannelTags) {
        let now = self.clock.now();
        self.lock().channels.insert(
            channel.arn.clone(),
            ListedChannel {
                channel,
                tags: Some(tags),
                created_at: now,
            },
        );
    }

    /// How many channels were ever created.
    pub fn created_total(&self) -> u64 {
        self.lock().created_total
    }
}

#[async_trait]
impl<C: Clock + Clone> SignalingChannels for MemoryChannels<C> {
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        let arn = ChannelArn::parse(format!("arn:local:voice:channel/{name}")).map_err(|e| {
            ChannelError::Unavailable(voice_domain::ports::PortFailure::permanent(e.to_string()))
        })?;
        let channel = SignalingChannel {
            name: name.clone(),
            arn: arn.clone(),
        };
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.created_total += 1;
        inner.channels.insert(
            arn,
            ListedChannel {
                channel: channel.clone(),
                tags: Some(tags.clone()),
                created_at: now,
            },
        );
        Ok(channel)
    }

    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        self.lock().channels.remove(&channel.arn);
        Ok(())
    }

    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        _role: ChannelRole,
        _client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        let inner = self.lock();
        if !inner.channels.contains_key(&channel.arn) {
            return Err(ChannelError::NotFound);
        }
        Ok(ChannelEndpoints {
            wss: inner.wss.clone(),
            https: None,
            ice_servers: inner.ice_servers.clone(),
        })
    }

    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        Ok(self.list_now())
    }
}
