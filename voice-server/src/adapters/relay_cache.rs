//! What the relay keeps between signals (see `relay`'s module doc): verified voice tokens per
//! connection and voice rooms as last read. Apart from the relay because the hub holds them
//! (it forgets a closed connection's token; its notifier clears the rooms on every voice event),
//! and the relay uses the hub: neither module imports the other back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use voice_domain::ports::VoiceRoomStore as _;
use voice_domain::{ConnectionId, VoiceRoom, VoiceRoomId};

use crate::adapters::store::ServerStore;
use crate::adapters::token::Claims;

/// The longest a cached voice room is used without reading the store again. Every voice event
/// (join, leave, resume, reconnecting, end, ...) clears the cache at once; this bounds the case
/// where a change reached no connection at all (nobody left in the chat room to tell), which
/// is then no longer stale than a signal racing the change would be by this much.
pub const ROOM_CACHE_TTL: Duration = Duration::from_millis(100);

/// Above this many cached rooms, a new entry first drops the expired ones (rooms nobody
/// signals in any more go away without an event).
const ROOM_CACHE_SWEEP_AT: usize = 1024;

/// Voice rooms as the relay last read them, shared by every connection: one store read (and
/// one clone of the room) per room per change instead of one per signal. Cleared by the
/// notifier on every voice event ([`RoomCache::invalidate_all`]).
#[derive(Clone, Default)]
pub struct RoomCache(Arc<RoomCacheInner>);

#[derive(Default)]
struct RoomCacheInner {
    rooms: Mutex<HashMap<VoiceRoomId, (Arc<VoiceRoom>, Instant)>>,
    /// Bumped by every invalidation: a read that started before one is not cached.
    epoch: AtomicU64,
}

impl RoomCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<VoiceRoomId, (Arc<VoiceRoom>, Instant)>> {
        self.0.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every room: something changed (a voice event is about to be sent).
    pub fn invalidate_all(&self) {
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
        self.lock().clear();
    }

    fn fresh(&self, id: &VoiceRoomId, now: Instant) -> Option<Arc<VoiceRoom>> {
        let rooms = self.lock();
        let (room, at) = rooms.get(id)?;
        (now.saturating_duration_since(*at) < ROOM_CACHE_TTL).then(|| room.clone())
    }

    /// The room from the cache, or read from `store` and cached (unless an invalidation came
    /// in while it was read: then it is used for this signal only).
    pub(crate) async fn get(
        &self,
        store: &ServerStore,
        id: &VoiceRoomId,
    ) -> Result<Option<Arc<VoiceRoom>>, voice_domain::ports::StoreError> {
        let now = Instant::now();
        if let Some(room) = self.fresh(id, now) {
            return Ok(Some(room));
        }
        let epoch = self.0.epoch.load(Ordering::SeqCst);
        let Some(room) = store.get(id).await? else {
            return Ok(None);
        };
        let room = Arc::new(room);
        let mut rooms = self.lock();
        if self.0.epoch.load(Ordering::SeqCst) == epoch {
            if rooms.len() >= ROOM_CACHE_SWEEP_AT {
                rooms.retain(|_, (_, at)| now.saturating_duration_since(*at) < ROOM_CACHE_TTL);
            }
            rooms.insert(id.clone(), (room.clone(), now));
        }
        Ok(Some(room))
    }
}

/// Whether two tokens are equal, in time that depends on their lengths only: eight bytes at a
/// time, no early exit, one `subtle` comparison at the end. (`subtle`'s byte slice comparison
/// hides every byte behind an optimisation barrier: on a ~1 KB token that cost more than the
/// rest of a signal's checks.)
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let diff = a
        .chunks(8)
        .zip(b.chunks(8))
        .fold(0u64, |acc, (x, y)| acc | (word(x) ^ word(y)));
    bool::from(diff.ct_eq(&0))
}

/// A connection's last verified voice token and its claims.
pub(crate) struct VerifiedToken {
    /// The token as the connection sent it.
    pub(crate) token: Box<str>,
    /// Its verified claims.
    pub(crate) claims: Arc<Claims>,
}

/// By connection: the voice token it signals with, verified once, and its claims (see the
/// module doc). Held by the [`Hub`], whose [`Hub::remove`] forgets a closed connection's entry,
/// so it holds no more entries than there are open connections.
#[derive(Clone, Default)]
pub struct TokenCache(Arc<Mutex<HashMap<ConnectionId, VerifiedToken>>>);

impl TokenCache {
    /// The entries, for the relay that fills and reads them.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<ConnectionId, VerifiedToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets `conn`'s token (it closed, or its token expired).
    pub fn forget(&self, conn: &ConnectionId) {
        self.lock().remove(conn);
    }
}
