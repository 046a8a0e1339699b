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
         FROM outbox WHERE published_at IS NULL
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub async fn mark_published(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Events not yet published (the relay's backlog).
pub async fn backlog(db: &sqlx::PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(db)
        .await
}
