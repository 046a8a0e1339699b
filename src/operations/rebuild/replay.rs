//! What goes into the new indices: a pass over the outbox (the id ranges
//! read past while empty, then everything after the last id replayed),
//! each batch written with the projector's own documents and external
//! versions, the summaries copied from `user_summaries`, and the bulk
//! writes' retries.

use std::time::Duration;

use anyhow::{Context, bail};
use elasticsearch::params::Refresh;
use serde_json::Value;
use uuid::Uuid;

use super::log;
use super::{Pass, Rebuild};
use crate::outbox::events::OrderEvent;
use crate::outbox::{self, OutboxEvent};
use crate::read_side::index::{SearchIndex, WriteOutcome};

/// Attempts at a bulk write whose items Elasticsearch answered with 429/5xx.
const WRITE_ATTEMPTS: u32 = 6;

impl Rebuild {
    /// One pass: what has appeared in the gaps (id ranges read past while
    /// empty), then every event after the last one replayed. Afterwards
    /// each committed event is replayed, or above the last id, or in a gap.
    pub(super) async fn pass(&mut self, may_stop: bool) -> anyhow::Result<Pass> {
        let mut replayed = 0u64;

        if !self.row.gap_starts.is_empty() {
            // Read the xmin first: in a gap whose possible owners had all
            // ended by then, the query below finds everything there will be.
            let xmin: i64 =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(&self.db)
                    .await?;
            let events =
                outbox::in_ranges(&self.db, &self.row.gap_starts, &self.row.gap_ends).await?;
            if !events.is_empty() {
                self.replay(&events).await?;
                replayed += events.len() as u64;
            }
            // Open gaps stay (what was found is replayed again: harmless).
            let row = &mut self.row;
            let open: Vec<usize> = (0..row.gap_xmaxes.len())
                .filter(|&i| row.gap_xmaxes[i] > xmin)
                .collect();
            row.gap_starts = open.iter().map(|&i| row.gap_starts[i]).collect();
            row.gap_ends = open.iter().map(|&i| row.gap_ends[i]).collect();
            row.gap_xmaxes = open.iter().map(|&i| row.gap_xmaxes[i]).collect();
            self.save(events.len()).await?;
        }

        loop {
            let events = outbox::after(&self.db, self.row.last_outbox_id, self.batch_size).await?;
            let Some(last) = events.last().map(|e| e.id) else {
                break;
            };
            let gaps = gaps_in(self.row.last_outbox_id, &events);
            if !gaps.is_empty() {
                // Read after the query: a transaction that could own an id
                // in a gap had its transaction id (below this) before.
                let xmax: i64 = sqlx::query_scalar(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
                )
                .fetch_one(&self.db)
                .await?;
                for (start, end) in gaps {
                    self.row.gap_starts.push(start);
                    self.row.gap_ends.push(end);
                    self.row.gap_xmaxes.push(xmax);
                }
            }
            self.replay(&events).await?;
            replayed += events.len() as u64;
            self.row.last_outbox_id = last;
            self.report.last_outbox_id = last;
            self.save(events.len()).await?;
            if may_stop && self.batch_done() {
                return Ok(Pass::Stopped);
            }
        }
        Ok(Pass::Done(replayed))
    }

    /// Persists how far the rebuild got (after the batch is written).
    async fn save(&self, replayed: usize) -> sqlx::Result<()> {
        log::save(&self.db, &self.row, replayed).await
    }

    /// Counts a batch; true when the run should stop here.
    fn batch_done(&mut self) -> bool {
        self.batches += 1;
        self.stop_after.is_some_and(|n| self.batches >= n)
    }

