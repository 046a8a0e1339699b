//! The write side: validate, then commit the order with its outbox event.
//!
//! - `validation` — where an order is validated
//! - `place_order` — where it is committed (one transaction, outbox included)
//! - `store` — reading an order back from the write database

pub mod place_order;
pub mod store;
pub mod validation;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use crate::auth::CurrentUser;
use crate::consistency::ConsistencyToken;
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::order::OrderView;
use crate::state::AppState;
use place_order::Placed;
use store::StoredOrder;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/orders", post(create_order))
}

/// The answer to a write: the order plus the token that lets the next read
/// include it.
#[derive(Serialize)]
pub struct WriteReceipt {
    #[serde(flatten)]
    pub order: OrderView,
    pub consistency_token: String,
}

impl From<&StoredOrder> for WriteReceipt {
    fn from(order: &StoredOrder) -> Self {
        WriteReceipt {
            order: order.view(),
            consistency_token: ConsistencyToken {
                write_seq: order.user_write_seq,
            }
            .encode(),
        }
    }
}

async fn create_order(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(request): ApiJson<validation::PlaceOrderRequest>,
) -> AppResult<impl IntoResponse> {
    let order = validation::validate(request)?;
    let (status, stored) = match place_order::place_order(&state.db, &user, order).await? {
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
