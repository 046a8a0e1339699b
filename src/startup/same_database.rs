//! The same-database mode's writes (`READ_STORE=postgres`): the write side's
//! `InTransaction` seam, filled with `projector::same_database::apply`, so an
//! order's summary and notice commit with the order. Wired here because the
//! write side must not know the projector or the notice log.

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::outbox::OutboxEvent;
use crate::projector::same_database;
use crate::write_side::InTransaction;

pub struct NoticeInTransaction;

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
}
