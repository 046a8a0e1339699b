//! Retention of the notice log: notices older than the retention bound
//! (`NOTICE_RETENTION_DAYS`) go, each user's `pruned_seq` moving with them.
//! `sightline prune` (`operations::retention`) calls this beside the other
//! owners' pruning (expired sessions in `auth::session`, the projector
//! inbox in `projector::summaries`).
//!
//! Why a resume inside the bound survives it: notices are recorded under one
//! lock with `visible_at = clock_timestamp()`, so a user's notices grow older
//! in stream order and deleting those older than the bound removes a prefix of
//! each stream. The highest position removed is kept per user
//! (`notice_streams.pruned_seq`, with its chain), so a cursor at or after it
//! still names a point whose every later notice is there; one before it gets
//! `reset`. A client whose first missed notice is younger than the bound has
//! a cursor at or after it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// How many notices were recorded before `cutoff` (what [`prune_notices`]
/// would delete).
pub async fn count_notices_before(db: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM notices WHERE visible_at < $1")
        .bind(cutoff)
        .fetch_one(db)
        .await
}

/// Deletes notices recorded before `cutoff`, `batch` per transaction, moving
/// each user's `pruned_seq` with them. Returns how many went.
#[tracing::instrument(skip(db))]
pub async fn prune_notices(db: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> sqlx::Result<i64> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        // One statement: the notices go and their users' `pruned_seq` moves
        // in the same transaction, so no cursor check sees one without the other.
        let deleted: i64 = sqlx::query_scalar(
            "WITH gone AS (
               DELETE FROM notices WHERE seq IN (
                 SELECT seq FROM notices WHERE visible_at < $1 ORDER BY seq LIMIT $2)
               RETURNING user_id, user_seq, chain
             ), newest AS (
               SELECT DISTINCT ON (user_id) user_id, user_seq, chain
               FROM gone ORDER BY user_id, user_seq DESC
             ), moved AS (
               UPDATE notice_streams s
                  SET pruned_seq = newest.user_seq, pruned_chain = newest.chain
                 FROM newest
                WHERE s.user_id = newest.user_id AND s.pruned_seq < newest.user_seq
               RETURNING 1
             )
             SELECT count(*) FROM gone",
        )
        .bind(cutoff)
        .bind(batch)
        .fetch_one(db)
        .await?;
        total += deleted;
        if deleted < batch {
            break;
        }
    }
    Ok(total)
}
