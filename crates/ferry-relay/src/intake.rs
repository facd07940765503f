//! What both feeds (database and Kafka) do with what they read: wait while the log is full,
//! store messages with their checkpoints in one transaction, count them, wake the workers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::Result;
use tokio::sync::Notify;

use crate::log::{DeliveryLog, NewMessage};
use crate::metrics::Metrics;

/// Undelivered messages at which reading pauses, so that a dead endpoint cannot fill the disk
/// faster than retention empties it.
pub const MAX_PENDING: u64 = 200_000;

#[derive(Clone)]
pub struct Intake {
    pub log: DeliveryLog,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
}

impl Intake {
    /// Returns once fewer than [`MAX_PENDING`] messages wait for delivery.
    pub async fn wait_for_room(&self) -> Result<()> {
        while self.metrics.pending.load(AtomicOrdering::Relaxed) >= MAX_PENDING {
            let pending = self.log.pending().await?;
            self.metrics.pending.store(pending, AtomicOrdering::Relaxed);
            if pending < MAX_PENDING {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stores `messages` and `checkpoints` in one transaction, then counts them and wakes the
    /// workers.
    pub async fn store(
        &self,
        messages: Vec<NewMessage>,
        checkpoints: Vec<(String, String)>,
    ) -> Result<()> {
        if messages.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        let count = messages.len() as u64;
        let mut per_route: BTreeMap<String, u64> = BTreeMap::new();
        for message in &messages {
            *per_route.entry(message.route.clone()).or_default() += 1;
        }
        self.log.ingest(messages, checkpoints).await?;
        for (route, total) in per_route {
            self.metrics
                .route(&route)
                .ingested
                .fetch_add(total, AtomicOrdering::Relaxed);
        }
        if count > 0 {
            self.metrics
                .pending
                .fetch_add(count, AtomicOrdering::Relaxed);
            self.wake.notify_waiters();
        }
        Ok(())
    }
}
