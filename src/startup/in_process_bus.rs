//! The in-process bus: one machine's relay hands its batches straight to the
//! projector in the same process. An event is "durably taken" once it is
//! searchable and its notice is recorded.

use futures::future::BoxFuture;

use crate::bus::{Bus, Delivery};
use crate::outbox::OutboxEvent;
use crate::projector::Projector;

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
