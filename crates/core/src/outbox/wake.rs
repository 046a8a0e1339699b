//! Waking the relay after writes: one NOTIFY for many commits.
//!
//! A `pg_notify` inside the write transaction makes every committing writer
//! take PostgreSQL's single notification-queue lock at commit and hold it
//! through its WAL flush, so writers that append events commit one after
//! another instead of sharing flushes — the throughput wall measured in
//! docs/BENCHMARKS.md. Instead, every write request tells the [`RelayWaker`]
//! once it has been answered (its transaction has committed or failed), and
//! one task sends one NOTIFY, outside any write transaction, for however
//! many writes were answered since its last. A spurious wake costs the relay
//! one empty claim; a wake lost with the process between a commit and its
//! NOTIFY is caught by the relay's safety poll (`RELAY_POLL_MS`), as a lost
//! notification always was.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

use super::WAKE_CHANNEL;
use crate::shutdown::Shutdown;

/// Collects "something may have committed events" from request handlers.
#[derive(Default)]
pub struct RelayWaker {
    pending: Notify,
}

impl RelayWaker {
    /// The relay hears of it shortly; calls before the next NOTIFY leaves
    /// share it.
    pub fn wake(&self) {
        self.pending.notify_one();
    }
}

/// Sends the NOTIFYs until shutdown.
pub async fn run(waker: Arc<RelayWaker>, db: PgPool, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = waker.pending.notified() => {}
            _ = shutdown.recv() => return,
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKE_CHANNEL)
            .execute(&db)
            .await
        {
            // The relay's safety poll finds the events all the same.
            tracing::debug!(error = %e, "failed to wake the relay");
        }
    }
}
