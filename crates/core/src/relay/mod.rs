//! The relay: takes committed outbox events in batches and hands them to the
//! bus, marking them published only once the bus has durably taken them (a
//! distributed bus's events are marked relayed; its projector marks them
//! published once searchable).
//!
//! It wakes on the outbox's NOTIFY (and, when the web runs in the same
//! process, on its writes directly), with a slow safety poll. Claimed rows stay
//! locked until the batch is marked, so a crash mid-batch leaves them
//! unpublished for the next attempt (the projector is idempotent).
//!
//! Several batches may be in flight at once (`RELAY_CONCURRENCY`): most of a
//! batch's time is Elasticsearch making it searchable, and an event committed
//! meanwhile should not wait for that to finish before its own batch starts.
//! `FOR UPDATE SKIP LOCKED` keeps batches apart; external versions and the
//! notice log's "older than noticed" rule make their finishing order harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::bus::{Bus, RetryLater, failure_kind};
use crate::config::RelayWake;
use crate::locks;
use crate::monitoring::{BATCH_FAILURES, PipelineStats, record_stage, stage_histogram};
use crate::outbox;
use crate::shutdown::Shutdown;

pub struct Relay {
    db: PgPool,
    bus: Arc<dyn Bus>,
    batch_size: i64,
    /// Most batches in flight at once.
    concurrency: usize,
    safety_poll: Duration,
    wake: RelayWake,
    /// The web's waker when it runs in this process: its wakes reach the
    /// relay at once, before their NOTIFY does.
    local_wake: Option<Arc<crate::wake::Waker>>,
    /// The last batch, for `/status`.
    stats: Arc<PipelineStats>,
    /// Whether the journeys' stage times are written (`RECORD_JOURNEYS`).
    journeys: bool,
}

// Short enough that the pipeline notices a recovered dependency within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How soon a lost LISTEN connection is tried again once the database answers.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

impl Relay {
    pub fn new(db: PgPool, bus: Arc<dyn Bus>, batch_size: i64, safety_poll: Duration) -> Self {
        Self {
            db,
            bus,
            batch_size: batch_size.max(1),
            concurrency: 1,
            safety_poll,
            wake: RelayWake::Notify,
            local_wake: None,
            stats: Arc::default(),
            journeys: true,
        }
    }

    /// Whether to write the journeys' stage times (default: yes).
    pub fn with_journeys(mut self, journeys: bool) -> Self {
        self.journeys = journeys;
        self
    }

