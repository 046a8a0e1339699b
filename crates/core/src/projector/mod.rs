//! Where an order becomes searchable.
//!
//! The projector is a dumb data mover: it counts events into the summaries
//! through an inbox (so duplicates count once), copies the orders and the
//! changed summaries into the read store in one bulk write with the domain
//! version as an external version (so replays and reordering are harmless),
//! waits for a refresh of the orders index that started after that write
//! (shared with any other batch in flight, see [`refresher`]), and only then
//! records the notices. Summaries are read by id in real time, so they need
//! no refresh. No business rules, no validation. (With `READ_STORE=postgres`
//! nothing is moved: see [`same_database`].) Its two doors from the bus:
//! [`in_process_bus`] (the relay's batch, in this process) and
//! [`nats_consumer`] (JetStream).

pub mod in_process_bus;
pub mod nats_consumer;
pub mod refresher;
pub mod same_database;
pub mod steps;
pub mod summaries;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use sqlx::PgPool;

use crate::bus::{Delivery, Failure, FailureKind, RetryLater};
use crate::config::RefreshMode;
use crate::monitoring::record_stage;
use crate::outbox::OutboxEvent;
use crate::outbox::events::OrderEvent;
use crate::read_side::document::OrderDocument;
use crate::read_side::index::{IndexError, ItemFailure, SearchIndex, WriteOutcome};
use crate::telemetry::traces;
use crate::visibility::notice_log::{self, NewNotice};
use refresher::Refresher;
use steps::{Step, StepHook};

pub struct Projector {
    db: PgPool,
    store: SearchIndex,
    refresh: RefreshMode,
    refresher: Refresher,
    store_ready: AtomicBool,
    /// Tests only: awaited at every step boundary (see [`steps`]).
    hook: Option<StepHook>,
}

impl Projector {
    pub fn new(db: PgPool, store: SearchIndex, refresh: RefreshMode) -> Self {
        Self {
            db,
            refresher: Refresher::new(store.clone()),
            store,
            refresh,
            store_ready: AtomicBool::new(false),
            hook: None,
        }
    }

    /// Awaits `hook` at every step boundary of every batch, so a test can
    /// pause a batch there or drop it as a crash would (see [`steps`]).
    pub fn with_step_hook(mut self, hook: StepHook) -> Self {
        self.hook = Some(hook);
        self
    }

    async fn reached(&self, step: Step) {
        if let Some(hook) = &self.hook {
            hook(step).await;
        }
    }

