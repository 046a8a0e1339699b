//! The write side: validate, then commit the order with its outbox event.
//!
//! - `validation` — where an order is validated
//! - `place_order` — where it is committed (one transaction, outbox included)
//! - `cancel_order` — the one change an order can go through
//! - `store` — reading an order back from the write database
//! - `in_transaction` — the seam for work start-up adds to a write's transaction

pub mod cancel_order;
pub mod in_transaction;
pub mod place_order;
pub mod store;
pub mod validation;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::consistency::ConsistencyToken;
use crate::order::OrderView;
use crate::web::error::AppResult;
use crate::web::extract::{ApiJson, ApiPath};
use crate::web::state::AppState;
use place_order::Placed;
use store::StoredOrder;
use uuid::Uuid;

pub use in_transaction::InTransaction;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(create_order))
        .route("/api/orders/{id}/cancel", post(cancel))
}

/// The answer to a write: the order plus the token that lets the next read
/// include it.
#[derive(Serialize, ToSchema)]
pub struct WriteReceipt {
    #[serde(flatten)]
    pub order: OrderView,
    /// Present it to `GET /api/orders` (`consistency_token=` or
    /// `X-Consistency-Token`) to see this write even before search does.
    pub consistency_token: String,
}

impl WriteReceipt {
    pub fn new(order: &StoredOrder, write_seq: i64) -> Self {
        WriteReceipt {
            order: order.view(),
            consistency_token: ConsistencyToken { write_seq }.encode(),
        }
    }
}

impl From<&StoredOrder> for WriteReceipt {
    /// The receipt of placing: the token covers the order's own position.
    fn from(order: &StoredOrder) -> Self {
        Self::new(order, order.user_write_seq)
    }
}

/// Places an order: the order and its event commit in one transaction. The
/// same `id` again with the same content answers 200 with the order as it is
/// now (nothing is duplicated); with other content, or another user's id, 409.
#[utoipa::path(
    post,
    path = "/api/orders",
    tag = "orders",
    operation_id = "placeOrder",
    request_body = validation::PlaceOrderRequest,
    responses(
        (status = 201, description = "Placed; not yet visible to search (`visible: false`).", body = WriteReceipt, headers(
            ("Location" = String, description = "`/api/orders/{id}`"),
        )),
        (status = 200, description = "This `id` was already placed with this content: the order as it is now.", body = WriteReceipt, headers(
            ("Location" = String, description = "`/api/orders/{id}`"),
        )),
        (status = 409, description = "`order_conflict`: the `id` is taken by another order (other content, or another user's).", body = crate::web::openapi::ErrorBody),
        (status = 429, description = "`rate_limited`: too many writes (`WRITE_BURST`, `WRITE_RATE_PER_MIN`); nothing is written.", body = crate::web::openapi::ErrorBody),
    ),
)]
pub(crate) async fn create_order(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(request): ApiJson<validation::PlaceOrderRequest>,
) -> AppResult<impl IntoResponse> {
    // Per user: one account cannot crowd out everyone else's writes.
    state.limits.writes.check(user.id)?;
    let order = validation::validate(request)?;
    let (status, stored) =
        match place_order::place_order(&state.db, state.in_transaction.as_deref(), &user, order)
            .await?
        {
            Placed::Created(o) => (StatusCode::CREATED, o),
            Placed::AlreadyPlaced(o) => (StatusCode::OK, o),
        };
    let location = format!("/api/orders/{}", stored.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(WriteReceipt::from(&stored)),
    ))
}

/// Cancels an order: the change and its `OrderCancelled` event commit
/// together. Cancelling twice answers 200 and changes nothing.
#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    tag = "orders",
    operation_id = "cancelOrder",
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "Cancelled (`status: cancelled`, a new `version`).", body = WriteReceipt),
        (status = 404, description = "`not_found`: unknown, or another user's.", body = crate::web::openapi::ErrorBody),
        (status = 429, description = "`rate_limited`: too many writes.", body = crate::web::openapi::ErrorBody),
    ),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Json<WriteReceipt>> {
    state.limits.writes.check(user.id)?;
    let cancellation =
        cancel_order::cancel_order(&state.db, state.in_transaction.as_deref(), &user, id).await?;
    Ok(Json(WriteReceipt::new(
        &cancellation.order,
        cancellation.write_seq,
    )))
}
