//! The outbox: the write side's only way out.
//!
//! Events are appended in the same transaction as the state change they
//! describe, so an order and its event commit or vanish together. The relay
//! claims what is unpublished; `rebuild` replays the whole log through the
//! read functions here. This module owns the `outbox` and `dead_letters`
//! tables (see docs/ARCHITECTURE.md, *One owner per table*): appending,
//! claiming, replaying and marking are here; [`backlog`] (the lag monitor's
//! sample, `outbox status`), [`parked`] (dead letters and retries) and
//! [`prune`] (retention) beside it. Published rows stay: the outbox doubles
//! as the event log.

pub mod backlog;
pub mod events;
pub mod parked;
pub mod prune;
pub mod stamps;
pub mod wake;

pub use backlog::{OutboxStatus, backlog, status};
pub use parked::{DeadLetter, RetryFilter, dead_letters, parked_matching, retry, retry_matching};
pub use prune::{PrunePlan, parse_cutoff, prune, prune_plan};
pub use stamps::{Stamps, forget_journeys};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The channel the relay listens on: written to after writes (see `wake`)
/// and by the commands that hand events back to the relay.
pub const WAKE_CHANNEL: &str = "sightline_outbox";

pub struct NewEvent {
    pub event_type: &'static str,
    pub schema_version: i32,
    pub aggregate_id: Uuid,
    pub aggregate_version: i32,
    pub user_id: Uuid,
    pub payload: Value,
    /// The trace context of the request that writes it (W3C `traceparent`;
    /// `None` unless traces are exported: `telemetry::traces`).
    pub traceparent: Option<String>,
}

/// Serialisable: a distributed bus carries it as it is (JSON).
#[derive(sqlx::FromRow, Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// How often `outbox retry` put it back in the relay's way (0: never;
    /// also when a query does not select it).
    #[serde(default)]
    #[sqlx(default)]
    pub relay_attempt: i32,
    /// The trace context (W3C `traceparent`) of the request that wrote it,
    /// or of the last hop that handed it on (the relay's `relay.publish`
    /// span, see `telemetry::traces`); `None` when no trace is exported.
    /// On NATS it travels in the message's `traceparent` header, not in the
    /// JSON (so other consumers see the standard header, and an untraced
    /// message is as long as before).
    #[serde(default, skip_serializing)]
    #[sqlx(default)]
    pub traceparent: Option<String>,
}

/// The statement [`append`] runs: `$1` event id, `$2` type, `$3` schema
/// version, `$4` aggregate id, `$5` aggregate version, `$6` user id, `$7`
/// payload, `$8` traceparent (NULL unless a trace is exported). Public so
/// the benchmark's bare write rate runs exactly this SQL through `pgbench`.
pub fn append_sql() -> String {
    format!(
        "INSERT INTO outbox (event_id, event_type, schema_version, aggregate_id,
                             aggregate_version, user_id, payload, created_at, traceparent)
         SELECT $1, $2, $3, $4, $5, $6, $7, clock_timestamp(), $8
         WHERE pg_current_xact_id() IS NOT NULL
         RETURNING {COLUMNS}"
    )
}

/// Appends an event inside the caller's transaction and returns it as
/// stored. Its `created_at` is the insert's own time (`clock_timestamp()`,
/// not the transaction's start): the append is the transaction's last write,
/// so that is its journey's "committed" within a fraction of a millisecond. It does not wake the relay: a NOTIFY here would serialise every
/// write's commit on PostgreSQL's notification-queue lock; the web wakes it
/// once the request is answered ([`wake`]), and the relay's safety poll
/// covers the rest.
pub async fn append(conn: &mut PgConnection, event: NewEvent) -> sqlx::Result<OutboxEvent> {
    // The transaction takes its id (if it has none yet) before the event
    // takes its outbox id: a rebuild that saw that outbox id missing knows,
    // once every transaction older than its snapshot has ended, that the id
    // will never appear (see `operations::rebuild`). The filter is evaluated
    // before the row (and its `nextval` default) is formed, so one statement
    // keeps that order without a round trip of its own.
    sqlx::query_as(&append_sql())
        .bind(Uuid::new_v4())
        .bind(event.event_type)
        .bind(event.schema_version)
        .bind(event.aggregate_id)
        .bind(event.aggregate_version)
        .bind(event.user_id)
        .bind(event.payload)
        // The request's span (`None`, bound as NULL, when nothing exports).
        .bind(event.traceparent)
        .fetch_one(&mut *conn)
        .await
}

/// Claims up to `limit` unpublished events, oldest first, locking them for the
/// caller's transaction. `SKIP LOCKED` lets several relays share the work; a
/// row of a transaction still open is simply not visible yet and is claimed
/// once it commits, so nothing is skipped however commits interleave.
pub async fn claim_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> sqlx::Result<Vec<OutboxEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox
         WHERE published_at IS NULL AND relayed_at IS NULL AND NOT parked
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// The columns of an [`OutboxEvent`].
const COLUMNS: &str = "id, event_id, event_type, schema_version, aggregate_id, aggregate_version,
                       user_id, payload, created_at, relay_attempt, traceparent";

