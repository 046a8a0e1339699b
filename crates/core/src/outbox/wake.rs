//! Waking the relay after writes: one NOTIFY for many commits, outside their
//! transactions (see [`crate::wake`] for why). Every write request tells the
//! [`RelayWaker`] once it has been answered (its transaction has committed
//! or failed); the relay's safety poll (`RELAY_POLL_MS`) covers a wake lost
//! with the process.

use std::sync::Arc;

use sqlx::PgPool;

use super::WAKE_CHANNEL;
use crate::shutdown::Shutdown;

/// Collects "something may have committed events" from request handlers.
pub use crate::wake::Waker as RelayWaker;

/// Sends the relay's NOTIFYs until shutdown.
pub async fn run(waker: Arc<RelayWaker>, db: PgPool, shutdown: Shutdown) {
    crate::wake::run(waker, db, WAKE_CHANNEL, shutdown).await;
}