    /// Writes a batch of events into the new orders index.
    async fn replay(&mut self, events: &[OutboxEvent]) -> anyhow::Result<()> {
        let mut writes = Vec::with_capacity(events.len());
        for event in events {
            match OrderEvent::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(order_event) => {
                    let doc = crate::projector::to_document(event, &order_event);
                    writes.push((doc.id.to_string(), doc.version, serde_json::to_value(&doc)?));
                }
                Err(reason) => {
                    tracing::debug!(outbox_id = event.id, %reason, "skipping an undecodable event");
                    self.report.undecodable += 1;
                }
            }
        }
        let index = self.row.orders_index.clone();
        self.report.rejected += write_all(&self.store, &index, writes).await?;
        if self.mark_published {
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            outbox::mark_replayed(&self.db, &ids).await?;
        }
        self.report.replayed += events.len() as u64;
        let bar = &self.bar;
        if bar.position() + events.len() as u64 > bar.length().unwrap_or(0) {
            bar.set_length(bar.position() + events.len() as u64);
        }
        bar.inc(events.len() as u64);
        Ok(())
    }

    /// Copies summaries from `user_summaries` (all, or these users') into the
    /// new summaries index, keyed on their revision.
    pub(super) async fn copy_summaries(&mut self, users: Option<&[Uuid]>) -> anyhow::Result<()> {
        let mut cursor = Uuid::nil();
        loop {
            let rows =
                crate::projector::summaries::page(&self.db, cursor, self.batch_size, users).await?;
            let Some(last) = rows.last() else { break };
            cursor = last.user_id;
            let count = rows.len() as u64;
            let writes = rows
                .into_iter()
                .map(|doc| {
                    Ok((
                        doc.user_id.to_string(),
                        doc.revision,
                        serde_json::to_value(&doc)?,
                    ))
                })
                .collect::<Result<Vec<_>, serde_json::Error>>()?;
            let index = self.row.summaries_index.clone();
            self.report.rejected += write_all(&self.store, &index, writes).await?;
            self.report.summaries += count;
        }
        Ok(())
    }
}

/// The id ranges after `after` and below the last event that `events`
/// (sorted by id) lacks.
fn gaps_in(after: i64, events: &[OutboxEvent]) -> Vec<(i64, i64)> {
    let mut gaps = Vec::new();
    let mut expected = after + 1;
    for event in events {
        if event.id > expected {
            gaps.push((expected, event.id - 1));
        }
        expected = event.id + 1;
    }
    gaps
}

/// Writes versioned documents, retrying those Elasticsearch answered with a
/// passing failure. Returns how many it refused for good.
async fn write_all(
    store: &SearchIndex,
    index: &str,
    mut writes: Vec<(String, i64, Value)>,
) -> anyhow::Result<u64> {
    let mut rejected = 0;
    for attempt in 1..=WRITE_ATTEMPTS {
        let outcomes = match store
            .bulk_versioned(index, writes.clone(), Refresh::False)
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "bulk write failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                continue;
            }
            Err(e) => return Err(e).context("Failed to write to the new index"),
        };
        let mut retry = Vec::new();
        for (write, outcome) in writes.into_iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Applied | WriteOutcome::AlreadyApplied => {}
                WriteOutcome::Rejected(reason) => {
                    tracing::warn!(id = %write.0, %reason, "Elasticsearch refused a document");
                    rejected += 1;
                }
                WriteOutcome::Failed(_) => retry.push(write),
            }
        }
        if retry.is_empty() {
            return Ok(rejected);
        }
        writes = retry;
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    bail!(
        "{} documents still failed after {WRITE_ATTEMPTS} attempts; run again to resume",
        writes.len()
    )
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn events(ids: &[i64]) -> Vec<OutboxEvent> {
        ids.iter()
            .map(|&id| OutboxEvent {
                id,
                event_id: Uuid::nil(),
                event_type: String::new(),
                schema_version: 1,
                aggregate_id: Uuid::nil(),
                aggregate_version: 1,
                user_id: Uuid::nil(),
                payload: Value::Null,
                created_at: Utc::now(),
                relay_attempt: 0,
                traceparent: None,
            })
            .collect()
    }

    #[test]
    fn gaps_are_the_missing_ranges_below_the_last_id() {
        assert_eq!(gaps_in(0, &events(&[1, 2, 3])), vec![]);
        assert_eq!(gaps_in(0, &events(&[3, 4, 7])), vec![(1, 2), (5, 6)]);
        assert_eq!(gaps_in(10, &events(&[12])), vec![(11, 11)]);
        assert_eq!(gaps_in(10, &events(&[])), vec![]);
    }
}
