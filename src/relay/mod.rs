//! The relay: takes committed outbox events in batches and hands them to the
//! bus, marking them published only once the bus has durably taken them.
//!
//! It wakes on the outbox's NOTIFY, with a slow safety poll. Claimed rows stay
//! locked until the batch is marked, so a crash mid-batch leaves them
//! unpublished for the next attempt (the projector is idempotent).

pub mod bus;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::config::RelayWake;
use crate::monitoring::PipelineStats;
use crate::outbox;
use crate::shutdown::Shutdown;
use bus::Bus;

pub struct Relay {
    db: PgPool,
    bus: Arc<dyn Bus>,
    batch_size: i64,
    safety_poll: Duration,
    wake: RelayWake,
    /// The last batch, for `/status`.
    stats: Arc<PipelineStats>,
}

// Short enough that the pipeline notices a recovered dependency within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How soon a lost LISTEN connection is tried again once the database answers.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// Every relay batch holds this advisory lock shared, from its first
/// statement until it commits; a rebuild takes it exclusively for its final
/// catch-up and the alias swap. So no batch is in flight across the swap: a
/// batch either finished before the final catch-up (which then replays its
/// events into the new index) or starts after the swap (and writes through
/// the alias into the new index).
pub const REBUILD_LOCK: i64 = 0x5167_6874_7262;

impl Relay {
    pub fn new(db: PgPool, bus: Arc<dyn Bus>, batch_size: i64, safety_poll: Duration) -> Self {
        Self {
            db,
            bus,
            batch_size: batch_size.max(1),
            safety_poll,
            wake: RelayWake::Notify,
            stats: Arc::default(),
        }
    }

    /// Where the relay records its last batch (time and size).
    pub fn with_stats(mut self, stats: Arc<PipelineStats>) -> Self {
        self.stats = stats;
        self
    }

    /// `RelayWake::Poll` ignores NOTIFY and looks for work only on the poll
    /// timer (the default is `Notify`).
    pub fn with_wake(mut self, wake: RelayWake) -> Self {
        self.wake = wake;
        self
    }

    /// Relays until shutdown; the batch in hand is always finished first.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut listener: Option<PgListener> = None;
        let mut failures: u32 = 0;
        while !shutdown.is_shutdown() {
            if listener.is_none() && self.wake == RelayWake::Notify {
                listener = connect_listener(&self.db).await;
            }
            let wait = match self.relay_batch().await {
                // A full batch: there is probably more right away.
                Ok(n) if n as i64 >= self.batch_size => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    self.safety_poll
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff(failures);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "relay batch failed");
                    delay
                }
            };
            // Without a LISTEN connection commits cannot wake the relay: try
            // to re-establish it soon instead of sleeping a whole safety poll
            // (with `RelayWake::Poll` there is none by design).
            let wait = if listener.is_none() && self.wake == RelayWake::Notify && failures == 0 {
                wait.min(LISTENER_RETRY)
            } else {
                wait
            };
            tokio::select! {
                _ = shutdown.recv() => {}
                // `Ok(None)`: the connection was lost and re-established, and
                // notifications sent in between are gone — look for work now.
                woken = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                }, if failures == 0 => {
                    if woken.is_err() {
                        listener = None;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("relay stopped");
    }

    /// Claims one batch, publishes it, marks what the bus took. Returns how
    /// many events were claimed.
    #[tracing::instrument(skip(self))]
    pub async fn relay_batch(&self) -> anyhow::Result<usize> {
        use anyhow::Context;
        let mut tx = self
            .db
            .begin()
            .await
            .context("Failed to begin a relay transaction")?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(REBUILD_LOCK)
            .execute(&mut *tx)
            .await
            .context("Failed to take the relay's share of the rebuild lock")?;
        let events = outbox::claim_batch(&mut tx, self.batch_size)
            .await
            .context("Failed to claim outbox events")?;
        if events.is_empty() {
            return Ok(0);
        }
        let delivery = self.bus.publish(&events).await?;
        outbox::mark_published(&mut tx, &delivery.taken)
            .await
            .context("Failed to mark events published")?;
        for (id, reason) in &delivery.parked {
            tracing::error!(outbox_id = id, %reason, "event dead-lettered");
            outbox::park(&mut tx, *id, reason)
                .await
                .context("Failed to park a poison event")?;
        }
        tx.commit()
            .await
            .context("Failed to commit the relay batch")?;
        self.stats.record_batch(events.len());
        metrics::counter!("sightline_events_published_total")
            .increment(delivery.taken.len() as u64);
        metrics::counter!("sightline_dead_letters_total").increment(delivery.parked.len() as u64);
        if let Some((id, reason)) = delivery.retry.first() {
            anyhow::bail!(
                "{} event(s) to retry, first outbox id {id}: {reason}",
                delivery.retry.len()
            );
        }
        Ok(events.len())
    }
}

/// Exponential backoff with full jitter, so many relays do not retry in step.
fn backoff(failures: u32) -> Duration {
    let ceiling = (100u64 << failures.min(10)).min(MAX_BACKOFF.as_millis() as u64);
    Duration::from_millis(rand::rng().random_range(ceiling / 2..=ceiling))
}

async fn connect_listener(db: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(db).await.ok()?;
    listener.listen(outbox::WAKE_CHANNEL).await.ok()?;
    Some(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(200));
        for _ in 0..100 {
            assert!(backoff(30) <= MAX_BACKOFF);
            assert!(backoff(30) >= MAX_BACKOFF / 2);
        }
    }
}