    /// Projects a batch. What it returns as taken is searchable and has its
    /// notice recorded; what it parks gets an `order-failed` notice. A
    /// failure of the whole batch carries its name for the relay.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn project(&self, events: &[OutboxEvent]) -> anyhow::Result<Delivery> {
        self.project_batch(events).await.map_err(name_failure)
    }

    async fn project_batch(&self, events: &[OutboxEvent]) -> anyhow::Result<Delivery> {
        if !self.store_ready.load(Ordering::Relaxed) {
            self.store
                .ensure_exists()
                .await
                .context("Failed to prepare the read store")?;
            self.store_ready.store(true, Ordering::Relaxed);
        }

        self.reached(Step::Received).await;
        // Traces (only while exported): this batch's span links to every
        // event's trace; in each event's own trace, `projector.project` with
        // the bulk write, refresh and notice under it (telemetry::traces).
        traces::link_events(&tracing::Span::current(), events);
        let traced = traces::EventSpans::start("projector.project", events);
        let mut delivery = Delivery::default();
        delivery.stamps.delivered_at = Some(Utc::now());
        let mut notices = Vec::new();
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            match OrderEvent::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(order_event) => decoded.push((event, order_event)),
                Err(reason) => {
                    notices.push(failed_notice(event, &reason));
                    delivery.parked.push((event.id, reason));
                }
            }
        }

        // Counted before the write so one bulk request carries orders and
        // summaries alike. The summary counts every order the write side
        // committed, also one search refuses to show (it is parked and can be
        // retried; the inbox keeps the retry from counting it twice).
        let counted: Vec<_> = decoded
            .iter()
            .map(|(event, order_event)| (event.event_id, event.user_id, order_event))
            .collect();
        let started = Instant::now();
        let summaries = summaries::count(&self.db, &counted)
            .await
            .context("Failed to count the batch into the summaries")?;
        record_stage("count", started);
        self.reached(Step::Counted).await;

        let docs: Vec<OrderDocument> = decoded
            .iter()
            .map(|(event, order_event)| to_document(event, order_event))
            .collect();
        let started = Instant::now();
        let step = traced.step("projector.bulk");
        let (outcomes, summary_outcomes) = self
            .store
            .write_batch(&docs, &summaries, self.refresh)
            .await
            .context("Failed to write the batch to the read store")?;
        drop(step);
        record_stage("write", started);
        let indexed_at = Utc::now();
        delivery.stamps.indexed_at = Some(indexed_at);
        // With `wait_for` the bulk's answer is the refresh's: searchable
        // then, unless an explicit refresh follows.
        delivery.stamps.searchable_at = Some(indexed_at);
        let alias_missing = outcomes
            .iter()
            .chain(&summary_outcomes)
            .any(|o| matches!(o, WriteOutcome::Failed(f) if f.kind == "index_not_found_exception"));
        if alias_missing {
            // Writes go only through the aliases (`require_alias`): one is
            // gone. Put it back where it belongs so the retry can land.
            if let Err(e) = self.restore_aliases().await {
                tracing::warn!(error = %format!("{e:#}"), "cannot restore the read store's aliases");
            }
        }
        for outcome in summary_outcomes {
            match outcome {
                // Counted already (the inbox has it); the next attempt rewrites it.
                WriteOutcome::Failed(failure) => {
                    return Err(anyhow::Error::new(RetryLater {
                        count: events.len(),
                        first_id: events.first().map_or(0, |e| e.id),
                        failure: passing(failure),
                    })
                    .context("a summary write failed"));
                }
                WriteOutcome::Rejected(reason) => anyhow::bail!("a summary write failed: {reason}"),
                WriteOutcome::Applied | WriteOutcome::AlreadyApplied => {}
            }
        }
        self.reached(Step::Written).await;

        let mut applied = Vec::with_capacity(docs.len());
        let mut written_before = false;
        for ((event, order_event), outcome) in decoded.iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Applied => applied.push((*event, order_event, true)),
                WriteOutcome::AlreadyApplied => {
                    metrics::counter!("sightline_duplicates_acknowledged_total").increment(1);
                    written_before = true;
                    applied.push((*event, order_event, false));
                }
                WriteOutcome::Rejected(reason) => {
                    notices.push(failed_notice(event, &reason));
                    delivery.parked.push((event.id, reason));
                }
                WriteOutcome::Failed(failure) => delivery.retry.push((event.id, passing(failure))),
            }
        }

        // `wait_for` does not wait for a version written by an earlier,
        // interrupted attempt (or by another relay), which may not have been
        // refreshed yet: refresh explicitly then.
        // Nothing applied (e.g. the index cannot take writes now): nothing
        // to make searchable, and a refresh would only fail the same way.
        if (self.refresh == RefreshMode::Explicit || written_before) && !applied.is_empty() {
            let started = Instant::now();
            let step = traced.step("projector.refresh");
            self.refresher
                .make_searchable()
                .await
                .context("Failed to refresh the read store")?;
            drop(step);
            record_stage("refresh", started);
            delivery.stamps.searchable_at = Some(Utc::now());
        }
        self.reached(Step::Refreshed).await;

        for (event, order_event, first_time) in &applied {
            notices.push(visible_notice(event, order_event));
            delivery.taken.push(event.id);
            // Once per event: a redelivery of what search already shows is no
            // new commit → searchable observation.
            if *first_time {
                let lag = (Utc::now() - event.created_at).num_milliseconds().max(0);
                metrics::histogram!("sightline_commit_to_searchable_seconds")
                    .record(lag as f64 / 1000.0);
            }
        }
        // Searchable now: the notices may go out.
        let started = Instant::now();
        let step = traced.step("projector.notice");
        let recorded = notice_log::record(&self.db, &notices)
            .await
            .context("Failed to record notices")?;
        drop(step);
        record_stage("notices", started);
        metrics::counter!("sightline_notices_recorded_total").increment(recorded.len() as u64);
        self.reached(Step::NoticesRecorded).await;
        Ok(delivery)
    }
}

