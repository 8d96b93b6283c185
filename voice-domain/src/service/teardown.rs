//! The deployment's teardown: when the deployment itself is being deleted (on AWS, the stack's
//! `Custom::ChannelDrain` resource receives CloudFormation's `Delete`), every signaling channel
//! it created is deleted, pooled or held. Signaling channels are not stack resources: without
//! this, `sam delete` left the pool's channels behind, counting against the account's channel
//! quota, and the table that listed them was gone (issue 14).

use futures_util::stream::{self, StreamExt};
use tracing::{info, warn};

use super::VoiceService;
use crate::errors::TeardownError;
use crate::pool::{ChannelPool, PoolSlot};
use crate::ports::{Ports, SignalingChannels};

/// How many channels are deleted at once. KVS's `DeleteSignalingChannel` is limited per
/// channel (5 TPS), not per account in the documented quotas, so a few in flight is safe and
/// a pool of hundreds goes within the function's timeout.
const TEARDOWN_CONCURRENCY: usize = 8;

/// What a teardown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Channels of this deployment deleted (held, pooled or orphaned).
    pub channels_deleted: usize,
    /// Free pool entries forgotten (their channel deleted).
    pub pool_entries_evicted: usize,
    /// Channels that could not be deleted; they are left for the operator (the documented
    /// manual step) and named in the log.
    pub failures: usize,
}

impl<P: Ports> VoiceService<P> {
    /// Deletes every signaling channel this deployment created (the signaling service lists
    /// only those tagged as this deployment's) and forgets the pool's free entries. For the
    /// deployment's deletion only: voice in progress loses its channels. A channel that cannot
    /// be deleted is logged and counted, never retried here: the caller is bounded in time and
    /// must answer (CloudFormation waits up to an hour for a custom resource that does not).
    ///
    /// # Errors
    /// [`TeardownError`] when the channels (or the pool) cannot be listed at all.
    #[tracing::instrument(skip_all)]
    pub async fn teardown(&self) -> Result<TeardownReport, TeardownError> {
        let mut report = TeardownReport::default();
        let listed = self.ports.channels.list().await?;
        let pooled = if self.ports.pool.is_pooling() {
            self.ports.pool.list().await?
        } else {
            Vec::new()
        };
        let channels = &self.ports.channels;
        let mut deletions = stream::iter(listed.into_iter().map(move |l| async move {
            let result = channels.delete(&l.channel).await;
            (l, result)
        }))
        .buffer_unordered(TEARDOWN_CONCURRENCY);
        let mut deleted = std::collections::HashSet::new();
        while let Some((l, result)) = deletions.next().await {
            match result {
                Ok(()) => {
                    report.channels_deleted += 1;
                    deleted.insert(l.channel.arn.clone());
                }
                Err(e) => {
                    warn!(error = %e, channel = %l.channel.name, "teardown could not delete a channel; delete it by hand");
                    report.failures += 1;
                }
            }
        }
        drop(deletions);
        for p in &pooled {
            if let PoolSlot::Free { released_at, .. } = &p.slot {
                if !deleted.contains(&p.channel.arn) {
                    continue;
                }
                match self.ports.pool.evict(&p.channel, *released_at).await {
                    Ok(true) => report.pool_entries_evicted += 1,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %e, channel = %p.channel.name, "teardown could not forget a pool entry");
                        report.failures += 1;
                    }
                }
            }
        }
        info!(
            channels_deleted = report.channels_deleted,
            pool_entries_evicted = report.pool_entries_evicted,
            failures = report.failures,
            "teardown done"
        );
        Ok(report)
    }
}
