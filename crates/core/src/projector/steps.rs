//! The boundaries between a batch's steps, as a seam for tests.
//!
//! A test that must show what a crash or an overlapping batch does at a
//! given point hands the projector a [`StepHook`]; the projector awaits it at
//! every boundary below, so the test can pause the batch there (and let
//! another batch run) or drop it there, as a crash would. In production
//! there is no hook and each boundary costs one `None` check.

use std::sync::Arc;

use futures::future::BoxFuture;

/// Where a batch stands. Each variant is the moment right after that step's
/// effect is durable (and before the next one starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The batch is in the projector's hands; nothing has happened yet (a
    /// relay batch holds its claim on the outbox rows).
    Received,
    /// Counted into the summaries (inbox and counters committed).
    Counted,
    /// Orders and summaries written to the read store, not refreshed.
    Written,
    /// The orders are searchable; no notice recorded yet.
    Refreshed,
    /// Notices recorded; the relay has not marked the events published yet.
    NoticesRecorded,
}

/// Awaited at every [`Step`] of every batch.
pub type StepHook = Arc<dyn Fn(Step) -> BoxFuture<'static, ()> + Send + Sync>;
