//! The same-database projection (`READ_STORE=postgres`): no copy to move,
//! since the read shape (`read_side::postgres`) reads the write tables. What
//! is left of projecting runs inside the order's own transaction, through
//! the write side's `InTransaction` seam (wired by start-up): the event is
//! counted into the user's summary through the inbox, and its
//! `order-visible` notice is recorded — so the order, its counters and its
//! notice commit together, and a notice never runs ahead of what a list
//! shows. The outbox row stays unpublished: nothing publishes it in this
//! mode (it is the audit trail, and the source of a later `rebuild`).
//!
//! [`catch_up`] does the same at start-up for events the Elasticsearch mode
//! left unpublished (switching back from it), so none goes unnoticed.

use anyhow::Context;
use sqlx::{PgConnection, PgPool};

use crate::outbox::events::OrderEvent;
use crate::outbox::{self, OutboxEvent};
use crate::projector::summaries;
use crate::visibility::notice_log::{self, NewNotice};

/// Counts `events` into their users' summaries and records their notices,
/// inside the caller's transaction. Idempotent, like the projector: the
/// inbox counts an event once, the log records a notice once. Returns how
/// many notices were new. The notice log's locks on these users' streams
/// (and its shared recording lock) are taken last and held until the
/// caller commits; the caller wakes the hubs after its commit.
pub async fn apply(conn: &mut PgConnection, events: &[OutboxEvent]) -> anyhow::Result<usize> {
    let mut decoded = Vec::with_capacity(events.len());
    for event in events {
        match OrderEvent::decode(&event.event_type, event.schema_version, &event.payload) {
            Ok(order_event) => decoded.push((event, order_event)),
            // Only an event of a newer version could be here (the write
            // side wrote every other one); the list shows its order from
            // the tables all the same, but nothing can say what it changed.
            Err(reason) => {
                tracing::warn!(outbox_id = event.id, %reason, "skipping an event this version cannot read")
            }
        }
    }
    let counted: Vec<_> = decoded
        .iter()
        .map(|(event, order_event)| (event.event_id, event.user_id, order_event))
        .collect();
    summaries::count_in(conn, &counted)
        .await
        .context("Failed to count the order into its summary")?;
    let notices: Vec<NewNotice> = decoded
        .iter()
        .map(|(event, order_event)| super::visible_notice(event, order_event))
        .collect();
    let recorded = notice_log::record_in(conn, &notices)
        .await
        .context("Failed to record the order's notice")?;
    metrics::counter!("sightline_notices_recorded_total").increment(recorded.len() as u64);
    Ok(recorded.len())
}

/// Applies every unpublished event without a notice (left by the
/// Elasticsearch mode's relay) in batches: what was committed but not yet
/// projected when the mode was switched is counted and noticed now — a
/// noticed event was counted before its notice, in either mode. Returns the
/// notices recorded.
#[tracing::instrument(skip(db))]
pub async fn catch_up(db: &PgPool, batch_size: i64) -> anyhow::Result<usize> {
    let mut after = 0;
    let mut recorded = 0;
    loop {
        let events = outbox::unnoticed_after(db, after, batch_size)
            .await
            .context("Failed to read the unpublished events")?;
        let Some(last) = events.last() else { break };
        after = last.id;
        let mut tx = db.begin().await?;
        recorded += apply(&mut tx, &events).await?;
        tx.commit().await?;
    }
    Ok(recorded)
}
