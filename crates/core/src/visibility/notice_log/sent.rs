//! When a notice was first sent to a client, and by which instance (the
//! journey's last stage): the notice log's own columns, written in batches
//! by each instance's [`crate::visibility::deliveries`].

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Records first sends: `seqs[i]` was sent at `ats[i]` by `vias[i]`
/// (`stream` or `poll`) from `instance`. A notice keeps the earliest send
/// any instance reports, so instances flushing out of order agree.
pub async fn record_sent(
    db: &PgPool,
    seqs: &[i64],
    ats: &[DateTime<Utc>],
    vias: &[&str],
    instance: &str,
) -> sqlx::Result<u64> {
    if seqs.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "UPDATE notices n SET sent_at = s.at, sent_via = s.via, sent_by = $4
           FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS s (seq, at, via)
          WHERE n.seq = s.seq AND (n.sent_at IS NULL OR n.sent_at > s.at)",
    )
    .bind(seqs)
    .bind(ats)
    .bind(vias)
    .bind(instance)
    .execute(db)
    .await?
    .rows_affected())
}
