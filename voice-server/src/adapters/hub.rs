//! The connection hub: every open WebSocket's bounded outgoing queue, by connection id. Replies,
//! chat events, voice events and relayed signals all go through it to the connection's writer
//! task, so a slow client never stalls anyone else: when its queue is full (in messages or in
//! bytes, whichever comes first) it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};
use tracing::warn;
use voice_domain::ports::{Notifier, NotifyError};
use voice_domain::protocol::EventEnvelope;
use voice_domain::{ConnectionId, VoiceEvent};

use crate::adapters::relay_cache::{RoomCache, TokenCache};

/// A one-shot, many-waiter signal: "stop now". Used for one connection (dropped as too slow)
/// and for the whole server (shutdown).
#[derive(Clone, Default, Debug)]
pub struct Trigger(Arc<TriggerInner>);

#[derive(Default, Debug)]
struct TriggerInner {
    fired: AtomicBool,
    notify: Notify,
}

impl Trigger {
    /// An unfired trigger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires it; every current and future waiter returns.
    pub fn fire(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether it has fired.
    pub fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Returns once it has fired.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or unknown.
    #[error("connection is gone")]
    Gone,
    /// Its queue was full; it has been dropped.
    #[error("connection was too slow and has been dropped")]
    Dropped,
}

struct Entry {
    tx: mpsc::Sender<String>,
    kill: Trigger,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving end of one connection's queue, for its writer task: messages, and the count
/// of bytes still queued (decremented as each message is taken).
pub struct Outbox {
    rx: mpsc::Receiver<String>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// The next queued message; `None` once the connection was removed and all is drained.
    pub async fn recv(&mut self) -> Option<String> {
        let m = self.rx.recv().await;
        if let Some(text) = &m {
            self.taken(text.len());
        }
        m
    }

    fn taken(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::SeqCst);
        crate::metrics::queued_bytes(-i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// A queued message if there is one, without waiting.
    pub fn try_recv(&mut self) -> Option<String> {
        let text = self.rx.try_recv().ok()?;
        self.taken(text.len());
        Some(text)
    }

    /// Bytes queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

impl Drop for Outbox {
    /// What was never sent is freed with the queue (the connection is gone).
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(text) = self.rx.try_recv() {
            self.taken(text.len());
        }
    }
}

/// How much one connection may have queued before it is dropped as too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    /// Messages.
    pub messages: usize,
    /// Bytes (the sum of the queued frames' lengths).
    pub bytes: usize,
}

/// Open connections and their queues. Clones share them.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HashMap<ConnectionId, Entry>>>,
    count_changed: Arc<Notify>,
    sessions: Arc<AtomicUsize>,
    /// The relay's voice rooms, here because the notifier, which sees every voice event,
    /// must clear them.
    voice_rooms: RoomCache,
    /// The relay's verified voice tokens by connection, here so that [`Hub::remove`] forgets
    /// a closed connection's.
    voice_tokens: TokenCache,
}

/// Held by a connection task for its whole life, clean-up included (see [`Hub::session`]).
#[must_use = "the session ends when this is dropped"]
pub struct Session {
    sessions: Arc<AtomicUsize>,
    count_changed: Arc<Notify>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::SeqCst);
        self.count_changed.notify_waiters();
    }
}

impl Hub {
    /// No connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The relay's cache of voice rooms, cleared by [`HubNotifier`] on every voice event.
    pub fn voice_rooms(&self) -> &RoomCache {
        &self.voice_rooms
    }

