//! The one seam through which other work may join a write's transaction:
//! [`InTransaction`], given the event just appended to the outbox, runs on
//! the same connection before the commit, and is told once the commit has
//! happened. Start-up supplies it (with `READ_STORE=postgres`: count the
//! summary and record the notice, so the order is visible and noticed in
//! one commit, then wake the notice hubs); the write side knows only this
//! trait, never what runs behind it.

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::outbox::OutboxEvent;

pub trait InTransaction: Send + Sync {
    /// Runs inside the write's transaction, after its event was appended.
    /// An error rolls the whole write back.
    fn run<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a OutboxEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Called once the write's transaction has committed: where what [`run`]
    /// did may be announced (never inside the transaction, which would hold
    /// its commit up). Must not block.
    ///
    /// [`run`]: InTransaction::run
    fn after_commit(&self) {}
}
