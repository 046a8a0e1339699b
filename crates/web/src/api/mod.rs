//! The JSON API, one module per resource. Each handler takes the request
//! apart, calls the stage that owns the work, and answers; every failure
//! becomes an answer in `web::error`.
//!
//! - `sessions` — `/api/users`, `/api/sessions`, `/api/users/me/password`
//! - `orders` — `/api/orders` (place, cancel, list, get) and `/api/summary`
//! - `events` — `GET /api/events`, where the notice leaves (SSE)
//! - `visibility` — `GET /api/orders/{id}/visibility`, the long-poll fallback
//! - `journey` — `GET /api/orders/{id}/journey`, when each stage took an order

pub mod events;
pub mod journey;
pub mod orders;
pub mod sessions;
pub mod visibility;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// Every JSON resource, in the order they were merged before (sessions,
/// writes and reads of orders, then the notice's two ways out).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(sessions::router())
        .merge(orders::router())
        .route(events::EVENTS_PATH, get(events::events))
        .route("/api/orders/{id}/visibility", get(visibility::visibility))
        .route("/api/orders/{id}/journey", get(journey::journey))
}
