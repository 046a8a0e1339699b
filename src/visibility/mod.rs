//! Visibility: telling clients the moment their order is searchable.
//!
//! - `notice_log` — the durable log the projector records notices in (with
//!   `READ_STORE=postgres`: the order's own transaction does)
//! - `hub` — fans new notices out to this instance's clients
//! - `notice_buffer` — one user's notices not yet read by all its subscribers
//! - `sse` — `GET /api/events`, where the notice leaves
//! - `sse_data` — the JSON `data` of each of its events
//! - `polling` — `GET /api/orders/{id}/visibility`, the fallback
//! - `retention` — `sightline prune`: old notices, expired sessions, the inbox

pub mod hub;
pub mod notice_buffer;
pub mod notice_log;
pub mod polling;
pub mod retention;
pub mod sse;
pub mod sse_data;

use axum::Router;
use axum::routing::get;

use crate::web::state::AppState;

/// Where the event stream is served (the accept loop serves it without
/// hyper's per-connection buffers: `web::event_streams`).
pub const EVENTS_PATH: &str = "/api/events";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(EVENTS_PATH, get(sse::events))
        .route("/api/orders/{id}/visibility", get(polling::visibility))
}
