//! The write side: validate, then commit the order with its outbox event.
//!
//! - `orders` — the application service every write goes through (the JSON
//!   API and the forms alike): the write limit, then place or cancel, then
//!   the consistency token
//! - `validation` — where an order is validated
//! - `place_order` — where it is committed (one transaction, outbox included)
//! - `cancel_order` — the one change an order can go through
//! - `write_limit` — the per-user write limit
//! - `store` — reading an order back from the write database
//! - `in_transaction` — the seam for work start-up adds to a write's transaction
//!
//! Nothing here knows HTTP: failures are [`WriteError`]s, which `web` turns
//! into answers.

pub mod cancel_order;
pub mod in_transaction;
pub mod orders;
pub mod place_order;
pub mod store;
pub mod validation;
pub mod write_limit;

pub use in_transaction::InTransaction;

/// Why a write did not happen.
#[derive(thiserror::Error, Debug)]
pub enum WriteError {
    /// The order breaks rules: every one, each with its field.
    #[error(transparent)]
    Invalid(#[from] validation::BrokenRules),
    /// The id is taken by another order (`id_taken`: another user's;
    /// `id_reused`: other content).
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    /// Unknown, or another user's.
    #[error("not found")]
    NotFound,
    /// The user's write limit is spent for now.
    #[error("too many orders and cancellations in a short time; slow down")]
    RateLimited { retry_after: u64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

use crate::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::counter("sightline_orders_placed_total", "Orders committed."),
    Metric::counter("sightline_orders_cancelled_total", "Cancellations committed."),
];
