//! The `rebuilds` table, and the only code that reads or writes it: one row
//! per rebuild of the read model (`sightline rebuild`), recording where it
//! replays into, how far it got and which id ranges it still has to re-read,
//! so an interrupted run resumes where it stopped. The projector asks it
//! which indices the last swap left live ([`last_swapped`]); outbox pruning
//! asks whether a rebuild is unfinished ([`unfinished_index`]).

use sqlx::{PgConnection, PgPool};

const ROW_COLUMNS: &str = "id, orders_index, summaries_index, last_outbox_id,
                           gap_starts, gap_ends, gap_xmaxes,
                           previous_orders_index, previous_summaries_index";

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct RebuildRow {
    pub id: i64,
    pub orders_index: String,
    pub summaries_index: String,
    pub last_outbox_id: i64,
    pub gap_starts: Vec<i64>,
    pub gap_ends: Vec<i64>,
    pub gap_xmaxes: Vec<i64>,
    pub previous_orders_index: Option<String>,
    pub previous_summaries_index: Option<String>,
}

/// The rebuild that has not finished, if any (there is at most one).
pub async fn unfinished(db: &PgPool) -> sqlx::Result<Option<RebuildRow>> {
    sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM rebuilds WHERE finished_at IS NULL"
    ))
    .fetch_optional(db)
    .await
}

/// Marks a rebuild finished with `outcome` (`swapped`, `abandoned`).
pub async fn finish(db: &PgPool, id: i64, outcome: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE rebuilds SET finished_at = clock_timestamp(), outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(db)
        .await
        .map(|_| ())
}

/// Records a new rebuild into `orders` and `summaries` (each a pair of the
/// live index and the new one).
pub async fn start(
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
pub async fn save(db: &PgPool, row: &RebuildRow, replayed: usize) -> sqlx::Result<()> {
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
pub async fn swapped(tx: &mut PgConnection, row: &RebuildRow) -> sqlx::Result<()> {
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

/// The indices the last swapped rebuild made live, if any: (orders,
/// summaries).
pub async fn last_swapped(db: &PgPool) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as(
        "SELECT orders_index, summaries_index FROM rebuilds
         WHERE outcome = 'swapped' ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await
}

/// The orders index an unfinished rebuild replays into, if one is unfinished.
pub async fn unfinished_index(db: &mut PgConnection) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT orders_index FROM rebuilds WHERE finished_at IS NULL")
        .fetch_optional(db)
        .await
}
