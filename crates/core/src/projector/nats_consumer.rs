//! The projectors' side of the NATS bus: any number of processes share one
//! durable pull consumer; each takes what is there in batches and runs it
//! through the same [`Projector`] as the in-process bus (bulk write,
//! refresh, notices), and acknowledges an event only once that returned it
//! as taken or parked.
//!
//! - A crash before the ack: the server delivers the events again after
//!   `ack_wait` (to any projector); the projection is idempotent.
//! - A long batch (Elasticsearch slow or down) sends progress acks, so its
//!   events are not handed to another projector meanwhile; a passing
//!   failure is retried here with backoff and never counts as a delivery.
//! - An event delivered `NATS_MAX_DELIVER` times without an ack (projectors
//!   died or hung on it) is parked in `dead_letters` with the bus's reason
//!   and its owner gets `order-failed`, as for any dead letter.
//!
//! Projected events are marked published in the outbox here (the relay only
//! marked them relayed), so "published" keeps meaning "searchable, notice
//! recorded" for every reader of the outbox.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, Message};
use futures::{FutureExt, StreamExt};
use rand::Rng;
use sqlx::PgPool;

use crate::bus::failure_kind;
use crate::bus::nats::{Names, consumer_config, ensure_stream};
use crate::locks;
use crate::monitoring::{BATCH_FAILURES, PipelineStats};
use crate::outbox::{self, OutboxEvent};
use crate::projector::Projector;
use crate::shutdown::Shutdown;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Errors in a row from the consumer's stream before subscribing anew.
const MAX_STREAM_ERRORS: u32 = 10;

pub struct NatsConsumer {
    js: jetstream::Context,
    names: Names,
    projector: Projector,
    db: PgPool,
    batch_size: usize,
    max_deliver: i64,
    /// This process's last batch and current failure, for `/status`.
    stats: Arc<PipelineStats>,
}

impl NatsConsumer {
    pub fn new(
        js: jetstream::Context,
        names: Names,
        projector: Projector,
        db: PgPool,
        batch_size: usize,
        max_deliver: i64,
        stats: Arc<PipelineStats>,
    ) -> Self {
        Self {
            js,
            names,
            projector,
            db,
            batch_size: batch_size.max(1),
            max_deliver,
            stats,
        }
    }

    /// Consumes until shutdown. The batch in hand is finished (or handed
    /// back to the server) first.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut failures = 0u32;
        while !shutdown.is_shutdown() {
            let messages = match self.subscribe().await {
                Ok(messages) => messages,
                Err(e) => {
                    failures += 1;
                    let error = format!("{e:#}");
                    tracing::warn!(%error, "cannot reach the projectors' NATS consumer");
                    self.stats
                        .record_failure("nats_unavailable".to_owned(), error);
                    tokio::select! {
                        _ = shutdown.recv() => {}
                        _ = tokio::time::sleep(backoff(failures)) => {}
                    }
                    continue;
                }
            };
            failures = 0;
            let mut arrivals = Arrivals {
                stream: messages,
                held: Vec::new(),
                ended: false,
            };
            while let Some(batch) = arrivals.next_batch(self.batch_size, &mut shutdown).await {
                self.handle(batch, &mut arrivals, &mut shutdown).await;
            }
            // Stopping (or the stream ended): what arrived and was not
            // begun goes back at once, for another projector.
            for message in arrivals.held.drain(..) {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
        tracing::info!("projector (NATS consumer) stopped");
    }

    async fn subscribe(&self) -> anyhow::Result<jetstream::consumer::pull::Stream> {
        let stream = ensure_stream(&self.js, &self.names).await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.names.consumer, consumer_config(&self.names))
            .await
            .with_context(|| {
                format!("Failed to create or find consumer {}", self.names.consumer)
            })?;
        consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .messages()
            .await
            .context("Failed to pull from the consumer")
    }

