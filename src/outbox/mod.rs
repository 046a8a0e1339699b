//! The outbox: the write side's only way out.
//!
//! Events are appended in the same transaction as the state change they
//! describe, so an order and its event commit or vanish together. The relay is
//! the only reader. Published rows stay: the outbox doubles as the event log.

pub mod events;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// The channel the relay listens on; a commit that appends events wakes it.
pub const WAKE_CHANNEL: &str = "sightline_outbox";

pub struct NewEvent {
    pub event_type: &'static str,
    pub schema_version: i32,
    pub aggregate_id: Uuid,
    pub aggregate_version: i32,
    pub user_id: Uuid,
    pub payload: Value,
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub aggregate_id: Uuid,
    pub aggregate_version: i32,
    pub user_id: Uuid,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Appends an event inside the caller's transaction. `pg_notify` is
/// transactional too: the relay is woken only if the transaction commits.
pub async fn append(conn: &mut PgConnection, event: NewEvent) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, schema_version, aggregate_id,
                             aggregate_version, user_id, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::new_v4())
    .bind(event.event_type)
    .bind(event.schema_version)
    .bind(event.aggregate_id)
    .bind(event.aggregate_version)
    .bind(event.user_id)
    .bind(event.payload)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Claims up to `limit` unpublished events, oldest first, locking them for the
/// caller's transaction. `SKIP LOCKED` lets several relays share the work; a
/// row of a transaction still open is simply not visible yet and is claimed
/// once it commits, so nothing is skipped however commits interleave.
pub async fn claim_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> sqlx::Result<Vec<OutboxEvent>> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, schema_version, aggregate_id, aggregate_version,
                user_id, payload, created_at
         FROM outbox WHERE published_at IS NULL AND NOT parked
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Marks events published; a retried dead letter leaves the dead-letter table.
pub async fn mark_published(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM dead_letters WHERE outbox_id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves a poison event out of the relay's way, into the dead-letter table.
pub async fn park(tx: &mut Transaction<'_, Postgres>, id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE outbox SET parked = true WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO dead_letters (outbox_id, error) VALUES ($1, $2)
         ON CONFLICT (outbox_id) DO UPDATE
         SET error = excluded.error, attempts = dead_letters.attempts + 1, parked_at = now()",
    )
    .bind(id)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where the relay stands: its backlog and its dead letters.
#[derive(Debug, serde::Serialize)]
pub struct OutboxStatus {
    pub backlog: i64,
    pub oldest_pending_age_seconds: Option<f64>,
    pub dead_letters: i64,
    pub published: i64,
}

pub async fn status(db: &sqlx::PgPool) -> sqlx::Result<OutboxStatus> {
    let (backlog, oldest, dead, published): (i64, Option<f64>, i64, i64) = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked),
           (SELECT extract(epoch FROM now() - min(created_at))::float8
              FROM outbox WHERE published_at IS NULL AND NOT parked),
           (SELECT count(*) FROM dead_letters),
           (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL)",
    )
    .fetch_one(db)
    .await?;
    Ok(OutboxStatus {
        backlog,
        oldest_pending_age_seconds: oldest,
        dead_letters: dead,
        published,
    })
}

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
    let found = sqlx::query(
        "UPDATE outbox SET parked = false
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

/// Events not yet published (the relay's backlog).
pub async fn backlog(db: &sqlx::PgPool) -> sqlx::Result<i64> {
    status(db).await.map(|s| s.backlog)
}
