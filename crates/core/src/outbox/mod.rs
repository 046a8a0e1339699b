//! The outbox: the write side's only way out.
//!
//! Events are appended in the same transaction as the state change they
//! describe, so an order and its event commit or vanish together. The relay
//! claims what is unpublished; `rebuild` replays the whole log through the
//! read functions here. Appending, claiming and replaying are here; other
//! modules still read the table in their own SQL (`monitoring`'s lag,
//! `read_side::read_your_writes`, `visibility::notice_log` and
//! `visibility::retention`), and this module reads `notices` in turn.
//! Published rows stay: the outbox doubles as the event log.

pub mod events;
pub mod wake;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::locks;

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
}

/// Appends an event inside the caller's transaction and returns it as
/// stored. It does not wake the relay: a NOTIFY here would serialise every
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
    sqlx::query_as(&format!(
        "INSERT INTO outbox (event_id, event_type, schema_version, aggregate_id,
                             aggregate_version, user_id, payload)
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE pg_current_xact_id() IS NOT NULL
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(event.event_type)
    .bind(event.schema_version)
    .bind(event.aggregate_id)
    .bind(event.aggregate_version)
    .bind(event.user_id)
    .bind(event.payload)
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
                       user_id, payload, created_at, relay_attempt";

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
pub async fn mark_published(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM dead_letters WHERE outbox_id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records that a distributed bus has durably taken these events (its
/// acknowledgement): the relay no longer claims them; the projector marks
/// them published once they are searchable (see the migration adding
/// `relayed_at`).
pub async fn mark_relayed(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("UPDATE outbox SET relayed_at = clock_timestamp() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// [`mark_published`] in a transaction of its own: for the projector of a
/// distributed bus, which holds no claim.
pub async fn mark_projected(db: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    mark_published(&mut tx, ids).await?;
    tx.commit().await
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

/// The backlog in one cheap query, for the lag monitor's every sample:
/// pending events, the oldest pending one's age in seconds (0 with none),
/// and parked ones. ([`status`] adds a count of every published event,
/// which is too dear to take each second.)
pub async fn backlog(db: &PgPool) -> sqlx::Result<(i64, f64, i64)> {
    sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked),
           coalesce((SELECT extract(epoch FROM clock_timestamp() - min(created_at))::float8
                       FROM outbox WHERE published_at IS NULL AND NOT parked), 0),
           (SELECT count(*) FROM dead_letters)",
    )
    .fetch_one(db)
    .await
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

/// What `prune` would delete, and what it keeps although it is old.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// Published, not parked, published before the cutoff: deletable.
    pub deletable: i64,
    /// Created before the cutoff but never published: kept.
    pub unpublished: i64,
    /// Created before the cutoff and parked (dead letters): kept.
    pub parked: i64,
}

/// Counts what pruning events published before `before` would do.
pub async fn prune_plan(db: &sqlx::PgPool, before: DateTime<Utc>) -> sqlx::Result<PrunePlan> {
    let (deletable, unpublished, parked): (i64, i64, i64) = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM outbox WHERE published_at < $1 AND NOT parked),
           (SELECT count(*) FROM outbox
              WHERE published_at IS NULL AND NOT parked AND created_at < $1),
           (SELECT count(*) FROM outbox WHERE parked AND created_at < $1)",
    )
    .bind(before)
    .fetch_one(db)
    .await?;
    Ok(PrunePlan {
        deletable,
        unpublished,
        parked,
    })
}

/// Deletes published, non-parked events published before `before`, `batch`
/// rows per transaction, and returns how many went. Unpublished and parked
/// events are never deleted (the relay and `outbox retry` still need them).
///
/// Refuses while a rebuild is running or unfinished: its new index would lack
/// the orders whose events went. Pruning trades away the ability to rebuild
/// the pruned orders from the log at all; `rebuild` refuses to swap to an
/// index with fewer orders than the live one unless told otherwise.
pub async fn prune(db: &sqlx::PgPool, before: DateTime<Utc>, batch: i64) -> anyhow::Result<u64> {
    use anyhow::Context;
    let mut guard = db
        .acquire()
        .await
        .context("Failed to get a connection")?
        .detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(locks::MAINTENANCE)
        .fetch_one(&mut guard)
        .await?;
    if !locked {
        anyhow::bail!("a rebuild is running: prune once it has finished");
    }
    let unfinished = crate::rebuild_log::unfinished_index(&mut guard).await?;
    if let Some(index) = unfinished {
        anyhow::bail!(
            "a rebuild into {index} was interrupted: finish it (`sightline rebuild`) \
             or abandon it (`sightline rebuild --abandon`) before pruning"
        );
    }
    let mut deleted = 0u64;
    loop {
        // `published_at < $1` excludes unpublished rows (NULL), `NOT parked`
        // the dead letters; the dead-letter check is belt and braces.
        let n = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
               SELECT id FROM outbox
               WHERE published_at < $1 AND NOT parked
                 AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.outbox_id = outbox.id)
               ORDER BY published_at LIMIT $2)",
        )
        .bind(before)
        .bind(batch.max(1))
        .execute(&mut guard)
        .await?
        .rows_affected();
        deleted += n;
        if n == 0 {
            break;
        }
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(locks::MAINTENANCE)
        .execute(&mut guard)
        .await?;
    let _ = sqlx::Connection::close(guard).await;
    Ok(deleted)
}

