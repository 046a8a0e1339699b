//! Retention of the outbox: deleting published events older than a cutoff
//! (`sightline outbox prune`), never while a rebuild needs them, and reading
//! the cutoff an operator types.

use chrono::{DateTime, Utc};

use crate::locks;

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
