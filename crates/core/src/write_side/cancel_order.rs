//! Cancelling an order: the state change and its `OrderCancelled` event
//! commit together, like placing one.

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use super::store::{self, StoredOrder};
use super::{InTransaction, WriteError};
use crate::auth::CurrentUser;
use crate::order::OrderStatus;
use crate::outbox::{self, NewEvent, events};

pub struct Cancellation {
    pub order: StoredOrder,
    /// The user's write position after this request, for the consistency token.
    pub write_seq: i64,
}

/// Cancels the user's order; cancelling a cancelled order changes nothing.
/// Another user's order is reported as unknown.
#[tracing::instrument(skip(db, in_transaction, user), fields(user = %user.username))]
pub async fn cancel_order(
    db: &PgPool,
    in_transaction: Option<&dyn InTransaction>,
    user: &CurrentUser,
    id: Uuid,
) -> Result<Cancellation, WriteError> {
    let mut tx = db.begin().await?;
    // The user row first, as when placing: one lock order, no deadlocks, and
    // this user's positions keep committing in order.
    let write_seq = store::next_write_position(&mut tx, user.id).await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 AND user_id = $2 FOR UPDATE")
            .bind(id)
            .bind(user.id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(status) = status else {
        return Err(WriteError::NotFound);
    };
    if status == OrderStatus::Cancelled.as_str() {
        // Nothing to do; the transaction rolls back on drop. Read through it:
        // another connection while this one is held could wait on a pool
        // that every write in hand is also holding (see `web::admission`).
        let order = store::load(&mut *tx, id).await?.context("Order vanished")?;
        let write_seq = order.user_write_seq.max(write_seq - 1);
        return Ok(Cancellation { order, write_seq });
    }
    let (version, cancelled_at): (i32, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "UPDATE orders SET status = $2, version = version + 1, cancelled_at = now()
         WHERE id = $1 RETURNING version, cancelled_at",
    )
    .bind(id)
    .bind(OrderStatus::Cancelled.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let order = store::load(&mut *tx, id)
        .await?
        .context("Order vanished inside its own transaction")?;
    let event = events::OrderCancelledV1 {
        order: events::OrderPlacedV2 {
            order_id: order.id,
            user_id: order.user_id,
            username: order.username.clone(),
            items: order.items.clone(),
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            note: order.note.clone(),
            placed_at: order.placed_at,
        },
        cancelled_at,
    };
    let appended = outbox::append(
        &mut tx,
        NewEvent {
            traceparent: crate::telemetry::traces::current_traceparent(),
            event_type: events::ORDER_CANCELLED,
            schema_version: events::OrderCancelledV1::SCHEMA_VERSION,
            aggregate_id: id,
            aggregate_version: version,
            user_id: user.id,
            payload: serde_json::to_value(&event).context("Failed to encode OrderCancelled")?,
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
    metrics::counter!("sightline_orders_cancelled_total").increment(1);
    Ok(Cancellation { order, write_seq })
}
