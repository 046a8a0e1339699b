//! Visibility: telling clients the moment their order is searchable.
//! The notice leaves through `web::api::events` (`GET /api/events`, SSE) and
//! `web::api::visibility` (`GET /api/orders/{id}/visibility`, the long-poll
//! fallback).
//!
//! - `notice_log` — the durable log the projector records notices in (with
//!   `READ_STORE=postgres`: the order's own transaction does)
//! - `hub` — fans new notices out to this instance's clients
//! - `notice_buffer` — one user's notices not yet read by all its subscribers
//! - `sse_data` — the JSON `data` of each event of `GET /api/events`
//! - `retention` — `sightline prune`: old notices, expired sessions, the inbox
//! - `deliveries` — when each notice first reached a client (its journey's
//!   last stage), written in batches

pub mod deliveries;
pub mod hub;
pub mod notice_buffer;
pub mod notice_log;
pub mod retention;
pub mod sse_data;
