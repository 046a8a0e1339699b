//! The bus seam between the relay and whatever consumes events.
//!
//! An event counts as published only once the bus has durably taken it. The
//! in-process bus hands events straight to the projector, so "durably taken"
//! means "searchable, with its notice recorded". A distributed bus would take
//! this place without the write side or the projector changing.

use futures::future::BoxFuture;

use crate::outbox::OutboxEvent;
use crate::projector::Projector;
use crate::read_side::index::ItemFailure;

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
    pub retry: Vec<(i64, ItemFailure)>,
}

pub trait Bus: Send + Sync + 'static {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<Delivery>>;
}

pub struct InProcessBus {
    projector: Projector,
}

impl InProcessBus {
    pub fn new(projector: Projector) -> Self {
        Self { projector }
    }
}

impl Bus for InProcessBus {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<Delivery>> {
        Box::pin(self.projector.project(events))
    }
}