impl Projector {
    /// Tells the owners of events the bus gave up on (see
    /// [`nats_consumer`]) that their order failed: `order-failed` notices.
    pub async fn record_failed(&self, events: &[(&OutboxEvent, &str)]) -> anyhow::Result<()> {
        let notices: Vec<NewNotice> = events
            .iter()
            .map(|(event, reason)| failed_notice(event, reason))
            .collect();
        notice_log::record(&self.db, &notices)
            .await
            .context("Failed to record notices")?;
        Ok(())
    }

    /// Points a missing alias back at the index it belongs to: the one the
    /// last finished rebuild swapped in, else the first (`<alias>_v1`). Only
    /// when that index exists; an index that has taken the alias's name
    /// (auto-created by a write without `require_alias`) is left for the
    /// operator to look at, and the failure stays visible on `/status`.
    #[tracing::instrument(skip(self))]
    async fn restore_aliases(&self) -> anyhow::Result<()> {
        let swapped = crate::rebuild_log::last_swapped(&self.db)
            .await
            .context("Failed to read the last rebuild")?;
        let (orders, summaries) = swapped.unwrap_or_else(|| {
            (
                format!("{}_v1", self.store.alias()),
                format!("{}_v1", self.store.summaries_alias()),
            )
        });
        for (alias, index) in [
            (self.store.alias(), orders),
            (self.store.summaries_alias(), summaries),
        ] {
            if self
                .store
                .restore_alias(alias, &index)
                .await
                .with_context(|| format!("Failed to point alias {alias} at {index}"))?
            {
                tracing::warn!(%alias, %index, "alias was missing: restored it");
            }
        }
        Ok(())
    }
}

/// The document an event puts in the read store: the order as it stands
/// after the event, versioned by the event's aggregate version.
pub fn to_document(event: &OutboxEvent, order_event: &OrderEvent) -> OrderDocument {
    let order = order_event.order().clone();
    OrderDocument {
        id: order.order_id,
        user_id: order.user_id,
        username: order.username,
        skus: order.items.iter().map(|i| i.sku.clone()).collect(),
        items: order.items,
        total_cents: order.total_cents,
        currency: order.currency,
        note: order.note,
        placed_at: order.placed_at,
        status: order_event.status(),
        cancelled_at: match order_event {
            OrderEvent::Cancelled(c) => Some(c.cancelled_at),
            OrderEvent::Placed(_) => None,
        },
        version: i64::from(event.aggregate_version),
    }
}

/// The `order-visible` notice of an event search now shows (or, with
/// `READ_STORE=postgres`, that its own transaction made visible): the one
/// place that builds it, for both modes.
fn visible_notice(event: &OutboxEvent, order_event: &OrderEvent) -> NewNotice {
    NewNotice {
        user_id: event.user_id,
        order_id: event.aggregate_id,
        order_version: event.aggregate_version,
        kind: notice_log::ORDER_VISIBLE,
        status: order_event.status().as_str(),
        error: None,
        committed_at: Some(event.created_at),
    }
}

fn failed_notice(event: &OutboxEvent, reason: &str) -> NewNotice {
    NewNotice {
        user_id: event.user_id,
        order_id: event.aggregate_id,
        order_version: event.aggregate_version,
        kind: notice_log::ORDER_FAILED,
        status: "failed",
        // Clients see that it failed, not Elasticsearch's internals.
        error: Some(if reason.starts_with("unknown event") {
            "this kind of change cannot be shown yet".to_owned()
        } else {
            "the order could not be made searchable".to_owned()
        }),
        committed_at: Some(event.created_at),
    }
}

/// A document the read store could not take for now, as the bus names it.
fn passing(failure: ItemFailure) -> Failure {
    Failure {
        kind: failure.kind,
        detail: failure.detail,
    }
}

/// Names a read-store failure of the whole batch for the relay (which knows
/// only the bus): Elasticsearch's error type, `elasticsearch_unreachable`,
/// or `status_<code>`.
fn name_failure(error: anyhow::Error) -> anyhow::Error {
    let kind = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<IndexError>()
            .and_then(IndexError::kind)
    });
    match kind {
        Some(kind) => error.context(FailureKind(kind)),
        None => error,
    }
}

use crate::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::counter("sightline_duplicates_acknowledged_total", "Redelivered events the read store already had (acknowledged, not applied again)."),
    Metric::counter("sightline_notices_recorded_total", "Notices recorded in the notice log."),
    Metric::seconds("sightline_commit_to_searchable_seconds", "From an event's commit to its batch being searchable."),
];
