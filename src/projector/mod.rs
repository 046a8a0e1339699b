//! Where an order becomes searchable.
//!
//! The projector is a dumb data mover: it copies events into the read model
//! with the domain version as an external version (so replays and reordering
//! are harmless), makes the batch searchable, and only then records the
//! notices. No business rules, no validation.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use chrono::Utc;
use sqlx::PgPool;

use crate::config::RefreshMode;
use crate::outbox::{OutboxEvent, events};
use crate::read_side::document::OrderDocument;
use crate::read_side::index::{OrderIndex, WriteOutcome};
use crate::relay::bus::Delivery;
use crate::visibility::notice_log::{self, NewNotice};

pub struct Projector {
    db: PgPool,
    index: OrderIndex,
    refresh: RefreshMode,
    index_ready: AtomicBool,
}

impl Projector {
    pub fn new(db: PgPool, index: OrderIndex, refresh: RefreshMode) -> Self {
        Self {
            db,
            index,
            refresh,
            index_ready: AtomicBool::new(false),
        }
    }

    /// Projects a batch; what it returns as taken is searchable and has its
    /// notice recorded.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn project(&self, events: &[OutboxEvent]) -> anyhow::Result<Delivery> {
        if !self.index_ready.load(Ordering::Relaxed) {
            self.index
                .ensure_exists()
                .await
                .context("Failed to prepare the orders index")?;
            self.index_ready.store(true, Ordering::Relaxed);
        }

        let mut delivery = Delivery::default();
        let mut docs = Vec::with_capacity(events.len());
        let mut sources = Vec::with_capacity(events.len());
        for event in events {
            match to_document(event) {
                Ok(doc) => {
                    docs.push(doc);
                    sources.push(event);
                }
                Err(reason) => delivery.refused.push((event.id, reason)),
            }
        }
        if docs.is_empty() {
            return Ok(delivery);
        }

        let outcomes = self
            .index
            .bulk_write(&docs, self.refresh)
            .await
            .context("Failed to write the batch to the read model")?;
        let already_applied = outcomes.contains(&WriteOutcome::AlreadyApplied);
        // `wait_for` does not wait for documents written by an earlier,
        // interrupted attempt: refresh explicitly when there were any.
        if self.refresh == RefreshMode::Explicit || already_applied {
            self.index
                .refresh()
                .await
                .context("Failed to refresh the read model")?;
        }

        let mut notices = Vec::with_capacity(docs.len());
        for ((event, doc), outcome) in sources.iter().zip(&docs).zip(outcomes) {
            match outcome {
                WriteOutcome::Applied | WriteOutcome::AlreadyApplied => {
                    if outcome == WriteOutcome::AlreadyApplied {
                        metrics::counter!("sightline_duplicates_acknowledged_total").increment(1);
                    }
                    notices.push(NewNotice {
                        user_id: doc.user_id,
                        order_id: doc.id,
                        order_version: event.aggregate_version,
                    });
                    delivery.taken.push(event.id);
                    let lag = (Utc::now() - event.created_at).num_milliseconds().max(0);
                    metrics::histogram!("sightline_commit_to_searchable_seconds")
                        .record(lag as f64 / 1000.0);
                }
                WriteOutcome::Failed(reason) => delivery.refused.push((event.id, reason)),
            }
        }
        // Searchable now: the notices may go out.
        let recorded = notice_log::record(&self.db, &notices)
            .await
            .context("Failed to record notices")?;
        metrics::counter!("sightline_notices_recorded_total").increment(recorded.len() as u64);
        Ok(delivery)
    }
}

/// Translates an event into the document it puts in the read model.
fn to_document(event: &OutboxEvent) -> Result<OrderDocument, String> {
    match (event.event_type.as_str(), event.schema_version) {
        (events::ORDER_PLACED, 1) => {
            let e: events::OrderPlacedV1 = serde_json::from_value(event.payload.clone())
                .map_err(|err| format!("undecodable {} v1: {err}", event.event_type))?;
            Ok(OrderDocument {
                id: e.order_id,
                user_id: e.user_id,
                username: e.username,
                skus: e.items.iter().map(|i| i.sku.clone()).collect(),
                items: e.items,
                total_cents: e.total_cents,
                note: e.note,
                placed_at: e.placed_at,
                version: i64::from(event.aggregate_version),
            })
        }
        (kind, version) => Err(format!("unknown event {kind} v{version}")),
    }
}
