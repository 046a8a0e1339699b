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
    pub retry: Vec<(i64, Failure)>,
}

/// Where the relay hands a claimed batch.
pub trait Bus: Send + Sync + 'static {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<Delivery>>;
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