/// Up to `limit` events after `after`, in id order, published or not (a
/// replay of the log).
pub async fn after(db: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<OutboxEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Up to `limit` unpublished, unparked events after `after` whose order
/// version has no notice yet, in id order, without claiming them (the
/// same-database mode's start-up catch-up: in that mode every event stays
/// unpublished, and all but what the relay left undelivered are noticed).
pub async fn unnoticed_after(
    db: &PgPool,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<OutboxEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox o
         WHERE published_at IS NULL AND NOT parked AND id > $1
           AND NOT EXISTS (SELECT 1 FROM notices n
                            WHERE n.order_id = o.aggregate_id
                              AND n.order_version >= o.aggregate_version
                              AND n.kind = 'order-visible')
         ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks published those of `ids` whose order version is already noticed:
/// a `rebuild` run in the same-database mode (no relay) has written them
/// into the new index, so the relay of the Elasticsearch mode, once
/// switched to, starts after them. An event not yet noticed is left to the
/// relay, which then notices it.
pub async fn mark_replayed(db: &PgPool, ids: &[i64]) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE outbox o SET published_at = clock_timestamp()
         WHERE o.id = ANY($1) AND o.published_at IS NULL AND NOT o.parked
           AND EXISTS (SELECT 1 FROM notices n
                        WHERE n.order_id = o.aggregate_id
                          AND n.order_version >= o.aggregate_version
                          AND n.kind = 'order-visible')",
    )
    .bind(ids)
    .execute(db)
    .await?
    .rows_affected())
}

/// The events with ids in any of the inclusive ranges `starts[i]..=ends[i]`,
/// in id order.
pub async fn in_ranges(
    db: &PgPool,
    starts: &[i64],
    ends: &[i64],
) -> sqlx::Result<Vec<OutboxEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM UNNEST($1::bigint[], $2::bigint[]) AS g (s, e)
         JOIN outbox ON outbox.id BETWEEN g.s AND g.e
         ORDER BY outbox.id"
    ))
    .bind(starts)
    .bind(ends)
    .fetch_all(db)
    .await
}

/// How many events there are after `after`.
pub async fn count_after(db: &PgPool, after: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE id > $1")
        .bind(after)
        .fetch_one(db)
        .await
}

/// The users with an event unpublished or published since `since`: whose
/// projected state may have changed since then.
pub async fn users_changed_since(db: &PgPool, since: DateTime<Utc>) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM outbox WHERE published_at IS NULL OR published_at >= $1",
    )
    .bind(since)
    .fetch_all(db)
    .await
}

/// Marks events published; a retried dead letter leaves the dead-letter table.
///
/// `published_at` is the clock at marking, not the transaction's start
/// (`now()`): marking follows the projection, so it is later than anything
/// the batch changed. A rebuild relies on that to find the summaries that
/// changed while it copied them.
pub async fn mark_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
    stamps: &Stamps,
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    if stamps.is_empty() {
        // Journeys not recorded (`RECORD_JOURNEYS=false`): the statement
        // as it was before them, so the benchmark compares the two.
        sqlx::query(
            "WITH retried AS (DELETE FROM dead_letters WHERE outbox_id = ANY($1))
             UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1)",
        )
        .bind(ids)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    // One round trip: a data-modifying CTE runs whether or not it is read.
    // The journey's times are kept where set (a redelivery does not move
    // them); `unnest` pads a shorter `delivered` with NULLs.
    sqlx::query(
        "WITH retried AS (DELETE FROM dead_letters WHERE outbox_id = ANY($1)),
              batch AS (SELECT * FROM unnest($1::bigint[], $2::timestamptz[]) AS b (id, delivered))
         UPDATE outbox o SET published_at = clock_timestamp(),
                claimed_at = COALESCE(o.claimed_at, $3),
                handed_at = COALESCE(o.handed_at, $4),
                delivered_at = COALESCE(o.delivered_at, b.delivered, $5),
                indexed_at = COALESCE(o.indexed_at, $6),
                searchable_at = COALESCE(o.searchable_at, $7)
           FROM batch b WHERE o.id = b.id",
    )
    .bind(ids)
    .bind(&stamps.delivered_each)
    .bind(stamps.claimed_at)
    .bind(stamps.handed_at)
    .bind(stamps.delivered_at)
    .bind(stamps.indexed_at)
    .bind(stamps.searchable_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records that a distributed bus has durably taken these events (its
/// acknowledgement): the relay no longer claims them; the projector marks
/// them published once they are searchable (see the migration adding
/// `relayed_at`). `stamps` gives the journey's claim and hand-over times.
pub async fn mark_relayed(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
    stamps: &Stamps,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE outbox SET relayed_at = clock_timestamp(),
                claimed_at = COALESCE(claimed_at, $2), handed_at = COALESCE(handed_at, $3)
          WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(stamps.claimed_at)
    .bind(stamps.handed_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records on the journeys of still-unpublished events that an attempt
/// failed for a passing reason (`kind`, one short word): the first failure's
/// time stays, the latest kind replaces the one before.
pub async fn mark_retrying<'c, E>(executor: E, ids: &[i64], kind: &str) -> sqlx::Result<()>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET retried_at = COALESCE(retried_at, clock_timestamp()), retry_reason = $2
          WHERE id = ANY($1) AND published_at IS NULL",
    )
    .bind(ids)
    .bind(kind)
    .execute(executor)
    .await?;
    Ok(())
}

/// Which of these events are published (searchable, notice recorded).
pub async fn published_among(db: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("SELECT id FROM outbox WHERE id = ANY($1) AND published_at IS NOT NULL")
        .bind(ids)
        .fetch_all(db)
        .await
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
