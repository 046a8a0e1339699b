//! Dead letters: the events the relay parked (poison, or out of retries),
//! listed, and handed back to the relay one by one or by filter
//! (`sightline outbox dead`, `sightline outbox retry`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::WAKE_CHANNEL;

/// A parked event, as `sightline outbox dead` lists it.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
pub struct DeadLetter {
    pub outbox_id: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub aggregate_id: Uuid,
    pub aggregate_version: i32,
    pub error: String,
    pub attempts: i32,
    pub parked_at: DateTime<Utc>,
}

pub async fn dead_letters(db: &sqlx::PgPool) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(
        "SELECT d.outbox_id, o.event_type, o.schema_version, o.aggregate_id, o.aggregate_version,
                d.error, d.attempts, d.parked_at
         FROM dead_letters d JOIN outbox o ON o.id = d.outbox_id ORDER BY d.outbox_id",
    )
    .fetch_all(db)
    .await
}

/// Puts a parked event back in the relay's way. Returns false when no such
/// dead letter exists. The dead-letter row stays until the retry succeeds or
/// parks it again (with one more attempt counted).
pub async fn retry(db: &sqlx::PgPool, id: i64) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    // A distributed bus gets it again from the relay (`relayed_at` cleared),
    // under a new message id (`relay_attempt`), so it is no duplicate.
    let found = sqlx::query(
        "UPDATE outbox SET parked = false, relayed_at = NULL, relay_attempt = relay_attempt + 1
         WHERE id = $1 AND parked AND EXISTS (SELECT 1 FROM dead_letters WHERE outbox_id = $1)",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if found {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKE_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// Which parked events `outbox retry` puts back: every filter given must
/// hold; none given selects every parked event.
#[derive(Debug, Default, Clone)]
pub struct RetryFilter {
    /// The error contains this text (case-insensitive), e.g.
    /// `cluster_block_exception`.
    pub error_contains: Option<String>,
    /// Parked at or after this time.
    pub parked_after: Option<DateTime<Utc>>,
    /// Parked before this time.
    pub parked_before: Option<DateTime<Utc>>,
}

const PARKED_MATCHING: &str = "
    SELECT d.outbox_id, o.event_type, o.schema_version, o.aggregate_id, o.aggregate_version,
           d.error, d.attempts, d.parked_at
    FROM dead_letters d JOIN outbox o ON o.id = d.outbox_id
    WHERE o.parked
      AND ($1::text IS NULL OR strpos(lower(d.error), lower($1)) > 0)
      AND ($2::timestamptz IS NULL OR d.parked_at >= $2)
      AND ($3::timestamptz IS NULL OR d.parked_at < $3)
    ORDER BY d.outbox_id";

/// The parked events `filter` selects (what `retry_matching` would put back).
pub async fn parked_matching(
    db: &sqlx::PgPool,
    filter: &RetryFilter,
) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(PARKED_MATCHING)
        .bind(&filter.error_contains)
        .bind(filter.parked_after)
        .bind(filter.parked_before)
        .fetch_all(db)
        .await
}

/// Puts every parked event `filter` selects back in the relay's way, in one
/// transaction, and returns them. As with `retry`, each dead-letter row stays
/// until its retry succeeds or parks it again. For events parked by a fault
/// that has passed (or by a version that took one for poison).
pub async fn retry_matching(
    db: &sqlx::PgPool,
    filter: &RetryFilter,
) -> sqlx::Result<Vec<DeadLetter>> {
    let mut tx = db.begin().await?;
    let picked: Vec<DeadLetter> = sqlx::query_as(&format!("{PARKED_MATCHING} FOR UPDATE OF o"))
        .bind(&filter.error_contains)
        .bind(filter.parked_after)
        .bind(filter.parked_before)
        .fetch_all(&mut *tx)
        .await?;
    let ids: Vec<i64> = picked.iter().map(|d| d.outbox_id).collect();
    if !ids.is_empty() {
        sqlx::query("UPDATE outbox SET parked = false WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKE_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(picked)
}