/// Parses a prune (or retry) cutoff: an RFC 3339 timestamp
/// (`2026-01-31T00:00:00Z`), a date (`2026-01-31`, midnight UTC), or an age
/// in days (`30d`, `30 days`), hours (`6h`) or minutes (`15min`). A cutoff
/// in the future is refused.
pub fn parse_cutoff(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = input.trim();
    let age = |suffixes: &[&str]| {
        suffixes
            .iter()
            .find_map(|suffix| s.strip_suffix(suffix))
            .map(str::trim)
            .and_then(|n| n.parse::<u32>().ok())
            .map(i64::from)
    };
    let cutoff = if let Some(days) = age(&["days", "day", "d"]) {
        now - chrono::Duration::days(days)
    } else if let Some(hours) = age(&["hours", "hour", "h"]) {
        now - chrono::Duration::hours(hours)
    } else if let Some(minutes) = age(&["minutes", "minute", "min"]) {
        now - chrono::Duration::minutes(minutes)
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_time(chrono::NaiveTime::MIN).and_utc()
    } else {
        return Err(format!(
            "{input:?} is neither a date (2026-01-31, 2026-01-31T00:00:00Z) nor an age (30d, 6h, 15min)"
        ));
    };
    if cutoff > now {
        return Err(format!("{input:?} is in the future"));
    }
    Ok(cutoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_are_dates_or_ages_never_in_the_future() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let days_ago = |d| now - chrono::Duration::days(d);
        assert_eq!(parse_cutoff("30d", now), Ok(days_ago(30)));
        assert_eq!(parse_cutoff("30 days", now), Ok(days_ago(30)));
        assert_eq!(parse_cutoff("1 day", now), Ok(days_ago(1)));
        assert_eq!(parse_cutoff("0d", now), Ok(now));
        assert_eq!(
            parse_cutoff("6h", now),
            Ok(now - chrono::Duration::hours(6))
        );
        assert_eq!(
            parse_cutoff("2 hours", now),
            Ok(now - chrono::Duration::hours(2))
        );
        assert_eq!(
            parse_cutoff("15min", now),
            Ok(now - chrono::Duration::minutes(15))
        );
        assert_eq!(
            parse_cutoff("2026-01-31T06:00:00+02:00", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-01-31T04:00:00Z").unwrap()
        );
        assert_eq!(
            parse_cutoff("2026-01-31", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-01-31T00:00:00Z").unwrap()
        );
        assert!(
            parse_cutoff("2027-01-01", now)
                .unwrap_err()
                .contains("future")
        );
        assert!(parse_cutoff("-3d", now).is_err());
        assert!(parse_cutoff("soon", now).is_err());
    }
}
