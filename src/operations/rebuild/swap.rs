//! Pause, drain, swap: the relay paused behind [`locks::REBUILD`], a last
//! pass and the summaries changed since their copy, the new orders index
//! checked against the live one, and both aliases moved in one atomic
//! `POST _aliases` before the relay goes on.

use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::{Pass, Rebuild, RebuildOptions, log};
use crate::{locks, outbox};

/// How long the final pass waits for the relay's batch in flight.
const LOCK_TIMEOUT: &str = "60s";

impl Rebuild {
    /// Takes the relay's lock, replays what came since, and swaps the
    /// aliases (unless the new index holds fewer orders and `allow_fewer`
    /// is off); committing releases the relay.
    pub(super) async fn swap(
        &mut self,
        options: &RebuildOptions,
        summaries_copied_from: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.bar.set_message("waiting for the relay");
        let mut lock = self.db.begin().await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *lock)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(locks::REBUILD)
            .execute(&mut *lock)
            .await
            .with_context(|| {
                format!("Failed to pause the relay within {LOCK_TIMEOUT}; run again to resume")
            })?;
        let paused = Instant::now();
        self.bar.set_message("final pass, relay paused");
        let Pass::Done(_) = self.pass(false).await? else {
            unreachable!("the final pass does not stop early")
        };
        let touched = outbox::users_changed_since(&self.db, summaries_copied_from).await?;
        self.copy_summaries(Some(&touched)).await?;

        let (orders, summaries) = (&self.row.orders_index, &self.row.summaries_index);
        let (old_orders, old_summaries) = (
            self.report.previous_orders_index.clone(),
            self.report.previous_summaries_index.clone(),
        );
        self.store
            .refresh_indices(&[orders, summaries, &old_orders])
            .await?;
        let (new_count, live_count) = (
            self.store.count(orders).await?,
            self.store.count(&old_orders).await?,
        );
        if new_count < live_count && !options.allow_fewer {
            bail!(
                "the new index {orders} holds {new_count} orders, the live {old_orders} {live_count}: \
                 the event log lacks {} of them (pruned?). Nothing was swapped and the relay goes on; \
                 `sightline rebuild --allow-fewer` swaps anyway, `sightline rebuild --abandon` gives up",
                live_count - new_count
            );
        }
        self.store
            .swap_aliases(&[
                (self.store.alias(), &old_orders, orders),
                (self.store.summaries_alias(), &old_summaries, summaries),
            ])
            .await
            .context("Failed to swap the aliases")?;
        log::swapped(&mut lock, &self.row).await?;
        lock.commit().await?;
        self.report.paused_for = paused.elapsed();
        self.report.swapped = true;
        self.report.orders = new_count;
        Ok(())
    }
}
