//! What a rebuild tells its operator: the progress bar while it runs and the
//! one-line report at the end.

use std::fmt;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;

use crate::outbox;

/// What a run did.
#[derive(Clone, Debug)]
pub struct RebuildReport {
    pub rebuild_id: i64,
    pub orders_index: String,
    pub summaries_index: String,
    /// What the aliases pointed at before (kept unless `delete_old`).
    pub previous_orders_index: String,
    pub previous_summaries_index: String,
    /// This run continued an interrupted one.
    pub resumed: bool,
    /// The aliases point at the new indices now. False when the run stopped
    /// early (`stop_after_batches`); running again resumes it.
    pub swapped: bool,
    pub old_deleted: bool,
    /// Events written to the new index by this run (replays included).
    pub replayed: u64,
    /// Events that do not decode (the relay parks those too): skipped.
    pub undecodable: u64,
    /// Events Elasticsearch refused (mapping errors): skipped.
    pub rejected: u64,
    /// Summaries written by this run.
    pub summaries: u64,
    /// Orders in the new index at the swap.
    pub orders: u64,
    /// Every event up to this id is replayed.
    pub last_outbox_id: i64,
    /// How long the relay was held off (the final pass and the swap).
    pub paused_for: Duration,
    pub elapsed: Duration,
}

impl RebuildReport {
    pub fn events_per_sec(&self) -> f64 {
        self.replayed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.events_per_sec();
        let secs = self.elapsed.as_secs_f64();
        if !self.swapped {
            return write!(
                f,
                "stopped early: {} events replayed into {} in {secs:.1} s ({rate:.0} events/s), \
                 up to outbox id {}; run `sightline rebuild` again to resume",
                self.replayed, self.orders_index, self.last_outbox_id
            );
        }
        if self.resumed {
            write!(f, "resumed; ")?;
        }
        write!(
            f,
            "rebuilt {} ({} orders) and {} ({} summaries written) from {} events in {secs:.1} s \
             ({rate:.0} events/s); the relay paused {} ms for the swap",
            self.orders_index,
            self.orders,
            self.summaries_index,
            self.summaries,
            self.replayed,
            self.paused_for.as_millis()
        )?;
        if self.undecodable + self.rejected > 0 {
            write!(
                f,
                "; skipped {} undecodable and {} refused events (see `sightline outbox dead`)",
                self.undecodable, self.rejected
            )?;
        }
        if self.old_deleted {
            write!(
                f,
                "; deleted {} and {}",
                self.previous_orders_index, self.previous_summaries_index
            )
        } else {
            write!(
                f,
                "; kept {} and {} (delete them when satisfied, or pass --delete-old)",
                self.previous_orders_index, self.previous_summaries_index
            )
        }
    }
}

/// A progress bar over the events left to replay, on stderr (hidden when
/// `visible` is false).
pub(super) async fn progress_bar(
    db: &PgPool,
    after: i64,
    visible: bool,
) -> anyhow::Result<ProgressBar> {
    if !visible {
        return Ok(ProgressBar::hidden());
    }
    let remaining = outbox::count_after(db, after).await?;
    let bar = ProgressBar::with_draw_target(Some(remaining as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} events · {per_sec:0} · eta {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}