    /// Where the relay records its last batch (time and size).
    pub fn with_stats(mut self, stats: Arc<PipelineStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Lets up to `concurrency` batches be in flight at once (default 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// `RelayWake::Poll` ignores NOTIFY and looks for work only on the poll
    /// timer (the default is `Notify`).
    pub fn with_wake(mut self, wake: RelayWake) -> Self {
        self.wake = wake;
        self
    }

    /// Also wakes on `waker`'s wakes in this process (the web's writes when
    /// both run here), a NOTIFY's round trip sooner; not with `RelayWake::Poll`.
    pub fn with_local_wake(mut self, waker: Arc<crate::wake::Waker>) -> Self {
        self.local_wake = Some(waker);
        self
    }

    /// Relays until shutdown; the batches in hand are always finished first.
    pub async fn run(self, mut shutdown: Shutdown) {
        let relay = Arc::new(self);
        let mut in_flight: JoinSet<anyhow::Result<usize>> = JoinSet::new();
        let mut listener: Option<PgListener> = None;
        let mut failures: u32 = 0;
        let mut retry_at: Option<Instant> = None;
        // There may be work nobody has looked for yet: at start, after a
        // wake-up, after a full batch, after a failure.
        let mut look = true;
        while !shutdown.is_shutdown() {
            if listener.is_none() && relay.wake == RelayWake::Notify {
                listener = connect_listener(&relay.db).await;
                // Notifications sent while there was none are gone.
                look |= listener.is_some();
            }
            // After a failure, one batch at a time until one succeeds.
            let slots = if failures > 0 { 1 } else { relay.concurrency };
            let backing_off = retry_at.is_some_and(|at| Instant::now() < at);
            if look && in_flight.len() < slots && !backing_off {
                look = false;
                let relay = relay.clone();
                in_flight.spawn(async move { relay.relay_batch().await });
                continue;
            }
            // Without a LISTEN connection commits cannot wake the relay: try
            // to re-establish it soon instead of sleeping a whole safety poll
            // (with `RelayWake::Poll` there is none by design).
            let wake_at = match retry_at {
                Some(at) if backing_off => at,
                _ if listener.is_none() && relay.wake == RelayWake::Notify => {
                    Instant::now() + LISTENER_RETRY
                }
                _ => Instant::now() + relay.safety_poll,
            };
            tokio::select! {
                _ = shutdown.recv() => {}
                Some(finished) = in_flight.join_next() => {
                    match finished.map_err(anyhow::Error::from).and_then(|r| r) {
                        Ok(n) => {
                            if failures > 0 {
                                tracing::info!(failed_batches = failures, "relay batches succeed again");
                            }
                            failures = 0;
                            retry_at = None;
                            relay.stats.record_success();
                            // A full batch: there is probably more right away.
                            look |= n as i64 >= relay.batch_size;
                        }
                        Err(e) => {
                            failures += 1;
                            let delay = backoff(failures);
                            let kind = failure_kind(&e);
                            let error = format!("{e:#}");
                            tracing::warn!(%error, %kind, retry_in_ms = delay.as_millis() as u64, "relay batch failed");
                            metrics::counter!(BATCH_FAILURES, "kind" => kind.clone()).increment(1);
                            relay.stats.record_failure(kind, error);
                            retry_at = Some(Instant::now() + delay);
                            look = true;
                        }
                    }
                }
                // `Ok(None)`: the connection was lost and re-established, and
                // notifications sent in between are gone — look for work now.
                woken = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    look = true;
                    match (woken, listener.as_mut()) {
                        // One batch takes every commit so far: the other
                        // notifications already received ask for nothing more.
                        (Ok(()), Some(l)) => while l.next_buffered().is_some() {},
                        _ => listener = None,
                    }
                }
                _ = async {
                    match &relay.local_wake {
                        Some(waker) if relay.wake == RelayWake::Notify => waker.woken_here().await,
                        _ => std::future::pending().await,
                    }
                } => look = true,
                _ = tokio::time::sleep_until(wake_at) => look = true,
            }
        }
        while in_flight.join_next().await.is_some() {}
        tracing::info!("relay stopped");
    }

    /// Claims one batch, publishes it, marks what the bus took. Returns how
    /// many events were claimed. (Its span is logged, not traced: see
    /// `telemetry::traces::UNEXPORTED`.)
    #[tracing::instrument(skip(self), target = "sightline_core::relay::polls")]
    pub async fn relay_batch(&self) -> anyhow::Result<usize> {
        use anyhow::Context;
        let started = std::time::Instant::now();
        let mut tx = self
            .db
            .begin()
            .await
            .context("Failed to begin a relay transaction")?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(locks::REBUILD)
            .execute(&mut *tx)
            .await
            .context("Failed to take the relay's share of the rebuild lock")?;
        let events = outbox::claim_batch(&mut tx, self.batch_size)
            .await
            .context("Failed to claim outbox events")?;
        if events.is_empty() {
            return Ok(0);
        }
        record_stage("claim", started);
        let (claimed_at, waiting) = (chrono::Utc::now(), stage_histogram("waiting"));
        for event in &events {
            let waited = (claimed_at - event.created_at).to_std().unwrap_or_default();
            waiting.record(waited.as_secs_f64());
        }
        // Traces (only while exported): a `relay.batch` span links to every
        // event's trace, and each event gets a `relay.publish` span in its
        // own trace and goes to the bus carrying it (telemetry::traces).
        let traced = crate::telemetry::traces::batch_span("relay.batch", &events);
        let hand_over = crate::telemetry::traces::EventSpans::start("relay.publish", &events);
        // The journey's hand-over: the call itself in process (the
        // projector starts on it at once), the bus's acknowledgement with a
        // distributed bus.
        let handed_at = chrono::Utc::now();
        let handed = hand_over.hand_on(&events);
        let publish = tracing::Instrument::instrument(self.bus.publish(&handed), traced);
        let mut delivery = match publish.await {
            Ok(delivery) => delivery,
            Err(e) => {
                // The claim's rows stay unpublished either way; committing
                // instead of rolling back keeps the failure on their journeys.
                let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
                let kind = failure_kind(&e);
                if outbox::mark_retrying(&mut *tx, &ids, &kind).await.is_ok() {
                    let _ = tx.commit().await;
                }
                return Err(e);
            }
        };
        drop(hand_over);
        delivery.stamps.claimed_at = Some(claimed_at);
        delivery.stamps.handed_at = Some(if self.bus.projects_later() {
            chrono::Utc::now()
        } else {
            handed_at
        });
        if !self.journeys {
            delivery.stamps = Default::default();
        }
        let started = std::time::Instant::now();
        if self.bus.projects_later() {
            outbox::mark_relayed(&mut tx, &delivery.taken, &delivery.stamps)
                .await
                .context("Failed to mark events relayed")?;
        } else {
            outbox::mark_published(&mut tx, &delivery.taken, &delivery.stamps)
                .await
                .context("Failed to mark events published")?;
        }
        if let Some((_, failure)) = delivery.retry.first() {
            let ids: Vec<i64> = delivery.retry.iter().map(|(id, _)| *id).collect();
            outbox::mark_retrying(&mut *tx, &ids, &failure.kind)
                .await
                .context("Failed to note the events to retry")?;
        }
        for (id, reason) in &delivery.parked {
            tracing::error!(outbox_id = id, %reason, "event dead-lettered");
            outbox::park(&mut tx, *id, reason)
                .await
                .context("Failed to park a poison event")?;
        }
        tx.commit()
            .await
            .context("Failed to commit the relay batch")?;
        record_stage(
            if self.bus.projects_later() {
                "relayed"
            } else {
                "mark"
            },
            started,
        );
        self.stats.record_batch(events.len());
        metrics::counter!("sightline_events_published_total")
            .increment(delivery.taken.len() as u64);
        metrics::counter!("sightline_dead_letters_total").increment(delivery.parked.len() as u64);
        if let Some((id, failure)) = delivery.retry.first() {
            return Err(RetryLater {
                count: delivery.retry.len(),
                first_id: *id,
                failure: failure.clone(),
            }
            .into());
        }
        Ok(events.len())
    }
}

/// Exponential backoff with full jitter (anywhere from 0 up to a ceiling
/// that doubles per failure, capped), so many relays do not retry in step.
fn backoff(failures: u32) -> Duration {
    let ceiling = (100u64 << failures.min(10)).min(MAX_BACKOFF.as_millis() as u64);
    Duration::from_millis(rand::rng().random_range(0..=ceiling))
}

async fn connect_listener(db: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(db).await.ok()?;
    listener.listen(outbox::WAKE_CHANNEL).await.ok()?;
    Some(listener)
}

use crate::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::counter("sightline_events_published_total", "Outbox events the relay published."),
    Metric::counter("sightline_dead_letters_total", "Events parked as dead letters (ever)."),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract (docs/ARCHITECTURE.md, *Guarantees*): exponential, capped, full jitter — a delay
    /// drawn from the whole range up to the ceiling, not only its top half.
    #[test]
    fn backoff_is_exponential_capped_with_full_jitter() {
        const SAMPLES: usize = 2000;
        for (failures, ceiling) in [
            (1, Duration::from_millis(200)),
            (3, Duration::from_millis(800)),
            (30, MAX_BACKOFF),
        ] {
            let delays: Vec<Duration> = (0..SAMPLES).map(|_| backoff(failures)).collect();
            assert!(
                delays.iter().all(|d| *d <= ceiling),
                "{failures} failures: a delay above {ceiling:?}"
            );
            // Uniform over [0, ceiling]: about a quarter below a quarter of
            // it, about half below half. (Equal jitter puts none there.)
            let below = |part: u32| {
                delays.iter().filter(|d| **d < ceiling / part).count() as f64 / SAMPLES as f64
            };
            assert!(
                (0.40..0.60).contains(&below(2)),
                "{failures} failures: {:.2} of delays below half the ceiling",
                below(2)
            );
            assert!(
                (0.17..0.33).contains(&below(4)),
                "{failures} failures: {:.2} of delays below a quarter of the ceiling",
                below(4)
            );
            // And the ceiling is reached for: some delay in its top tenth.
            assert!(delays.iter().any(|d| *d >= ceiling * 9 / 10));
        }
    }
}
