//! Notifications in memory: an outbox per connection. A connection can be marked gone, after
//! which sending to it reports [`NotifyError::Gone`], as API Gateway does for a closed socket.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_domain::ports::{Notifier, NotifyError};
use voice_domain::{ConnectionId, VoiceEvent};

#[derive(Default)]
struct Inner {
    outbox: HashMap<ConnectionId, Vec<VoiceEvent>>,
    gone: HashSet<ConnectionId>,
}

/// Outboxes per connection. Clones share them.
#[derive(Clone, Default)]
pub struct MemoryNotifier {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryNotifier {
    /// Empty outboxes.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes (and clears) what was sent to `connection`.
    pub fn take(&self, connection: &ConnectionId) -> Vec<VoiceEvent> {
        self.lock().outbox.remove(connection).unwrap_or_default()
    }

    /// From now on, sending to `connection` reports it gone.
    pub fn mark_gone(&self, connection: ConnectionId) {
        self.lock().gone.insert(connection);
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        let mut inner = self.lock();
        if inner.gone.contains(to) {
            return Err(NotifyError::Gone);
        }
        inner
            .outbox
            .entry(to.clone())
            .or_default()
            .push(event.clone());
        Ok(())
    }
}
