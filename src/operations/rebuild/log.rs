//! The `rebuilds` table: one row per rebuild, recording where it replays
//! into, how far it got and which id ranges it still has to re-read, so an
//! interrupted run resumes where it stopped.

use sqlx::{PgConnection, PgPool};

const ROW_COLUMNS: &str = "id, orders_index, summaries_index, last_outbox_id,
                           gap_starts, gap_ends, gap_xmaxes,
                           previous_orders_index, previous_summaries_index";

#[derive(sqlx::FromRow, Clone, Debug)]
pub(super) struct RebuildRow {
    pub(super) id: i64,
    pub(super) orders_index: String,
    pub(super) summaries_index: String,
    pub(super) last_outbox_id: i64,
    pub(super) gap_starts: Vec<i64>,
    pub(super) gap_ends: Vec<i64>,
    pub(super) gap_xmaxes: Vec<i64>,
    pub(super) previous_orders_index: Option<String>,
    pub(super) previous_summaries_index: Option<String>,
}

/// The rebuild that has not finished, if any (there is at most one).
pub(super) async fn unfinished(db: &PgPool) -> sqlx::Result<Option<RebuildRow>> {
    sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM rebuilds WHERE finished_at IS NULL"
    ))
    .fetch_optional(db)
    .await
}

/// Marks a rebuild finished with `outcome` (`swapped`, `abandoned`).
pub(super) async fn finish(db: &PgPool, id: i64, outcome: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE rebuilds SET finished_at = clock_timestamp(), outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(db)
        .await
        .map(|_| ())
}

/// Records a new rebuild into `orders` and `summaries` (each a pair of the
/// live index and the new one).
pub(super) async fn start(
    db: &PgPool,
    orders: &(String, String),
    summaries: &(String, String),
) -> sqlx::Result<RebuildRow> {
    sqlx::query_as(&format!(
        "INSERT INTO rebuilds (orders_index, summaries_index, previous_orders_index,
                               previous_summaries_index)
         VALUES ($1, $2, $3, $4)
         RETURNING {ROW_COLUMNS}"
    ))
    .bind(&orders.1)
    .bind(&summaries.1)
    .bind(&orders.0)
    .bind(&summaries.0)
    .fetch_one(db)
    .await
}

/// Persists how far the rebuild got (after the batch is written).
pub(super) async fn save(db: &PgPool, row: &RebuildRow, replayed: usize) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE rebuilds SET last_outbox_id = $2, gap_starts = $3, gap_ends = $4,
                             gap_xmaxes = $5, replayed = replayed + $6
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(row.last_outbox_id)
    .bind(&row.gap_starts)
    .bind(&row.gap_ends)
    .bind(&row.gap_xmaxes)
    .bind(replayed as i64)
    .execute(db)
    .await
    .map(|_| ())
}

/// Records the swap, in the transaction that holds the relay off.
pub(super) async fn swapped(tx: &mut PgConnection, row: &RebuildRow) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE rebuilds SET finished_at = clock_timestamp(), outcome = 'swapped',
                last_outbox_id = $2
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(row.last_outbox_id)
    .execute(tx)
    .await
    .map(|_| ())
}
