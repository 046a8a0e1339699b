//! Reading orders back from the write database. Used by the write side itself
//! (idempotent retries) and by the read-your-writes path — never by plain
//! queries, which read the read model.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::order::{Item, OrderStatus, OrderView};

/// An order as the write database holds it.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub user_write_seq: i64,
    pub items: Vec<Item>,
    pub note: Option<String>,
    pub total_cents: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
    pub status: OrderStatus,
    pub version: i32,
    /// Whether the current version's notice has been recorded (search shows it).
    pub visible: bool,
}

impl StoredOrder {
    pub fn view(&self) -> OrderView {
        OrderView {
            id: self.id,
            username: self.username.clone(),
            items: self.items.clone(),
            total_cents: self.total_cents,
            currency: self.currency.clone(),
            note: self.note.clone(),
            placed_at: self.placed_at,
            status: self.status,
            version: self.version,
            visible: self.visible,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    username: String,
    user_write_seq: i64,
    note: Option<String>,
    total_cents: i64,
    currency: String,
    placed_at: DateTime<Utc>,
    status: String,
    version: i32,
    visible: bool,
    skus: Vec<String>,
    quantities: Vec<i32>,
    unit_prices: Vec<i64>,
}

impl From<OrderRow> for StoredOrder {
    fn from(row: OrderRow) -> Self {
        let items = row
            .skus
            .into_iter()
            .zip(row.quantities)
            .zip(row.unit_prices)
            .map(|((sku, quantity), unit_price_cents)| Item {
                sku,
                quantity,
                unit_price_cents,
            })
            .collect();
        StoredOrder {
            id: row.id,
            user_id: row.user_id,
            username: row.username,
            user_write_seq: row.user_write_seq,
            items,
            note: row.note,
            total_cents: row.total_cents,
            currency: row.currency,
            placed_at: row.placed_at,
            // The column only ever holds what `OrderStatus::as_str` wrote.
            status: OrderStatus::parse(&row.status).unwrap_or(OrderStatus::Placed),
            version: row.version,
            visible: row.visible,
        }
    }
}

const SELECT_ORDERS: &str = "
    SELECT o.id, o.user_id, u.username, o.user_write_seq, o.note, o.total_cents, o.currency,
           o.placed_at, o.status, o.version,
           EXISTS (SELECT 1 FROM notices n WHERE n.order_id = o.id AND n.order_version = o.version
                     AND n.kind = 'order-visible') AS visible,
           ARRAY(SELECT sku FROM order_items i WHERE i.order_id = o.id ORDER BY position) AS skus,
           ARRAY(SELECT quantity FROM order_items i WHERE i.order_id = o.id ORDER BY position)
               AS quantities,
           ARRAY(SELECT unit_price_cents FROM order_items i WHERE i.order_id = o.id ORDER BY position)
               AS unit_prices
    FROM orders o JOIN users u ON u.id = o.user_id";

pub async fn load(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<StoredOrder>> {
    let sql = format!("{SELECT_ORDERS} WHERE o.id = $1");
    let row: Option<OrderRow> = sqlx::query_as(&sql).bind(id).fetch_optional(db).await?;
    Ok(row.map(Into::into))
}

/// This user's orders up to `write_seq` whose notice is not recorded yet:
/// what a read-your-writes read must add to what the read model shows.
/// Newest first (`placed_at`, then `id`, descending), strictly before
/// `before` when given, at most `limit` of them: the caller pages through.
pub async fn not_yet_visible(
    db: &PgPool,
    user_id: Uuid,
    up_to_write_seq: i64,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<StoredOrder>> {
    let sql = format!(
        "{SELECT_ORDERS} WHERE o.user_id = $1 AND o.user_write_seq <= $2
           AND ($3::timestamptz IS NULL OR (o.placed_at, o.id) < ($3, $4))
           AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.order_id = o.id
                             AND n.order_version = o.version AND n.kind = 'order-visible')
         ORDER BY o.placed_at DESC, o.id DESC LIMIT $5"
    );
    let rows: Vec<OrderRow> = sqlx::query_as(&sql)
        .bind(user_id)
        .bind(up_to_write_seq)
        .bind(before.map(|b| b.0))
        .bind(before.map_or(Uuid::nil(), |b| b.1))
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// This user's newest orders, whatever search knows of them: the orders
/// page's stand-in while search is unreachable (read-your-writes, labelled
/// as such). `visible` says whether each one's notice was recorded.
pub async fn newest(db: &PgPool, user_id: Uuid, limit: i64) -> sqlx::Result<Vec<StoredOrder>> {
    let sql = format!(
        "{SELECT_ORDERS} WHERE o.user_id = $1 ORDER BY o.placed_at DESC, o.id DESC LIMIT $2"
    );
    let rows: Vec<OrderRow> = sqlx::query_as(&sql)
        .bind(user_id)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn owner_of(db: &PgPool, id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Takes the user's next write position inside the caller's transaction.
/// The row lock serialises one user's writes, so their positions commit in
/// order (see `consistency`); every write takes it first, so there is one
/// lock order and no deadlock. (Placing an order takes it with the same
/// `UPDATE` as the first part of its one statement: `place_order`.)
pub async fn next_write_position(tx: &mut sqlx::PgConnection, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "UPDATE users SET write_seq = write_seq + 1 WHERE id = $1 RETURNING write_seq",
    )
    .bind(user_id)
    .fetch_one(tx)
    .await
}
