//! The bus seam between the relay and whatever consumes events: the trait
//! the relay publishes through and the message types both sides share.
//!
//! An event counts as published only once the bus has durably taken it. The
//! relay knows only this trait; the projector knows only [`Delivery`]. The
//! in-process implementation, which hands events straight to the projector
//! (so "durably taken" means "searchable, with its notice recorded"), is
//! built where the application is wired (`startup::in_process_bus`); a
//! distributed bus takes its place without the write side, the relay or the
//! projector changing.

use futures::future::BoxFuture;

use crate::outbox::OutboxEvent;

/// What the bus did with a batch.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Outbox ids durably taken: the relay marks these published.
    pub taken: Vec<i64>,
    /// Outbox ids refused for good (poison), with the reason: the relay parks
    /// them in the dead-letter table and goes on.
    pub parked: Vec<(i64, String)>,
    /// Outbox ids that failed for a passing reason: they stay unpublished
    /// and are tried again after a backoff.
    pub retry: Vec<(i64, String)>,
}

/// Where the relay hands a claimed batch.
pub trait Bus: Send + Sync + 'static {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<Delivery>>;
}
