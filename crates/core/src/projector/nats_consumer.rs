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
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, Message};
use futures::StreamExt;
use rand::Rng;
use sqlx::PgPool;

use crate::bus::failure_kind;
use crate::bus::nats::{Names, consumer_config, ensure_stream};
use crate::locks;
use crate::monitoring::{BATCH_FAILURES, PipelineStats, record_stage, stage_histogram};
use crate::outbox::{self, OutboxEvent};
use crate::projector::Projector;
use crate::shutdown::Shutdown;
use crate::telemetry::traces;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Errors in a row from the consumer's stream before subscribing anew.
const MAX_STREAM_ERRORS: u32 = 10;

pub struct NatsConsumer {
    js: jetstream::Context,
    names: Names,
    projector: Arc<Projector>,
    db: PgPool,
    batch_size: usize,
    max_deliver: i64,
    /// This process's last batch and current failure, for `/status`.
    stats: Arc<PipelineStats>,
    /// Batches in hand at once (see [`Inbox`]).
    concurrency: usize,
    /// Whether the journeys' stage times are written (`RECORD_JOURNEYS`).
    journeys: bool,
}

impl NatsConsumer {
    pub fn new(
        js: jetstream::Context,
        names: Names,
        projector: Arc<Projector>,
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
            concurrency: 1,
            journeys: true,
        }
    }

    /// Whether to write the journeys' stage times (default: yes).
    pub fn with_journeys(mut self, journeys: bool) -> Self {
        self.journeys = journeys;
        self
    }

    /// Lets up to `concurrency` batches be in hand at once (default 1): an
    /// event that arrives while a batch is being projected starts its own at
    /// once, sharing that batch's refresh when they meet (see
    /// `refresher`), instead of waiting for it to end.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Consumes until shutdown. The batches in hand are finished (or handed
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
            let inbox = Inbox::default();
            let (this, inbox_ref) = (&self, &inbox);
            let workers = (0..self.concurrency).map(|_| {
                let mut shutdown = shutdown.clone();
                let (this, inbox) = (this, inbox_ref);
                async move {
                    while let Some(batch) = inbox.take(this.batch_size, &mut shutdown).await {
                        this.handle(batch, &mut shutdown).await;
                    }
                }
            });
            tokio::join!(
                inbox.read(messages, self.names.ack_wait, shutdown.clone()),
                futures::future::join_all(workers)
            );
            // Stopping (or the stream ended): what arrived and was not
            // begun goes back at once, for another projector.
            for (message, _, _) in inbox.drain() {
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
    async fn handle(&self, batch: Vec<(Message, Arrival)>, shutdown: &mut Shutdown) {
        let mut pending: Vec<(OutboxEvent, Message)> = Vec::with_capacity(batch.len());
        // When each event reached this process (its journey's delivery).
        let mut arrivals = std::collections::HashMap::with_capacity(batch.len());
        let mut given_up = Vec::new();
        for (message, arrived_at) in batch {
            let delivered = message.info().map_or(1, |info| info.delivered);
            match serde_json::from_slice::<OutboxEvent>(&message.payload) {
                Ok(event) if delivered >= self.max_deliver => {
                    given_up.push((event, message, delivered));
                }
                Ok(mut event) => {
                    arrivals.insert(event.id, arrived_at);
                    event.traceparent = bus_hop(&message, delivered);
                    pending.push((event, message))
                }
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
            let outcome = keep_alive(&messages, self.names.ack_wait, async {
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
                let mut delivery = self.projector.project(&events).await?;
                if !self.journeys {
                    delivery.stamps = Default::default();
                } else {
                    delivery.stamps.delivered_each = delivery
                        .taken
                        .iter()
                        .map(|id| arrivals.get(id).copied().unwrap_or_else(chrono::Utc::now))
                        .collect();
                }
                // Searchable with notices recorded: published, in the
                // outbox's sense (read-your-writes and `/status` rely
                // on it); parked with their `order-failed` notices
                // recorded by `project`. In the batch's transaction:
                // one commit for both.
                let started = Instant::now();
                outbox::mark_published(&mut rebuild_guard, &delivery.taken, &delivery.stamps)
                    .await
                    .context("Failed to mark events published")?;
                for (id, reason) in &delivery.parked {
                    outbox::park(&mut rebuild_guard, *id, reason)
                        .await
                        .context("Failed to park a dead letter")?;
                }
                rebuild_guard
                    .commit()
                    .await
                    .context("Failed to commit the batch's transaction")?;
                record_stage("published", started);
                metrics::counter!("sightline_dead_letters_total")
                    .increment(delivery.parked.len() as u64);
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
                    let started = Instant::now();
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
                    record_stage("ack", started);
                    self.stats.record_batch(done.len());
                    metrics::counter!("sightline_bus_events_projected_total")
                        .increment(delivery.taken.len() as u64);
                    match delivery.retry.first() {
                        None => {
                            self.stats.record_success();
                            continue;
                        }
                        Some((_, failure)) => {
                            self.record_failure(failure.kind.clone(), failure.to_string());
                            let ids: Vec<i64> = delivery.retry.iter().map(|(id, _)| *id).collect();
                            self.note_retrying(&ids, &failure.kind).await;
                        }
                    }
                }
                Err(e) => {
                    self.record_failure(failure_kind(&e), format!("{e:#}"));
                    let ids: Vec<i64> = pending.iter().map(|(event, _)| event.id).collect();
                    self.note_retrying(&ids, &failure_kind(&e)).await;
                }
            }
            // A passing failure: keep the batch (the server does not hand it
            // to anyone else meanwhile) and try again after a backoff.
            failures += 1;
            let delay = backoff(failures);
            let messages: Vec<&Message> = pending.iter().map(|(_, m)| m).collect();
            let stopped = keep_alive(&messages, self.names.ack_wait, async {
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

    /// Notes the failure on the events' journeys; best effort (PostgreSQL
    /// may be what failed): the retry goes on either way.
    async fn note_retrying(&self, ids: &[i64], kind: &str) {
        if let Err(e) = outbox::mark_retrying(&self.db, ids, kind).await {
            tracing::debug!(error = %e, "cannot note the retry on the journeys");
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

/// The event's trace goes on from here (only while traces are exported):
/// the bus's hop, from the stream storing the message to its arrival, as a
/// span under the relay's (`telemetry::traces`); its context for the
/// projector's spans.
fn bus_hop(message: &Message, delivered: i64) -> Option<String> {
    if !traces::exporting() {
        return None;
    }
    let traceparent = message.headers.as_ref()?.get(traces::TRACEPARENT)?;
    let stored = message.info().ok()?.published.unix_timestamp_nanos();
    let stored = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(stored).unwrap_or_default());
    traces::bus_hop(
        Some(traceparent.as_str()),
        stored,
        message.subject.as_str(),
        delivered,
    )
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

/// What arrived from the consumer's message stream and no worker has begun
/// yet. The server counts a message delivered once it is sent to this
/// process, whether or not a worker is free to look at it: so arrivals are
/// taken off the stream at once and kept alive with progress acks, or a long
/// outage would redeliver them again and again until they reached
/// `NATS_MAX_DELIVER` and were parked (at most `max_ack_pending` are ever
/// held). A free worker takes all of them (up to a batch) at once: what
/// arrives while every worker is busy forms the next batch, as relay
/// batches form in-process.
/// A message held in the [`Inbox`]: when it arrived, by the monotonic clock
/// (the `batching` stage) and by the wall clock (its journey).
type Held = (Message, Instant, Arrival);
type Arrival = chrono::DateTime<chrono::Utc>;

#[derive(Default)]
struct Inbox {
    /// What arrived, with when.
    held: std::sync::Mutex<Vec<Held>>,
    /// The stream ended, failed too often, or shutdown began: the workers
    /// take nothing more.
    ended: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the stream into the inbox, and tells the server every third of
    /// `ack_wait` that what is held is still wanted, until shutdown, the
    /// stream's end or [`MAX_STREAM_ERRORS`] errors in a row (e.g. the
    /// consumer was deleted: the caller subscribes, and creates it, again).
    async fn read(
        &self,
        mut stream: jetstream::consumer::pull::Stream,
        ack_wait: Duration,
        mut shutdown: Shutdown,
    ) {
        let every = (ack_wait / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut errors = 0;
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = ticks.tick() => {
                    let held: Vec<Message> = self.lock().iter().map(|(m, _, _)| m.clone()).collect();
                    for message in held {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
                next = stream.next() => match next {
                    None => break,
                    Some(Ok(message)) => {
                        errors = 0;
                        self.arrived(message);
                    }
                    // Missed heartbeats and the like: the stream goes on.
                    Some(Err(e)) => {
                        errors += 1;
                        tracing::debug!(error = %e, "NATS consumer stream");
                        if errors >= MAX_STREAM_ERRORS {
                            break;
                        }
                    }
                },
            }
        }
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Holds a message that arrived, noting how long it took from being
    /// stored in the stream to reaching this process (the `delivery` stage;
    /// the stream's clock and this one are the same machine's in the bench).
    fn arrived(&self, message: Message) {
        if let Ok(info) = message.info() {
            let stored = info.published.unix_timestamp_nanos();
            let now = chrono::Utc::now()
                .timestamp_nanos_opt()
                .map_or(stored, i128::from);
            stage_histogram("delivery").record((now - stored).max(0) as f64 / 1e9);
        }
        self.lock()
            .push((message, Instant::now(), chrono::Utc::now()));
        self.changed.notify_waiters();
    }

    /// The next batch: everything held, up to `max`, each event's wait
    /// since it arrived noted (the `batching` stage); waits for a message
    /// when there is none. `None` on shutdown or once reading has ended.
    async fn take(&self, max: usize, shutdown: &mut Shutdown) -> Option<Vec<(Message, Arrival)>> {
        loop {
            // Registered before looking, so an arrival between the look and
            // the wait is not missed.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            {
                let mut held = self.lock();
                if !held.is_empty() {
                    let take = held.len().min(max);
                    let batching = stage_histogram("batching");
                    return Some(
                        held.drain(..take)
                            .map(|(message, arrived, at)| {
                                batching.record(arrived.elapsed().as_secs_f64());
                                (message, at)
                            })
                            .collect(),
                    );
                }
            }
            if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            tokio::select! {
                _ = shutdown.recv() => return None,
                _ = changed => {}
            }
        }
    }

    /// What is held and was never begun.
    fn drain(&self) -> Vec<Held> {
        std::mem::take(&mut *self.lock())
    }
}

/// Runs `work`, meanwhile telling the server every third of `ack_wait` that
/// the batch in hand is still being worked on, so none of it is redelivered.
async fn keep_alive<T>(
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
                for message in in_hand {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
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
