//! The bus seam between the relay and whatever consumes events: the trait
//! the relay publishes through and the message types both sides share.
//!
//! An event counts as published only once the bus has durably taken it. The
//! relay knows only this trait; the projector knows only [`Delivery`]. The
//! in-process implementation, which hands events straight to the projector
//! (so "durably taken" means "searchable, with its notice recorded"), is
//! the projector's (`projector::in_process_bus`); the
//! distributed one, NATS JetStream ([`nats`], with the projectors' consumer
//! in `projector::nats_consumer`), takes its place without the write side or
//! the relay changing.

pub mod nats;

use futures::future::BoxFuture;

use crate::outbox::{OutboxEvent, Stamps};

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
    pub retry: Vec<(i64, Failure)>,
    /// When the consumer received, indexed and made the batch searchable
    /// (the journey's stages, for the marking statement; the in-process
    /// bus's consumer fills them, a distributed bus's relay side does not).
    pub stamps: Stamps,
}

/// Where the relay hands a claimed batch.
pub trait Bus: Send + Sync + 'static {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<Delivery>>;

    /// Whether what this bus takes is projected later, elsewhere (a
    /// distributed bus): the relay then marks taken events *relayed* and the
    /// projector marks them published once searchable. False (the default):
    /// taken means projected, and the relay marks them published.
    fn projects_later(&self) -> bool {
        false
    }
}

/// Why a consumer could not take an event (or a batch) for now: a passing
/// failure, retried after a backoff. `kind` is one short, bounded word
/// (Elasticsearch's error type such as `index_closed_exception`,
/// `elasticsearch_unreachable`, `status_<code>`): `/status` shows it and
/// metrics use it as a label. `detail` is the whole error, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

/// A batch with events that failed for a passing reason (the rest of it was
/// taken): they stay unpublished and the relay tries again after a backoff.
#[derive(Debug, thiserror::Error)]
#[error("{count} event(s) to retry, first outbox id {first_id}: {failure}")]
pub struct RetryLater {
    pub count: usize,
    pub first_id: i64,
    pub failure: Failure,
}

/// Names a whole batch's failure (one the consumer returned as an error):
/// the consumer attaches it as context, so the relay can say on `/status`
/// which failure it retries without knowing what the consumer talks to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FailureKind(pub String);

/// One short word for why a batch failed, for `/status` and metrics: the
/// consumer's [`RetryLater`] or [`FailureKind`], `postgres`, or `other`.
pub fn failure_kind(error: &anyhow::Error) -> String {
    for cause in error.chain() {
        if let Some(retry) = cause.downcast_ref::<RetryLater>() {
            return retry.failure.kind.clone();
        }
        if let Some(FailureKind(kind)) = cause.downcast_ref::<FailureKind>() {
            return kind.clone();
        }
        if cause.downcast_ref::<sqlx::Error>().is_some() {
            return "postgres".to_owned();
        }
    }
    "other".to_owned()
}

/// A distributed bus as `/status` and `/metrics` show it: its stream, its
/// consumer, its nodes (filled by e.g. `nats::watch`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BusLook {
    pub stream_messages: u64,
    pub consumer_pending: u64,
    pub consumer_ack_pending: u64,
    pub redelivered: u64,
    pub leader: Option<String>,
    /// Every node holding the stream, and whether it is up (the leader, or
    /// a replica that is not offline).
    pub nodes: Vec<(String, bool)>,
    pub error: Option<String>,
}

impl BusLook {
    /// Whether the bus can take events now: looked at without an error, with
    /// a leader, and a majority of its nodes up.
    pub fn healthy(&self) -> bool {
        let up = self.nodes.iter().filter(|(_, up)| *up).count();
        self.error.is_none() && self.leader.is_some() && up * 2 > self.nodes.len()
    }
}

/// The bus's latest look, for `/status` (none with the in-process bus).
#[derive(Default)]
pub struct BusWatch(std::sync::Mutex<Option<BusLook>>);

impl BusWatch {
    pub fn set(&self, look: BusLook) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(look);
    }

    pub fn latest(&self) -> Option<BusLook> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
