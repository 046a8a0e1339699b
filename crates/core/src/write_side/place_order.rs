//! Where an order is committed: the order, its items and its `OrderPlaced`
//! event go into PostgreSQL in one transaction. Nothing here talks to
//! Elasticsearch or a bus — the outbox row is the only way out (start-up
//! may add work to the transaction through [`InTransaction`]).

use anyhow::Context;
use sqlx::PgPool;

use super::store::{self, StoredOrder};
use super::validation::ValidOrder;
use super::{InTransaction, WriteError};
use crate::auth::CurrentUser;
use crate::order::OrderStatus;
use crate::outbox::{self, NewEvent, events};

pub enum Placed {
    /// Committed by this request.
    Created(StoredOrder),
    /// A retry of an order already placed with the same content.
    AlreadyPlaced(StoredOrder),
}

/// The statement that places an order: the user's position, the order and
/// its items, in one round trip (see [`place_order`] for why in this order).
/// `$1` order id, `$2` user id, `$3` note, `$4` total, `$5` currency, `$6`
/// skus, `$7` quantities, `$8` unit prices. Public so the benchmark's bare
/// write rate runs exactly this SQL through `pgbench`.
pub const PLACE_ORDER_SQL: &str = "WITH position AS (
        UPDATE users SET write_seq = write_seq + 1 WHERE id = $2 RETURNING write_seq
    ), placed AS (
        INSERT INTO orders (id, user_id, user_write_seq, note, total_cents, currency)
        SELECT $1, $2, write_seq, $3, $4, $5 FROM position
        ON CONFLICT (id) DO NOTHING
        RETURNING id, placed_at, user_write_seq
    ), items AS (
        INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents)
        SELECT placed.id, t.ord::int - 1, t.sku, t.qty, t.price
        FROM placed,
             UNNEST($6::text[], $7::int[], $8::bigint[]) WITH ORDINALITY AS t(sku, qty, price, ord)
    )
    SELECT placed_at, user_write_seq FROM placed";

#[tracing::instrument(skip(db, in_transaction, user, order), fields(order_id = %order.id, user = %user.username))]
pub async fn place_order(
    db: &PgPool,
    in_transaction: Option<&dyn InTransaction>,
    user: &CurrentUser,
    order: ValidOrder,
) -> Result<Placed, WriteError> {
    let mut tx = db.begin().await?;

    let (skus, quantities, prices): (Vec<_>, Vec<_>, Vec<_>) = order
        .items
        .iter()
        .map(|i| (i.sku.clone(), i.quantity, i.unit_price_cents))
        .collect();
    // One statement, one round trip, for the user's position, the order and
    // its items (each round trip costs PostgreSQL and this server CPU, the
    // throughput wall of docs/BENCHMARKS.md). Its parts run in this order:
    // `position` first — taking the user row serialises this user's writes,
    // so positions commit in order (see `consistency`), and a concurrent
    // retry of the same id waits there until the first attempt has
    // committed; then the order, which on a taken id inserts nothing, and so
    // no items either (they are inserted from the order row it returns).
    let placed: Option<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(PLACE_ORDER_SQL)
        .bind(order.id)
        .bind(user.id)
        .bind(&order.note)
        .bind(order.total_cents)
        .bind(&order.currency)
        .bind(&skus)
        .bind(&quantities)
        .bind(&prices)
        .fetch_optional(&mut *tx)
        .await?;

    let Some((placed_at, write_seq)) = placed else {
        tx.rollback().await?;
        return existing_order(db, user, &order).await;
    };

    let event = events::OrderPlacedV2 {
        order_id: order.id,
        user_id: user.id,
        username: user.username.clone(),
        items: order.items.clone(),
        total_cents: order.total_cents,
        currency: order.currency.clone(),
        note: order.note.clone(),
        placed_at,
    };
    let appended = outbox::append(
        &mut tx,
        NewEvent {
            traceparent: crate::telemetry::traces::current_traceparent(),
            event_type: events::ORDER_PLACED,
            schema_version: events::OrderPlacedV2::SCHEMA_VERSION,
            aggregate_id: order.id,
            aggregate_version: 1,
            user_id: user.id,
            payload: serde_json::to_value(&event).context("Failed to encode OrderPlaced")?,
        },
    )
    .await?;
    if let Some(work) = in_transaction {
        work.run(&mut tx, &appended).await?;
    }
    tx.commit().await?;
    if let Some(work) = in_transaction {
        work.after_commit();
    }
    metrics::counter!("sightline_orders_placed_total").increment(1);

    Ok(Placed::Created(StoredOrder {
        id: order.id,
        user_id: user.id,
        username: user.username.clone(),
        user_write_seq: write_seq,
        items: order.items,
        note: order.note,
        total_cents: order.total_cents,
        currency: order.currency,
        placed_at,
        status: OrderStatus::Placed,
        version: 1,
        // The contract's receipt says `false` in both modes: the notice
        // (with READ_STORE=postgres already recorded) is what announces it.
        visible: false,
    }))
}

/// The id is taken: a faithful retry gets the order as it is now, anything
/// else (other content, another user's id) is a conflict.
async fn existing_order(
    db: &PgPool,
    user: &CurrentUser,
    order: &ValidOrder,
) -> Result<Placed, WriteError> {
    let existing = store::load(db, order.id)
        .await?
        .context("Order vanished after an id conflict")?;
    if existing.user_id != user.id {
        return Err(WriteError::Conflict {
            code: "id_taken",
            message: "an order with this id already exists",
        });
    }
    if existing.items != order.items
        || existing.note != order.note
        || existing.currency != order.currency
    {
        return Err(WriteError::Conflict {
            code: "id_reused",
            message: "an order with this id was placed with other content",
        });
    }
    Ok(Placed::AlreadyPlaced(existing))
}
