//! Pooled signaling channels: why and when a channel may pass from one participant to another.
//!
//! Kinesis Video Streams bills $0.03 per *active signaling channel per month*, and a channel
//! counts as active for the whole month if anything connects to it once. A new channel per join
//! makes the bill grow with joins; deleting and re-creating also makes every join wait for
//! `CreateSignalingChannel` (asynchronous: seconds until `ACTIVE`). Keeping released channels
//! and handing them to later participants makes the bill follow the peak number of channels in
//! use at once, and makes a join in steady state claim an `ACTIVE` channel without waiting.
//!
//! The danger of reuse: credentials issued for a channel (its master's, and every viewer's who
//! was in the room) stay usable after their holder leaves, until they expire, and a signaling
//! connection opened with them just before expiry lives on for KVS's connection cap. Handed to a
//! new holder too early, the channel would let a former participant connect as master (a second
//! master replaces the first) or as viewer, and listen to the new holder's room.
//!
//! Architecture invariant: a released channel is not handed to a new holder before every
//! credential issued for it while it was held can no longer be used: it stays in *quarantine*
//! until `released_at + credential TTL + session cap + margin` ([`LeasePolicy::free_from`]).
//! That rule is here, in the domain; an adapter only stores the instant the domain computed and
//! claims atomically among channels whose instant has passed. `voice-domain/tests/pool_model.rs`
//! checks it against command sequences.

use std::time::Duration;

use async_trait::async_trait;

use crate::failure::PortFailure;
use crate::ids::{ChannelArn, UserId, VoiceRoomId};
use crate::room::SignalingChannel;
use crate::time::Timestamp;

/// Added to every quarantine: covers clocks that differ between the instances that release and
/// claim (Lambda instances are NTP-synchronised to milliseconds; a minute is generous) and the
/// time between the credential issuer's clock and ours.
pub const QUARANTINE_MARGIN: Duration = Duration::from_secs(60);

/// KVS's cap on one signaling connection's life (one hour): a connection opened with credentials
/// a moment before they expire stays open that long, since KVS checks credentials when a
/// connection opens, not while it lasts.
pub const KVS_SESSION_CAP: Duration = Duration::from_secs(3600);

/// How long a free channel may sit unused before the sweep deletes it (seven days): long enough
/// that a weekly meeting finds its channels, short enough that a one-off peak stops being billed
/// the month after.
pub const DEFAULT_IDLE_EVICTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who holds a pooled channel: the participant of a voice room it was claimed for. The voice
/// room is what a release is checked against (a late release from a room that no longer holds
/// the channel changes nothing); the user is for the sweep's and the operator's eyes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseHolder {
    /// The voice room.
    pub voice_room: VoiceRoomId,
    /// The participant.
    pub user: UserId,
}

/// A channel handed to one holder, from a claim or a creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelLease {
    /// The channel, `ACTIVE`.
    pub channel: SignalingChannel,
    /// Who holds it.
    pub holder: LeaseHolder,
    /// When it was claimed: the sweep leaves young leases alone, as a join may be about to
    /// record its participant.
    pub claimed_at: Timestamp,
}

/// What the pool knows about one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSlot {
    /// Held by a participant (or by a join in flight).
    Held {
        /// Who.
        holder: LeaseHolder,
        /// Since when.
        claimed_at: Timestamp,
    },
    /// Free: in quarantine until `free_from`, claimable from then on.
    Free {
        /// When it was released (the idle clock starts here).
        released_at: Timestamp,
        /// The end of its quarantine, as computed by [`LeasePolicy::free_from`].
        free_from: Timestamp,
    },
}

/// One channel of the pool, as listed for the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledChannel {
    /// The channel.
    pub channel: SignalingChannel,
    /// Held or free.
    pub slot: PoolSlot,
}

/// How long released channels wait before reuse, and how long unused ones are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// The longest credentials the service issues ([`ServiceConfig::credential_ttl`]).
    ///
    /// [`ServiceConfig::credential_ttl`]: crate::service::ServiceConfig::credential_ttl
    pub credential_ttl: Duration,
    /// How long a signaling connection opened with a credential may outlive it
    /// ([`KVS_SESSION_CAP`] on KVS).
    pub session_cap: Duration,
    /// [`QUARANTINE_MARGIN`] unless a deployment knows better.
    pub margin: Duration,
    /// How long a free channel is kept unused before the sweep deletes it.
    pub idle_eviction: Duration,
}

