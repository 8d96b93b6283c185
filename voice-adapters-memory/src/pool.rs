//! [`ChannelPool`] in memory: the pool's contract without a database, for a library user who
//! pools its own channels in one process, and for tests of the service with pooling on.
//!
//! One mutex makes every claim atomic (the DynamoDB pool gets the same from conditional
//! writes). The self-hosted server does not use it: its relay's channels cost nothing, so it
//! runs with `NoPool`.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use voice_domain::pool::{
    ChannelLease, ChannelPool, LeaseHolder, PoolError, PoolSlot, PooledChannel,
};
use voice_domain::{ChannelArn, SignalingChannel, Timestamp, VoiceRoomId};

/// Pooled channels in memory. Cheap to clone; clones share the pool.
#[derive(Debug, Clone, Default)]
pub struct MemoryPool {
    channels: Arc<Mutex<Vec<PooledChannel>>>,
}

impl MemoryPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of the pool, for tests.
    pub fn snapshot(&self) -> Vec<PooledChannel> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<PooledChannel>> {
        // A panic while holding the lock cannot leave a half-written slot (each change is one
        // assignment), so the data is still good.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The claimable channel the pool hands out first at `now`: the most recently freed one, so
/// that surplus channels stay idle and are evicted.
fn best(pool: &[PooledChannel], now: Timestamp) -> Option<usize> {
    pool.iter()
        .enumerate()
        .filter_map(|(i, p)| match p.slot {
            PoolSlot::Free { free_from, .. } if free_from <= now => Some((free_from, i)),
            _ => None,
        })
        .max()
        .map(|(_, i)| i)
}

/// Records `pool[i]` as held by `holder` since `now`; the lease and the slot it was in.
fn take(
    pool: &mut [PooledChannel],
    i: usize,
    holder: &LeaseHolder,
    now: Timestamp,
) -> (ChannelLease, PoolSlot) {
    let was = std::mem::replace(
        &mut pool[i].slot,
        PoolSlot::Held {
            holder: holder.clone(),
            claimed_at: now,
        },
    );
    let lease = ChannelLease {
        channel: pool[i].channel.clone(),
        holder: holder.clone(),
        claimed_at: now,
    };
    (lease, was)
}

#[async_trait]
impl ChannelPool for MemoryPool {
    fn is_pooling(&self) -> bool {
        true
    }

    async fn claim(
        &self,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        let mut pool = self.lock();
        let Some(i) = best(&pool, now) else {
            return Ok(None);
        };
        Ok(Some(take(&mut pool, i, holder, now)))
    }

    async fn find(&self, now: Timestamp) -> Result<Option<ChannelArn>, PoolError> {
        let pool = self.lock();
        Ok(best(&pool, now).map(|i| pool[i].channel.arn.clone()))
    }

    async fn claim_found(
        &self,
        arn: &ChannelArn,
        holder: &LeaseHolder,
        now: Timestamp,
    ) -> Result<Option<(ChannelLease, PoolSlot)>, PoolError> {
        let mut pool = self.lock();
        let Some(i) = pool.iter().position(|p| {
            p.channel.arn == *arn
                && matches!(p.slot, PoolSlot::Free { free_from, .. } if free_from <= now)
        }) else {
            return Ok(None);
        };
        Ok(Some(take(&mut pool, i, holder, now)))
    }

    async fn add(&self, lease: &ChannelLease) -> Result<(), PoolError> {
        let mut pool = self.lock();
        let slot = PoolSlot::Held {
            holder: lease.holder.clone(),
            claimed_at: lease.claimed_at,
        };
        match pool.iter_mut().find(|p| p.channel == lease.channel) {
            // A retried add of the same lease.
            Some(p) => p.slot = slot,
            None => pool.push(PooledChannel {
                channel: lease.channel.clone(),
                slot,
            }),
        }
        Ok(())
    }

    async fn release(
        &self,
        channel: &SignalingChannel,
        voice_room: &VoiceRoomId,
        released_at: Timestamp,
        free_from: Timestamp,
    ) -> Result<(), PoolError> {
        let mut pool = self.lock();
        let p = pool
            .iter_mut()
            .find(|p| p.channel == *channel)
            .ok_or(PoolError::NotHeld)?;
        match &p.slot {
            PoolSlot::Held { holder, .. } if holder.voice_room == *voice_room => {
                p.slot = PoolSlot::Free {
                    released_at,
                    free_from,
                };
                Ok(())
            }
            _ => Err(PoolError::NotHeld),
        }
    }

    async fn list(&self) -> Result<Vec<PooledChannel>, PoolError> {
        Ok(self.snapshot())
    }

    async fn evict(
        &self,
        channel: &SignalingChannel,
        released_at: Timestamp,
    ) -> Result<bool, PoolError> {
        let mut pool = self.lock();
        let before = pool.len();
        pool.retain(|p| {
            !(p.channel == *channel
                && matches!(p.slot, PoolSlot::Free { released_at: r, .. } if r == released_at))
        });
        Ok(pool.len() < before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_pool_keeps_the_pool_contract() {
        futures::executor::block_on(voice_domain::contract::pool_contract(
            &MemoryPool::new(),
            "mem",
        ));
    }
}
