//! The in-process bus: one machine's relay hands its batches straight to the
//! projector in the same process. An event is "durably taken" once it is
//! searchable and its notice is recorded. It lives with the projector (the
//! consumer's side of the seam, as `nats_consumer` is for NATS): the relay
//! sees only the `Bus` trait, and nothing here imports the relay.

use futures::future::BoxFuture;

use super::Projector;
use crate::bus::{Bus, Delivery};
use crate::outbox::OutboxEvent;

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
