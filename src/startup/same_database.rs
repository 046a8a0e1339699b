//! The same-database mode's writes (`READ_STORE=postgres`): the write side's
//! `InTransaction` seam, filled with `projector::same_database::apply`, so an
//! order's summary and notice commit with the order, and the notice hubs are
//! woken after that commit (one NOTIFY for many writes: see `wake`). Wired
//! here because the write side must not know the projector or the notice
//! log.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::outbox::OutboxEvent;
use crate::projector::same_database;
use crate::wake::Waker;
use crate::write_side::InTransaction;

pub struct NoticeInTransaction {
    /// Sends the notice channel's NOTIFY (its task is started with the hub).
    pub hubs: Arc<Waker>,
}

impl InTransaction for NoticeInTransaction {
    fn run<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a OutboxEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            same_database::apply(conn, std::slice::from_ref(event)).await?;
            Ok(())
        })
    }

    fn after_commit(&self) {
        self.hubs.wake();
    }
}
