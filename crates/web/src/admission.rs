//! Write admission: how many write requests (`POST`, `DELETE`, … — every
//! method that is not safe) this instance works on at once, and how many may
//! wait for a turn. Past that, a write is refused at once with 503 `busy` and
//! `Retry-After: 1`, before it has touched anything.
//!
//! Why: offered more writes than the database commits, the web pool's own
//! queue grows without bound and every waiter sits until its acquire
//! timeout. The waiter at the head has then almost no time left, so its
//! connection is timed out mid-ping or mid-connect and closed, the next one
//! opens a connection it cannot finish either, and the instance stops
//! committing anything until the load stops — the overload collapse of
//! docs/BENCHMARKS.md (before `4a342df`). Here the line is FIFO (tokio's
//! semaphore is fair) and its wait bounded well under the pool's timeout,
//! so a write admitted is one the pool serves at once (at most
//! `WRITE_CONCURRENCY` hold connections), and the excess costs the server
//! one answer each: past capacity the instance keeps committing at capacity.
//! The wait, not the line's length, is the working limit — a stall of a few
//! hundred milliseconds at a high rate queues hundreds of writes that all
//! commit in time; the length only bounds memory.
//!
//! Reads are not gated: they take one short query each (or none, against
//! the read store), and an Elasticsearch that answers slowly must not hold
//! writes back. Admission is per instance; the client retries a refused
//! write with the same order id, which the write side deduplicates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::AppError;
use sightline_core::config::Settings;

/// The gate: `concurrency` permits, at most `queue` waiting for one, each
/// for at most `wait`.
pub struct WriteAdmission {
    permits: Arc<Semaphore>,
    concurrency: usize,
    queue: usize,
    wait: Duration,
    waiting: AtomicUsize,
    /// Refusals so far, by [`Refusal`] (this instance's; `/metrics` has the
    /// process's).
    refused: [AtomicU64; 2],
}

/// Why a write was not admitted (a label of the refusals counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full on arrival.
    QueueFull = 0,
    /// It waited `WRITE_QUEUE_WAIT_MS` without a turn.
    Waited = 1,
}

impl WriteAdmission {
    pub fn new(concurrency: usize, queue: usize, wait: Duration) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queue,
            wait,
            waiting: AtomicUsize::new(0),
            refused: Default::default(),
        }
    }

    pub fn from_settings(settings: &Settings) -> Self {
        Self::new(
            settings.write_concurrency(),
            settings.write_queue(),
            Duration::from_millis(settings.write_queue_wait_ms),
        )
    }

    /// Writes in hand right now.
    pub fn in_flight(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }

    /// Writes waiting for a turn right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Writes refused so far for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    fn refuse(&self, reason: Refusal) -> Refusal {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        let label = match reason {
            Refusal::QueueFull => "queue_full",
            Refusal::Waited => "waited",
        };
        metrics::counter!("sightline_write_admission_refused_total", "reason" => label)
            .increment(1);
        reason
    }

    /// A turn: at once when one is free, after a short wait in line when the
    /// line has room, else refused. The permit is the turn; dropping it (the
    /// request answered) gives it to the next in line.
    pub async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Joining the line and counting it is one step, so the line never
        // grows past `queue` however many arrive at once.
        let joined = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.queue).then_some(n + 1)
            })
            .is_ok();
        if !joined {
            return Err(self.refuse(Refusal::QueueFull));
        }
        metrics::gauge!("sightline_write_admission_waiting").increment(1.0);
        let _leave = LeaveLine(&self.waiting);
        let turn = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        match turn {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a wait that ran out.
            Ok(Err(_)) | Err(_) => Err(self.refuse(Refusal::Waited)),
        }
    }
}

/// Leaves the line however the wait ends (a turn, a timeout, or the
/// request's future dropped).
struct LeaveLine<'a>(&'a AtomicUsize);

impl Drop for LeaveLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("sightline_write_admission_waiting").decrement(1.0);
    }
}

/// The middleware: a write runs holding a turn; a read passes untouched.
/// It sits inside `finish_after_hang_up`'s task, so a turn is held until the
/// write's own code has committed or rolled back, even if its client left.
pub async fn admit_writes(
    admission: Arc<WriteAdmission>,
    request: Request,
    next: Next,
) -> Response {
    if request.method().is_safe() {
        return next.run(request).await;
    }
    match admission.admit().await {
        Ok(_turn) => next.run(request).await,
        Err(_) => AppError::Busy.into_response(),
    }
}

use metrics::Unit;
use sightline_core::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::gauge("sightline_write_admission_waiting", Unit::Count, "Write requests waiting for a turn (WRITE_CONCURRENCY) on this instance."),
    Metric::counter("sightline_write_admission_refused_total", "Write requests refused with 503 busy before touching anything, by reason: queue_full (WRITE_QUEUE) or waited (WRITE_QUEUE_WAIT_MS)."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_given_in_order_and_the_line_is_bounded() {
        let gate = Arc::new(WriteAdmission::new(1, 2, Duration::from_secs(60)));
        let first = gate.admit().await.expect("a free turn");
        assert_eq!(gate.in_flight(), 1);

        // Two may wait; the third is refused at once. Each waiter notes
        // when its turn came.
        let turns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let wait_in_line = |name: &'static str| {
            let (gate, turns) = (gate.clone(), turns.clone());
            async move {
                let turn = gate.admit().await?;
                turns.lock().unwrap().push(name);
                drop(turn);
                Ok::<_, Refusal>(name)
            }
        };
        let second = tokio::spawn(wait_in_line("second"));
        while gate.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        let third = tokio::spawn(wait_in_line("third"));
        while gate.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.admit().await.err(), Some(Refusal::QueueFull));
        assert_eq!(gate.refused(Refusal::QueueFull), 1);

        drop(first);
        assert_eq!(second.await.unwrap(), Ok("second"));
        assert_eq!(third.await.unwrap(), Ok("third"));
        assert_eq!(
            *turns.lock().unwrap(),
            ["second", "third"],
            "turns in the order the writes joined the line"
        );
        assert_eq!((gate.waiting(), gate.in_flight()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_is_refused_and_leaves_the_line() {
        let gate = WriteAdmission::new(1, 5, Duration::from_millis(200));
        let _held = gate.admit().await.expect("a free turn");
        assert_eq!(gate.admit().await.err(), Some(Refusal::Waited));
        assert_eq!(gate.waiting(), 0);
        assert_eq!(
            (
                gate.refused(Refusal::Waited),
                gate.refused(Refusal::QueueFull)
            ),
            (1, 0)
        );
    }

    #[tokio::test]
    async fn a_waiter_whose_request_is_dropped_leaves_the_line() {
        let gate = WriteAdmission::new(1, 1, Duration::from_secs(60));
        let _held = gate.admit().await.expect("a free turn");
        {
            let wait = gate.admit();
            tokio::pin!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            assert_eq!(gate.waiting(), 1);
        }
        assert_eq!(gate.waiting(), 0);
        // The place is free again.
        let again = gate.admit();
        tokio::pin!(again);
        assert!(futures::poll!(again.as_mut()).is_pending());
    }
}
