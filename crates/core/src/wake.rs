//! One NOTIFY for many commits, sent outside every write transaction.
//!
//! A `pg_notify` inside a write transaction makes every committing writer
//! take PostgreSQL's single notification-queue lock at commit and hold it
//! through its WAL flush (`PreCommit_Notify`), so such writers commit one
//! after another instead of sharing flushes — the throughput wall measured
//! in docs/BENCHMARKS.md. Instead, code that has committed something a
//! listener should hear of calls [`Waker::wake`], and one task per channel
//! sends one NOTIFY, on its own connection, for however many wakes came
//! since its last. A spurious wake costs the listener one empty read; a wake
//! lost with the process between a commit and its NOTIFY is caught by the
//! listener's safety timer, as a lost notification always was.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::shutdown::Shutdown;

/// Collects "something was committed" for one channel.
#[derive(Default)]
pub struct Waker {
    pending: Notify,
    /// The same news for a listener in this process, which need not wait
    /// for the NOTIFY's round trip through PostgreSQL.
    here: Notify,
}

impl Waker {
    /// The listeners hear of it shortly; calls before the next NOTIFY leaves
    /// share it.
    pub fn wake(&self) {
        self.pending.notify_one();
        self.here.notify_one();
    }

    /// Returns once [`wake`](Self::wake) was called in this process since
    /// the last return (a wake while nobody waits is kept for the next).
    pub async fn woken_here(&self) {
        self.here.notified().await;
    }
}

/// Sends `waker`'s NOTIFYs on `channel` until shutdown.
pub async fn run(waker: Arc<Waker>, db: PgPool, channel: &'static str, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = waker.pending.notified() => {}
            _ = shutdown.recv() => return,
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel)
            .execute(&db)
            .await
        {
            // The listeners' safety timers find the work all the same.
            tracing::debug!(error = %e, %channel, "failed to send a wake-up");
        }
    }
}