impl LeasePolicy {
    /// The policy for KVS channels and credentials that live `credential_ttl`: quarantine =
    /// `credential_ttl` + [`KVS_SESSION_CAP`] + [`QUARANTINE_MARGIN`], idle eviction after
    /// [`DEFAULT_IDLE_EVICTION`].
    pub fn kvs(credential_ttl: Duration) -> Self {
        Self {
            credential_ttl,
            session_cap: KVS_SESSION_CAP,
            margin: QUARANTINE_MARGIN,
            idle_eviction: DEFAULT_IDLE_EVICTION,
        }
    }

    /// The same policy with another idle eviction (the template's `ChannelPoolIdleHours`).
    #[must_use]
    pub fn with_idle_eviction(mut self, idle: Duration) -> Self {
        self.idle_eviction = idle;
        self
    }

    /// How long a released channel waits before it may be claimed again.
    pub fn quarantine(&self) -> Duration {
        self.credential_ttl
            .saturating_add(self.session_cap)
            .saturating_add(self.margin)
    }

    /// When a channel released at `released_at` may be claimed again. `delivered` says whether
    /// credentials naming it may have reached anyone: a channel claimed by a join that failed
    /// before replying (its credentials were dropped unsent, and no other participant's plan
    /// named it) is free at once; any other release is quarantined.
    pub fn free_from(&self, released_at: Timestamp, delivered: bool) -> Timestamp {
        if delivered {
            released_at.plus(self.quarantine())
        } else {
            released_at
        }
    }

    /// Whether a channel in `slot` may be claimed at `now`.
    pub fn claimable(&self, slot: &PoolSlot, now: Timestamp) -> bool {
        matches!(slot, PoolSlot::Free { free_from, .. } if *free_from <= now)
    }

    /// Whether a channel in `slot` has been free and unused long enough to be deleted at `now`.
    pub fn idle(&self, slot: &PoolSlot, now: Timestamp) -> bool {
        matches!(slot, PoolSlot::Free { released_at, free_from }
            if *free_from <= now && now.since(*released_at) >= self.idle_eviction)
    }
}

/// Errors of the [`ChannelPool`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `release` found the channel not held by that voice room (released already, or never
    /// added): nothing was changed.
    #[error("the channel is not held by that voice room")]
    NotHeld,
    /// The pool could not answer.
    #[error(transparent)]
    Unavailable(#[from] PortFailure),
}

/// Released signaling channels kept for reuse, one adapter of a deployment's [`Ports`].
///
/// The pool only stores and claims; when a channel may be claimed is decided by
/// [`LeasePolicy`], which the service applies.
///
/// [`Ports`]: crate::ports::Ports
#[async_trait]
pub trait ChannelPool: Send + Sync + 'static {
    /// Whether this pool keeps channels. When `false` ([`NoPool`]) the service deletes released
    /// channels and creates one per participant, as without a pool.
    fn is_pooling(&self) -> bool;

    /// Takes one free channel whose quarantine has ended (`free_from <= now`) and records it as
    /// held by `holder` since `now`, atomically: two concurrent claims never get the same
    /// channel. `None` when no channel is claimable. Returns the lease and the slot it was
    /// taken from, so that the service can check the rule.
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError>;

    /// The channel [`Self::claim`] would take at `now` (the most recently freed one whose
    /// quarantine has ended), without taking it: a read, which changes nothing, so that a join
    /// can look for a candidate before it knows whether the caller may join at all (issue 14:
    /// the look-up runs beside the first reads, the [`Self::claim_found`] beside the gate).
    /// `None` when no channel is claimable. The answer may be stale by the time it is used
    /// (another claim took the channel, or it was evicted); [`Self::claim_found`] checks again.
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError>;

    /// Takes the channel `arn` (a candidate from [`Self::find`]) for `holder` if, at the time
    /// of the write, it is still free and its quarantine has ended by `now`, atomically, as
    /// [`Self::claim`] does: two concurrent claims never get the same channel. `None` when it
    /// is not (taken by someone else meanwhile, evicted, or not in the pool): the caller
    /// falls back to [`Self::claim`] (or creates a channel). Returns the lease and the slot it
    /// was taken from, as [`Self::claim`].
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError>;

    /// Records a channel just created for `lease.holder` as held by it.
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError>;

    /// Marks `channel`, if held by `voice_room`, free from `free_from` (released at
    /// `released_at`).
    ///
    /// # Errors
    /// [`PoolError::NotHeld`] if it is not held by that voice room; [`PoolError::Unavailable`].
    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError>;

    /// Every channel of the pool, for the sweep.
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError>;

    /// Forgets `channel` if it is still free and was released at `released_at` (so a claim that
    /// came first wins). `false` when it was not (claimed since, or gone).
    ///
    /// # Errors
    /// [`PoolError::Unavailable`].
    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError>;
}