    /// One batch: parks what the bus gave up on, projects the rest until it
    /// is all taken or parked, acknowledging as it goes.
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    async fn handle(&self, batch: Vec<Message>, arrivals: &mut Arrivals, shutdown: &mut Shutdown) {
        let mut pending: Vec<(OutboxEvent, Message)> = Vec::with_capacity(batch.len());
        let mut given_up = Vec::new();
        for message in batch {
            let delivered = message.info().map_or(1, |info| info.delivered);
            match serde_json::from_slice::<OutboxEvent>(&message.payload) {
                Ok(event) if delivered >= self.max_deliver => {
                    given_up.push((event, message, delivered));
                }
                Ok(event) => pending.push((event, message)),
                Err(e) => {
                    // Not ours to project (nothing of the outbox): never again.
                    tracing::error!(error = %e, subject = %message.subject, "not an outbox event: terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if !given_up.is_empty() {
            self.give_up(given_up).await;
        }

        let mut failures = 0u32;
        while !pending.is_empty() {
            let events: Vec<OutboxEvent> = pending.iter().map(|(e, _)| e.clone()).collect();
            let messages: Vec<&Message> = pending.iter().map(|(_, m)| m).collect();
            let outcome = arrivals
                .meanwhile(&messages, self.names.ack_wait, async {
                    // A batch in flight holds off a rebuild's swap, as a relay
                    // batch does (see `locks::REBUILD`).
                    let mut rebuild_guard = self
                        .db
                        .begin()
                        .await
                        .context("Failed to begin the batch's transaction")?;
                    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                        .bind(locks::REBUILD)
                        .execute(&mut *rebuild_guard)
                        .await
                        .context("Failed to take the batch's share of the rebuild lock")?;
                    let delivery = self.projector.project(&events).await?;
                    // Searchable with notices recorded: published, in the
                    // outbox's sense (read-your-writes and `/status` rely on it).
                    outbox::mark_projected(&self.db, &delivery.taken)
                        .await
                        .context("Failed to mark events published")?;
                    if !delivery.parked.is_empty() {
                        // `project` recorded their `order-failed` notices.
                        park(&self.db, &delivery.parked).await?;
                        metrics::counter!("sightline_dead_letters_total")
                            .increment(delivery.parked.len() as u64);
                    }
                    rebuild_guard
                        .commit()
                        .await
                        .context("Failed to end the batch's transaction")?;
                    Ok::<_, anyhow::Error>(delivery)
                })
                .await;
            match outcome {
                Ok(delivery) => {
                    let done: Vec<i64> = delivery
                        .taken
                        .iter()
                        .chain(delivery.parked.iter().map(|(id, _)| id))
                        .copied()
                        .collect();
                    let mut left = Vec::with_capacity(delivery.retry.len());
                    for (event, message) in pending {
                        if done.contains(&event.id) {
                            // Lost acks only mean a harmless redelivery.
                            if let Err(e) = message.ack().await {
                                tracing::warn!(error = %e, outbox_id = event.id, "ack failed");
                            }
                        } else {
                            left.push((event, message));
                        }
                    }
                    pending = left;
                    self.stats.record_batch(done.len());
                    metrics::counter!("sightline_bus_events_projected_total")
                        .increment(delivery.taken.len() as u64);
                    match delivery.retry.first() {
                        None => {
                            self.stats.record_success();
                            continue;
                        }
                        Some((_, failure)) => {
                            self.record_failure(failure.kind.clone(), failure.to_string())
                        }
                    }
                }
                Err(e) => self.record_failure(failure_kind(&e), format!("{e:#}")),
            }
            // A passing failure: keep the batch (the server does not hand it
            // to anyone else meanwhile) and try again after a backoff.
            failures += 1;
            let delay = backoff(failures);
            let messages: Vec<&Message> = pending.iter().map(|(_, m)| m).collect();
            let stopped = arrivals
                .meanwhile(&messages, self.names.ack_wait, async {
                    tokio::select! {
                        _ = shutdown.recv() => true,
                        _ = tokio::time::sleep(delay) => false,
                    }
                })
                .await;
            if stopped {
                // Handed back: another projector takes them at once.
                for (_, message) in &pending {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                return;
            }
        }
    }

    fn record_failure(&self, kind: String, error: String) {
        tracing::warn!(%error, %kind, "projector batch failed");
        metrics::counter!(BATCH_FAILURES, "kind" => kind.clone()).increment(1);
        self.stats.record_failure(kind, error);
    }

    /// Events delivered `max_deliver` times without an ack: parked with the
    /// bus's reason, their owners told, then acknowledged. If that fails
    /// they come again (still over the limit) and are parked then.
    async fn give_up(&self, mut given_up: Vec<(OutboxEvent, Message, i64)>) {
        // Projected already, only its ack was lost: telling its owner it
        // failed would be a lie. Acknowledge it and go on.
        let ids: Vec<i64> = given_up.iter().map(|(event, _, _)| event.id).collect();
        match outbox::published_among(&self.db, &ids).await {
            Ok(published) => {
                for (event, message, _) in &given_up {
                    if published.contains(&event.id) {
                        let _ = message.ack().await;
                    }
                }
                given_up.retain(|(event, _, _)| !published.contains(&event.id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox: the events come again");
                return;
            }
        }
        if given_up.is_empty() {
            return;
        }
        let parked: Vec<(i64, String)> = given_up
            .iter()
            .map(|(event, _, delivered)| {
                (
                    event.id,
                    format!(
                        "the bus delivered it {delivered} times without an acknowledgement (NATS consumer {}, NATS_MAX_DELIVER={}): projectors crashed or timed out on it",
                        self.names.consumer, self.max_deliver
                    ),
                )
            })
            .collect();
        let events: Vec<(&OutboxEvent, &str)> = given_up
            .iter()
            .zip(&parked)
            .map(|((event, _, _), (_, reason))| (event, reason.as_str()))
            .collect();
        let result = async {
            self.projector.record_failed(&events).await?;
            park(&self.db, &parked).await
        }
        .await;
        match result {
            Ok(()) => {
                for ((event, message, _), (_, reason)) in given_up.iter().zip(&parked) {
                    tracing::error!(outbox_id = event.id, %reason, "event dead-lettered");
                    let _ = message.ack().await;
                }
                metrics::counter!("sightline_dead_letters_total").increment(parked.len() as u64);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot park events the bus gave up on")
            }
        }
    }
}

/// Parks events in the dead-letter table, in one transaction.
async fn park(db: &PgPool, parked: &[(i64, String)]) -> anyhow::Result<()> {
    let mut tx = db.begin().await.context("Failed to begin parking")?;
    for (id, reason) in parked {
        outbox::park(&mut tx, *id, reason)
            .await
            .context("Failed to park a dead letter")?;
    }
    tx.commit().await.context("Failed to commit parking")
}

/// The consumer's message stream, and what arrived from it while a batch
/// was in hand. The server counts a message delivered once it is sent to
/// this process, whether or not the batch in hand lets it be looked at: so
/// arrivals are taken off the stream meanwhile and kept alive with progress
/// acks, or a long outage would redeliver them again and again until they
/// reached `NATS_MAX_DELIVER` and were parked (at most `max_ack_pending`
/// are ever held).
struct Arrivals {
    stream: jetstream::consumer::pull::Stream,
    held: Vec<Message>,
    ended: bool,
}

impl Arrivals {
    /// The next batch: what is held first, then whatever else is there
    /// already; waits for one message when there is none. `None` on
    /// shutdown or when the stream ends.
    async fn next_batch(&mut self, max: usize, shutdown: &mut Shutdown) -> Option<Vec<Message>> {
        if self.held.is_empty() {
            let mut errors = 0;
            loop {
                // Errors in a row (e.g. the consumer was deleted): start
                // over, subscribing (and creating the consumer) again.
                if self.ended || errors >= MAX_STREAM_ERRORS {
                    return None;
                }
                let next = tokio::select! {
                    _ = shutdown.recv() => return None,
                    next = self.stream.next() => next,
                };
                match next {
                    None => self.ended = true,
                    Some(Ok(message)) => {
                        self.held.push(message);
                        break;
                    }
                    // Missed heartbeats and the like: the stream goes on.
                    Some(Err(e)) => {
                        errors += 1;
                        tracing::debug!(error = %e, "NATS consumer stream");
                    }
                }
            }
        }
        while self.held.len() < max && !self.ended {
            match self.stream.next().now_or_never() {
                Some(Some(Ok(message))) => self.held.push(message),
                Some(None) => self.ended = true,
                _ => break,
            }
        }
        let take = self.held.len().min(max);
        Some(self.held.drain(..take).collect())
    }

    /// Runs `work`, meanwhile taking arrivals into `held` and telling the
    /// server every third of `ack_wait` that the batch in hand and what is
    /// held are still being worked on, so none is redelivered.
    async fn meanwhile<T>(
        &mut self,
        in_hand: &[&Message],
        ack_wait: Duration,
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let every = (ack_wait / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = ticks.tick() => {
                    for message in in_hand.iter().copied().chain(&self.held) {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
                next = self.stream.next(), if !self.ended => match next {
                    Some(Ok(message)) => self.held.push(message),
                    Some(Err(e)) => tracing::debug!(error = %e, "NATS consumer stream"),
                    None => self.ended = true,
                },
            }
        }
    }
}

/// Exponential backoff with full jitter, capped (as the relay's).
fn backoff(failures: u32) -> Duration {
    let ceiling = (100u64 << failures.min(10)).min(MAX_BACKOFF.as_millis() as u64);
    Duration::from_millis(rand::rng().random_range(0..=ceiling))
}

use crate::metric_catalogue::{Listed, Metric};

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::counter("sightline_bus_events_projected_total", "Events the NATS projectors on this instance made searchable and acknowledged.").listed(Listed::OnFirstUse),
];
