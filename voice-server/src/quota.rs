//! Limits that span connections (issue 13, finding 4 and 5): a per-connection rate limit is
//! bypassed by opening more connections, and a `hello` without a resume token creates a user
//! row forever. Two budgets close that:
//!
//! - [`UserBudgets`]: frames, bytes and chat messages per *user*, shared by all of that user's
//!   connections, charged after the per-connection bucket (so one user with three tabs gets
//!   what one heavy tab gets, not three times it).
//! - [`SignUps`]: new users per IP address per hour, the [`SignUpGate`] the chat rules ask
//!   before creating a user (nothing is stored when it refuses).
//!
//! Both are bounded maps: entries whose budget has refilled are dropped when the map grows past
//! its cap, so a stream of fresh addresses or users cannot grow them without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chat_domain::SignUpGate;
use voice_domain::{ConnectionId, UserId};

/// Entries kept before refilled ones are pruned (each is a few dozen bytes).
const MAX_ENTRIES: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A per-connection token bucket for incoming frames, so one client cannot flood the relay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Frames a connection may send in a burst.
    pub burst: u32,
    /// Frames per second refilled after a burst.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        // A browser joining a full room trickles tens of ICE candidates per peer at once.
        Self {
            burst: 200,
            per_second: 50.0,
        }
    }
}

/// A token bucket: `burst` frames at once, refilled at `per_second`.
#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `n` tokens are there (taking none).
    pub fn can_take(&mut self, n: u32, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(n)
    }

    /// Takes `n` tokens; call after [`Bucket::can_take`] said they are there.
    pub fn take_n(&mut self, n: u32, now: Instant) {
        self.refill(now);
        self.tokens -= f64::from(n);
    }

    /// Whether the bucket has refilled to its burst (forgetting it loses nothing).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(self.limit.burst)
    }
}

/// Why a frame was refused by a [`UserBudgets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// More frames than the user's connections may send together.
    Frames,
    /// More bytes than the user's connections may send together.
    Bytes,
    /// More chat messages than the user may post. A message is stored and fanned out to every
    /// member of its room, so it costs the server far more than a frame: at the frame budget
    /// one user's messages to a 22-member room doubled a bystander's p99 (BENCHMARKS.md
    /// "One-user floods").
    Messages,
}

/// One user's buckets: frames, bytes, chat messages.
type UserBuckets = (Bucket, Bucket, Bucket);

/// Per-user frame, byte and chat-message buckets, shared by every connection of the user.
#[derive(Debug)]
pub struct UserBudgets {
    frames: RateLimit,
    bytes: RateLimit,
    messages: RateLimit,
    users: Mutex<HashMap<UserId, UserBuckets>>,
}

impl UserBudgets {
    /// Budgets of `frames`, `bytes` and chat `messages` per user.
    pub fn new(frames: RateLimit, bytes: RateLimit, messages: RateLimit) -> Self {
        Self {
            frames,
            bytes,
            messages,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Charges one frame of `len` bytes to `user`, and one chat message if `message`.
    ///
    /// # Errors
    /// [`OverBudget`] when the user's connections together are over a budget; nothing is
    /// charged then.
    pub fn take(
        &self,
        user: &UserId,
        len: usize,
        message: bool,
        now: Instant,
    ) -> Result<(), OverBudget> {
        let mut users = lock(&self.users);
        if users.len() >= MAX_ENTRIES && !users.contains_key(user) {
            users.retain(|_, (f, b, m)| !(f.is_full(now) && b.is_full(now) && m.is_full(now)));
        }
        let (frames, bytes, messages) = users.entry(user.clone()).or_insert_with(|| {
            (
                Bucket::new(self.frames),
                Bucket::new(self.bytes),
                Bucket::new(self.messages),
            )
        });
        let cost = u32::try_from(len).unwrap_or(u32::MAX);
        if !bytes.can_take(cost, now) {
            return Err(OverBudget::Bytes);
        }
        if message && !messages.can_take(1, now) {
            return Err(OverBudget::Messages);
        }
        if !frames.take(now) {
            return Err(OverBudget::Frames);
        }
        bytes.take_n(cost, now);
        if message {
            messages.take_n(1, now);
        }
        Ok(())
    }
}

/// New users per IP address per hour: the self-hosted server's [`SignUpGate`].
#[derive(Debug)]
pub struct SignUps {
    per_hour: u32,
    inner: Mutex<SignUpState>,
}

#[derive(Debug, Default)]
struct SignUpState {
    /// Where each open connection comes from.
    origins: HashMap<ConnectionId, IpAddr>,
    /// The allowance left per address.
    allowances: HashMap<IpAddr, Bucket>,
}

impl SignUps {
    /// At most `per_hour` new users per address in any hour (a burst of `per_hour`, refilled
    /// evenly over the hour).
    pub fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            inner: Mutex::new(SignUpState::default()),
        }
    }