/// No pool: every participant gets a new channel, deleted when it is released. The self-hosted
/// relay's channels cost nothing and are created instantly, so it keeps the simpler rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoPool;

#[async_trait]
impl ChannelPool for NoPool {
    fn is_pooling(&self) -> bool {
        false
    }

    async fn claim(
        &self,
        _holder: &LeaseHolder,
        _now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        Ok(None)
    }

    async fn find(&self, _now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        Ok(None)
    }

    async fn claim_found(
        &self,
        _arn: &ChannelArn,
        _holder: &LeaseHolder,
        _now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        Ok(None)
    }

    async fn add(&self, _lease: &ChannelLease) -> Result<(), PoolError> {
        Ok(())
    }

    async fn release(
        &self,
        _channel: &SignalingChannel,
        _voice_room: &VoiceRoomId,
        _released_at: Timestamp,
        _free_from: Timestamp,
    ) -> Result<(), PoolError> {
        Err(PoolError::NotHeld)
    }

    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        Ok(Vec::new())
    }

    async fn evict(
        &self,
        _channel: &SignalingChannel,
        _released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        Ok(false)
    }
}

/// A pool that a deployment may or may not configure (the Lambda's optional
/// `CHANNEL_POOL_TABLE`): `None` behaves as [`NoPool`].
#[async_trait]
impl<P: ChannelPool> ChannelPool for Option<P> {
    fn is_pooling(&self) -> bool {
        self.as_ref().is_some_and(ChannelPool::is_pooling)
    }

    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        match self {
            Some(p) => p.claim(holder, now).await,
            None => NoPool.claim(holder, now).await,
        }
    }

    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        match self {
            Some(p) => p.find(now).await,
            None => NoPool.find(now).await,
        }
    }

    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        match self {
            Some(p) => p.claim_found(arn, holder, now).await,
            None => NoPool.claim_found(arn, holder, now).await,
        }
    }

    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError> {
        match self {
            Some(p) => p.add(lease).await,
            None => NoPool.add(lease).await,
        }
    }

    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError> {
        match self {
            Some(p) => p.release(channel, voice_room, released_at, free_from).await,
            None => {
                NoPool
                    .release(channel, voice_room, released_at, free_from)
                    .await
            }
        }
    }

    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        match self {
            Some(p) => p.list().await,
            None => NoPool.list().await,
        }
    }

    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        match self {
            Some(p) => p.evict(channel, released_at).await,
            None => NoPool.evict(channel, released_at).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn quarantine_covers_ttl_session_cap_and_margin() {
        let p = LeasePolicy::kvs(H);
        assert_eq!(p.quarantine(), H + KVS_SESSION_CAP + QUARANTINE_MARGIN);
        let t = Timestamp::from_millis(1_000);
        assert_eq!(p.free_from(t, true), t.plus(p.quarantine()));
        assert_eq!(p.free_from(t, false), t);
    }

    #[test]
    fn only_free_channels_past_quarantine_are_claimable() {
        let p = LeasePolicy::kvs(H);
        let released_at = Timestamp::from_millis(0);
        let free_from = p.free_from(released_at, true);
        let slot = PoolSlot::Free {
            released_at,
            free_from,
        };
        assert!(!p.claimable(&slot, Timestamp::from_millis(free_from.as_millis() - 1)));
        assert!(p.claimable(&slot, free_from));
        let held = PoolSlot::Held {
            holder: LeaseHolder {
                voice_room: VoiceRoomId::parse("vr").unwrap(),
                user: UserId::parse("u").unwrap(),
            },
            claimed_at: released_at,
        };
        assert!(!p.claimable(&held, free_from.plus(H * 100)));
        assert!(!p.idle(&held, free_from.plus(H * 1000)));
    }

    #[test]
    fn idle_counts_from_release() {
        let p = LeasePolicy::kvs(H).with_idle_eviction(H * 24);
        let released_at = Timestamp::from_millis(0);
        let slot = PoolSlot::Free {
            released_at,
            free_from: p.free_from(released_at, true),
        };
        assert!(!p.idle(&slot, released_at.plus(H * 23)));
        assert!(p.idle(&slot, released_at.plus(H * 24)));
    }
}
