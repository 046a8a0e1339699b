//! Retention: `sightline prune` removes notices older than the retention
//! bound (`NOTICE_RETENTION_DAYS`), expired sessions, and the projector
//! inbox's memory of events that can never be delivered again.
//!
//! Why a resume inside the bound survives it: notices are recorded under one
//! lock with `visible_at = clock_timestamp()`, so a user's notices grow older
//! in stream order and deleting those older than the bound removes a prefix of
//! each stream. The highest position removed is kept per user
//! (`notice_streams.pruned_seq`, with its chain), so a cursor at or after it
//! still names a point whose every later notice is there; one before it gets
//! `reset`. A client whose first missed notice is younger than the bound has
//! a cursor at or after it.
//!
//! Why pruning the inbox cannot count an event twice: the relay only delivers
//! unpublished events, and it marks a batch published in the very transaction
//! that holds the claimed rows, so an event published (or already pruned from
//! the outbox, which only prunes published events) is never delivered again.
//! Only those inbox rows go, and only once both the inbox row and the
//! publication are older than the bound — an operator putting an event back
//! by hand within the bound is still caught.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What pruning removes (or, for [`plan`], would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub notices: i64,
    pub sessions: i64,
    pub inbox: i64,
}

/// Counts what [`prune`] would delete with notices older than `cutoff`.
pub async fn plan(db: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<PruneReport> {
    let (notices, sessions, inbox): (i64, i64, i64) = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM notices WHERE visible_at < $1),
           (SELECT count(*) FROM sessions WHERE expires_at < now()),
           (SELECT count(*) FROM projector_inbox i LEFT JOIN outbox o ON o.event_id = i.event_id
             WHERE i.applied_at < $1
               AND (o.id IS NULL OR (o.published_at < $1 AND NOT o.parked)))",
    )
    .bind(cutoff)
    .fetch_one(db)
    .await?;
    Ok(PruneReport {
        notices,
        sessions,
        inbox,
    })
}

/// Deletes notices recorded before `cutoff` (moving each user's
/// `pruned_seq`), expired sessions and inbox rows of events that cannot come
/// again, `batch` rows per transaction.
#[tracing::instrument(skip(db))]
pub async fn prune(db: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> sqlx::Result<PruneReport> {
    let batch = batch.max(1);
    let mut report = PruneReport::default();
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
        report.notices += deleted;
        if deleted < batch {
            break;
        }
    }
    loop {
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE token_hash IN (
               SELECT token_hash FROM sessions WHERE expires_at < now() LIMIT $1)",
        )
        .bind(batch)
        .execute(db)
        .await?
        .rows_affected() as i64;
        report.sessions += deleted;
        if deleted < batch {
            break;
        }
    }
    loop {
        let deleted = sqlx::query(
            "DELETE FROM projector_inbox WHERE event_id IN (
               SELECT i.event_id FROM projector_inbox i
               LEFT JOIN outbox o ON o.event_id = i.event_id
               WHERE i.applied_at < $1
                 AND (o.id IS NULL OR (o.published_at < $1 AND NOT o.parked))
               LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(db)
        .await?
        .rows_affected() as i64;
        report.inbox += deleted;
        if deleted < batch {
            break;
        }
    }
    Ok(report)
}