    fn limit(&self) -> RateLimit {
        RateLimit {
            burst: self.per_hour,
            per_second: f64::from(self.per_hour) / Duration::from_secs(3600).as_secs_f64(),
        }
    }

    /// Records that `connection` comes from `ip`, until [`SignUps::detach`].
    pub fn attach(&self, connection: &ConnectionId, ip: IpAddr) {
        lock(&self.inner).origins.insert(connection.clone(), ip);
    }

    /// `connection` closed.
    pub fn detach(&self, connection: &ConnectionId) {
        lock(&self.inner).origins.remove(connection);
    }
}

#[async_trait::async_trait]
impl SignUpGate for SignUps {
    async fn admit(
        &self,
        connection: &ConnectionId,
    ) -> Result<bool, voice_domain::ports::PortFailure> {
        Ok(self.admit_now(connection))
    }
}

impl SignUps {
    /// [`SignUpGate::admit`] without the future (the count is in memory).
    pub fn admit_now(&self, connection: &ConnectionId) -> bool {
        let now = Instant::now();
        let limit = self.limit();
        let mut st = lock(&self.inner);
        let Some(ip) = st.origins.get(connection).copied() else {
            // Not from a socket this server accepted (an embedding's own transport): no address
            // to charge, so the embedding's own limits apply.
            return true;
        };
        if st.allowances.len() >= MAX_ENTRIES && !st.allowances.contains_key(&ip) {
            st.allowances.retain(|_, b| !b.is_full(now));
        }
        st.allowances
            .entry(ip)
            .or_insert_with(|| Bucket::new(limit))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u32) -> ConnectionId {
        ConnectionId::parse(format!("c{n}")).unwrap()
    }

    #[test]
    fn sign_ups_are_counted_per_address_not_per_connection() {
        let gate = SignUps::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for n in 0..3 {
            gate.attach(&conn(n), a);
        }
        gate.attach(&conn(9), b);
        assert!(gate.admit_now(&conn(0)));
        assert!(gate.admit_now(&conn(1)));
        assert!(
            !gate.admit_now(&conn(2)),
            "a third new user from one address in an hour"
        );
        assert!(
            gate.admit_now(&conn(9)),
            "another address has its own allowance"
        );
        assert!(
            gate.admit_now(&conn(77)),
            "a connection of no known address is not charged"
        );
    }

    #[test]
    fn a_user_budget_is_shared_and_refused_frames_cost_nothing() {
        let budgets = UserBudgets::new(
            RateLimit {
                burst: 3,
                per_second: 0.001,
            },
            RateLimit {
                burst: 100,
                per_second: 0.001,
            },
            RateLimit {
                burst: 1,
                per_second: 0.001,
            },
        );
        let now = Instant::now();
        let ann = UserId::parse("ann").unwrap();
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(budgets.take(&ann, 200, false, now), Err(OverBudget::Bytes));
        assert_eq!(budgets.take(&ann, 60, true, now), Ok(()));
        assert_eq!(budgets.take(&ann, 60, false, now), Err(OverBudget::Bytes));
        assert_eq!(budgets.take(&ann, 10, true, now), Err(OverBudget::Messages));
        assert_eq!(budgets.take(&ann, 10, false, now), Ok(()));
        assert_eq!(budgets.take(&ann, 10, false, now), Ok(()));
        assert_eq!(budgets.take(&ann, 10, false, now), Err(OverBudget::Frames));
        assert_eq!(
            budgets.take(&bob, 10, true, now),
            Ok(()),
            "budgets are per user"
        );
    }
}
