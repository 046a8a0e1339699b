//! Orders written straight into the test database, through the app's own
//! write path (`outbox::append` in the caller's transaction), for tests that
//! need to control the transaction: hold it open, roll it back, or store an
//! event the HTTP API would never produce.

use sightline::order::Item;
use sightline::outbox::events::{ORDER_PLACED, OrderPlacedV2};
use sightline::outbox::{self, NewEvent};
use sqlx::PgConnection;
use uuid::Uuid;

/// The owner of directly written orders (a user created through the API).
#[derive(Clone, Debug)]
pub struct Owner {
    pub id: Uuid,
    pub username: String,
}

/// One item of `quantity` 1 at 100 cents.
pub fn one_item(sku: &str) -> Vec<Item> {
    vec![Item {
        sku: sku.to_owned(),
        quantity: 1,
        unit_price_cents: 100,
    }]
}

/// Writes an order with its items and an `OrderPlaced` event of
/// `schema_version` (2 is the current shape) inside the caller's transaction,
/// as `write_side::place_order` does. Returns the event's outbox id.
pub async fn insert_order(
    conn: &mut PgConnection,
    owner: &Owner,
    order_id: Uuid,
    items: Vec<Item>,
    schema_version: i32,
) -> sqlx::Result<i64> {
    let write_seq: i64 = sqlx::query_scalar(
        "UPDATE users SET write_seq = write_seq + 1 WHERE id = $1 RETURNING write_seq",
    )
    .bind(owner.id)
    .fetch_one(&mut *conn)
    .await?;
    let total_cents: i64 = items
        .iter()
        .map(|i| i64::from(i.quantity) * i.unit_price_cents)
        .sum();
    let placed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO orders (id, user_id, user_write_seq, note, total_cents, currency)
         VALUES ($1, $2, $3, NULL, $4, 'USD') RETURNING placed_at",
    )
    .bind(order_id)
    .bind(owner.id)
    .bind(write_seq)
    .bind(total_cents)
    .fetch_one(&mut *conn)
    .await?;
    for (position, item) in items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order_id)
        .bind(position as i32)
        .bind(&item.sku)
        .bind(item.quantity)
        .bind(item.unit_price_cents)
        .execute(&mut *conn)
        .await?;
    }
    let payload = OrderPlacedV2 {
        order_id,
        user_id: owner.id,
        username: owner.username.clone(),
        items,
        total_cents,
        currency: "USD".to_owned(),
        note: None,
        placed_at,
    };
    outbox::append(
        &mut *conn,
        NewEvent {
            traceparent: None,
            event_type: ORDER_PLACED,
            schema_version,
            aggregate_id: order_id,
            aggregate_version: 1,
            user_id: owner.id,
            payload: serde_json::to_value(&payload).expect("OrderPlaced encodes"),
        },
    )
    .await?;
    sqlx::query_scalar("SELECT id FROM outbox WHERE aggregate_id = $1 AND aggregate_version = 1")
        .bind(order_id)
        .fetch_one(&mut *conn)
        .await
}