    /// The relay's verified voice tokens, forgotten by [`Hub::remove`].
    pub fn voice_tokens(&self) -> &TokenCache {
        &self.voice_tokens
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConnectionId, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection with a queue bounded by `limit`; returns the receiving end for
    /// its writer task and the trigger that fires when it must be dropped.
    pub fn register(&self, id: ConnectionId, limit: QueueLimit) -> (Outbox, Trigger) {
        let (tx, rx) = mpsc::channel(limit.messages.max(1));
        let kill = Trigger::new();
        let queued = Arc::new(AtomicUsize::new(0));
        self.lock().insert(
            id,
            Entry {
                tx,
                kill: kill.clone(),
                queued: queued.clone(),
                max_bytes: limit.bytes,
            },
        );
        (Outbox { rx, queued }, kill)
    }

    /// Bytes queued for every open connection together (what slow readers hold in memory).
    pub fn queued_bytes(&self) -> usize {
        self.lock()
            .values()
            .map(|e| e.queued.load(Ordering::SeqCst))
            .sum()
    }

    /// Forgets a connection (its socket closed).
    pub fn remove(&self, id: &ConnectionId) {
        self.lock().remove(id);
        self.voice_tokens.forget(id);
        self.count_changed.notify_waiters();
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns once no connection is open.
    pub async fn wait_empty(&self) {
        self.wait_until(|| self.is_empty()).await;
    }

    /// Starts a connection task's session: the task holds it from before it registers until
    /// after its disconnect clean-up (leaving voice rooms) is done, which is later than
    /// [`Hub::remove`]. Shutdown waits for sessions with [`Hub::wait_idle`], so a clean stop does
    /// not exit in the middle of that clean-up.
    pub fn session(&self) -> Session {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        Session {
            sessions: self.sessions.clone(),
            count_changed: self.count_changed.clone(),
        }
    }

    /// How many connection tasks hold a [`Session`].
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Returns once no connection is open and every connection task has finished its clean-up.
    pub async fn wait_idle(&self) {
        self.wait_until(|| self.is_empty() && self.sessions() == 0)
            .await;
    }

    async fn wait_until(&self, done: impl Fn() -> bool) {
        loop {
            let changed = self.count_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done() {
                return;
            }
            changed.await;
        }
    }

    /// Queues `text` for `to` without waiting. A full queue (too many messages, or more bytes
    /// than its limit with this one) drops the connection: it is removed and told to close,
    /// and [`SendError::Dropped`] returned. A single message larger than the byte limit is
    /// still queued on an empty queue, so a big reply reaches a client that keeps up.
    ///
    /// # Errors
    /// [`SendError`].
    pub fn send(&self, to: &ConnectionId, text: String) -> Result<(), SendError> {
        let mut map = self.lock();
        let Some(entry) = map.get(to) else {
            return Err(SendError::Gone);
        };
        let len = text.len();
        let before = entry.queued.load(Ordering::SeqCst);
        let over_bytes = before > 0 && before + len > entry.max_bytes;
        let sent = if over_bytes {
            Err(mpsc::error::TrySendError::Full(text))
        } else {
            entry.queued.fetch_add(len, Ordering::SeqCst);
            let sent = entry.tx.try_send(text);
            match &sent {
                Ok(()) => crate::metrics::queued_bytes(i64::try_from(len).unwrap_or(i64::MAX)),
                Err(_) => {
                    entry.queued.fetch_sub(len, Ordering::SeqCst);
                }
            }
            sent
        };
        match sent {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                map.remove(to);
                drop(map);
                self.count_changed.notify_waiters();
                Err(SendError::Gone)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(entry) = map.remove(to) {
                    entry.kill.fire();
                }
                drop(map);
                self.count_changed.notify_waiters();
                crate::metrics::slow_reader_closed();
                warn!(
                    connection_id = %to,
                    queued_bytes = before,
                    "outgoing queue full; dropping the slow connection (close 1008)"
                );
                Err(SendError::Dropped)
            }
        }
    }

    /// Serialises `value` and queues it for `to`.
    ///
    /// # Errors
    /// [`SendError`].
    pub fn send_json(
        &self,
        to: &ConnectionId,
        value: &impl serde::Serialize,
    ) -> Result<(), SendError> {
        let text = serde_json::to_string(value).expect("wire types always serialise");
        self.send(to, text)
    }
}

/// The [`Notifier`] port over the hub: voice events as `{"type":"event",...}` frames.
#[derive(Clone)]
pub struct HubNotifier {
    hub: Hub,
}

impl HubNotifier {
    /// A notifier pushing through `hub`.
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl Notifier for HubNotifier {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        // The room changed (every voice event is about a stored change): the relay reads it
        // again before the next signal, at the latest before anyone hears of the change.
        self.hub.voice_rooms().invalidate_all();
        // A dropped connection is gone as far as voice is concerned: the service removes it
        // from its room right away instead of waiting for the socket to close.
        self.hub
            .send_json(to, &EventEnvelope::new(event))
            .map_err(|_| NotifyError::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(s: &str) -> ConnectionId {
        ConnectionId::parse(s).unwrap()
    }

    fn limit(messages: usize, bytes: usize) -> QueueLimit {
        QueueLimit { messages, bytes }
    }

    #[tokio::test]
    async fn a_queue_is_bounded_in_bytes_and_frees_them_as_they_are_taken() {
        let hub = Hub::new();
        let (mut rx, kill) = hub.register(conn("c"), limit(100, 10));
        // One message larger than the limit still goes to an empty queue.
        hub.send(&conn("c"), "x".repeat(25)).unwrap();
        assert_eq!(rx.queued_bytes(), 25);
        assert_eq!(rx.recv().await.map(|t| t.len()), Some(25));
        assert_eq!(rx.queued_bytes(), 0);
        hub.send(&conn("c"), "x".repeat(6)).unwrap();
        assert_eq!(hub.queued_bytes(), 6);
        assert_eq!(hub.send(&conn("c"), "y".repeat(6)), Err(SendError::Dropped));
        assert!(kill.is_fired());
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_drops_only_the_slow_connection() {
        let hub = Hub::new();
        let (mut fast_rx, _) = hub.register(conn("fast"), limit(2, 1 << 20));
        let (_slow_rx, slow_kill) = hub.register(conn("slow"), limit(2, 1 << 20));
        for i in 0..2 {
            hub.send(&conn("slow"), format!("{i}")).unwrap();
        }
        assert_eq!(hub.send(&conn("slow"), "x".into()), Err(SendError::Dropped));
        assert!(slow_kill.is_fired());
        assert_eq!(hub.send(&conn("slow"), "y".into()), Err(SendError::Gone));
        hub.send(&conn("fast"), "hello".into()).unwrap();
        assert_eq!(fast_rx.recv().await.as_deref(), Some("hello"));
        assert_eq!(hub.len(), 1);
    }

    #[tokio::test]
    async fn notifier_reports_closed_connections_gone() {
        let hub = Hub::new();
        let (rx, _) = hub.register(conn("c"), limit(4, 1024));
        drop(rx);
        let ev = VoiceEvent::VoiceEnded {
            voice_room_id: voice_domain::VoiceRoomId::parse("v").unwrap(),
            chat_room_id: voice_domain::ChatRoomId::parse("r").unwrap(),
            reason: voice_domain::room::EndReason::Abandoned,
        };
        let n = HubNotifier::new(hub.clone());
        assert_eq!(n.send(&conn("c"), &ev).await, Err(NotifyError::Gone));
        assert_eq!(n.send(&conn("nobody"), &ev).await, Err(NotifyError::Gone));
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn idle_waits_for_sessions_after_their_connections_are_removed() {
        let hub = Hub::new();
        let session = hub.session();
        let _rx = hub.register(conn("c"), limit(4, 1024));
        hub.remove(&conn("c"));
        hub.wait_empty().await;
        let idle = tokio::spawn({
            let hub = hub.clone();
            async move { hub.wait_idle().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!idle.is_finished(), "a session is still cleaning up");
        assert_eq!(hub.sessions(), 1);
        drop(session);
        tokio::time::timeout(std::time::Duration::from_secs(5), idle)
            .await
            .expect("idle once the session ends")
            .unwrap();
        assert_eq!(hub.sessions(), 0);
    }

    #[tokio::test]
    async fn trigger_wakes_waiters_before_and_after_firing() {
        let t = Trigger::new();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait().await }
        });
        tokio::task::yield_now().await;
        t.fire();
        waiter.await.unwrap();
        t.wait().await;
    }
}
