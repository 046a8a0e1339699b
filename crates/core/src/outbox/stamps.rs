//! The journey's stage times an event's row keeps (issue #27; the columns
//! are described in `migrations/20270102000001_order_journeys.sql`): what the
//! relay and the projector hand to the marking statements, and their
//! retention.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The stage times of a batch, written by `mark_published` /
/// `mark_relayed` in the statement that marks it (no round trip of their
/// own). `None` leaves a stage as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stamps {
    /// The relay claimed the batch.
    pub claimed_at: Option<DateTime<Utc>>,
    /// The bus took it (the PubAck with NATS; the hand-over in process).
    pub handed_at: Option<DateTime<Utc>>,
    /// A projector received it (the batch's time, for every event).
    pub delivered_at: Option<DateTime<Utc>>,
    /// Per event, in the order of the ids marked, when it was received
    /// (with NATS each event arrives on its own); empty: `delivered_at`.
    pub delivered_each: Vec<DateTime<Utc>>,
    /// The bulk request that wrote the batch returned.
    pub indexed_at: Option<DateTime<Utc>>,
    /// The refresh that made it searchable returned.
    pub searchable_at: Option<DateTime<Utc>>,
}

impl Stamps {
    /// No stage time at all (journeys not recorded).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How many events committed before `cutoff` still have a journey (what
/// [`forget_journeys`] would forget).
pub async fn count_journeys_before(db: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE created_at < $1 AND NOT journey_pruned")
        .bind(cutoff)
        .fetch_one(db)
        .await
}

/// Forgets the stage times of events committed before `cutoff`, `batch`
/// rows per statement, and marks their journeys pruned (the notice log's
/// retention: `sightline prune`). Walks the log in id order once; returns
/// how many journeys went.
pub async fn forget_journeys(db: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> sqlx::Result<i64> {
    let batch = batch.max(1);
    let mut after = 0i64;
    let mut total = 0;
    loop {
        // Ids grow with commit time (nearly: transactions interleave), so
        // the walk stops at the first page with nothing old in it.
        let (last, old, forgotten): (Option<i64>, Option<bool>, i64) = sqlx::query_as(
            "WITH page AS (
               SELECT id, created_at FROM outbox WHERE id > $1 ORDER BY id LIMIT $2
             ), forgotten AS (
               UPDATE outbox o
                  SET claimed_at = NULL, handed_at = NULL, delivered_at = NULL,
                      indexed_at = NULL, searchable_at = NULL, retried_at = NULL,
                      retry_reason = NULL, journey_pruned = true
                 FROM page
                WHERE o.id = page.id AND page.created_at < $3 AND NOT o.journey_pruned
               RETURNING 1
             )
             SELECT max(id), bool_or(created_at < $3), (SELECT count(*) FROM forgotten)
               FROM page",
        )
        .bind(after)
        .bind(batch)
        .bind(cutoff)
        .fetch_one(db)
        .await?;
        total += forgotten;
        match (last, old) {
            (Some(last), Some(true)) => after = last,
            _ => break,
        }
    }
    Ok(total)
}
