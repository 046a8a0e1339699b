//! A rebuild's phases in order: the replay and the catch-up passes, the
//! summaries' copy, the new indices made searchable, then the swap (in
//! `swap`) and, if asked, the old indices deleted.

use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Pass, Rebuild, RebuildOptions};

/// Unlocked catch-up passes at most, before the final (locked) one; under
/// steady load each pass only has what arrived during the previous one.
const MAX_CATCH_UP_PASSES: u32 = 10;

impl Rebuild {
    pub(super) fn note(&self, message: String) {
        if self.bar.is_hidden() {
            tracing::info!("{message}");
        } else {
            self.bar.println(message);
        }
    }

    pub(super) async fn run(&mut self, options: &RebuildOptions) -> anyhow::Result<()> {
        let started = Instant::now();
        // Scheduled refreshes are wasted on an index nobody reads yet.
        for index in [&self.row.orders_index, &self.row.summaries_index] {
            self.store.set_refresh_interval(index, None).await?;
        }

        if let Pass::Stopped = self.replay_and_catch_up().await? {
            self.report.elapsed = started.elapsed();
            return Ok(());
        }

        self.bar.set_message("summaries");
        let summaries_copied_from: DateTime<Utc> = clock(&self.db).await?;
        self.copy_summaries(None).await?;

        self.make_searchable().await?;
        self.swap(options, summaries_copied_from).await?;

        if options.delete_old {
            let (old_orders, old_summaries) = (
                &self.report.previous_orders_index,
                &self.report.previous_summaries_index,
            );
            self.store.delete_index(old_orders).await?;
            self.store.delete_index(old_summaries).await?;
            self.report.old_deleted = true;
        }
        self.report.elapsed = started.elapsed();
        self.bar.finish_and_clear();
        Ok(())
    }

    /// The replay, then catch-up passes while there is much to catch up.
    /// `Stopped` when `stop_after_batches` was reached.
    async fn replay_and_catch_up(&mut self) -> anyhow::Result<Pass> {
        let mut passes = 0;
        loop {
            passes += 1;
            match self.pass(true).await? {
                Pass::Stopped => return Ok(Pass::Stopped),
                Pass::Done(n) if n as i64 >= self.batch_size && passes <= MAX_CATCH_UP_PASSES => {
                    self.bar
                        .set_message(format!("catching up (pass {})", passes + 1));
                }
                Pass::Done(n) => return Ok(Pass::Done(n)),
            }
        }
    }

    /// Refreshed at the configured pace again, and refreshed now: the bulk
    /// of the work becomes searchable before the relay is paused, so the
    /// refresh under the lock only has the last pass to do.
    async fn make_searchable(&mut self) -> anyhow::Result<()> {
        let interval = self.store.refresh_interval().to_owned();
        let new_indices = [
            self.row.orders_index.as_str(),
            self.row.summaries_index.as_str(),
        ];
        for index in new_indices {
            self.store
                .set_refresh_interval(index, Some(&interval))
                .await?;
        }
        self.store.refresh_indices(&new_indices).await?;
        Ok(())
    }
}

/// The database's clock, the one `published_at` is set from.
async fn clock(db: &PgPool) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(db)
        .await
}
