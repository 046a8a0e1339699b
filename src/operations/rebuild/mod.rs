//! `sightline rebuild`: a fresh read model from the event log, swapped in
//! while the live one keeps serving.
//!
//! 1. Next to the live `<prefix>orders_vN` (and `<prefix>summaries_vM`) it
//!    creates `_v{N+1}` (`_v{M+1}`) behind no alias, so nothing reads them yet,
//!    and records the rebuild in the `rebuilds` table.
//! 2. It replays the whole outbox in id order into the new orders index with
//!    the projector's own `to_document` and external versions (so replays and
//!    reordering are harmless), persisting how far it got after every batch:
//!    an interrupted run resumes into the same indices.
//! 3. Catch-up passes replay what came since. Outbox ids are taken at
//!    insert, not at commit, so a pass may read past an id whose transaction
//!    is still open: it remembers every such gap (an id range) and re-reads
//!    exactly those in the next pass. A gap is dropped once every
//!    transaction that could own an id in it has ended (`outbox::append`
//!    takes its transaction id before its outbox id, so the snapshot xmin
//!    says when).
//! 4. The summaries are the projector's own state (`user_summaries`): copied
//!    into the new summaries index.
//! 5. Pause, drain, swap: it takes [`crate::locks::REBUILD`] exclusively, which waits
//!    for the relay batch in flight and holds off the next; replays a last
//!    pass (gaps and new events) and re-copies the summaries changed since
//!    the copy (`published_at` is set after the change); refreshes; and
//!    moves both aliases in one atomic `POST _aliases`. Committing releases
//!    the relay, whose next batch writes through the aliases into the new
//!    indices. Nothing the relay applied to the old index is missing from the
//!    new one, and a list made right after a notice still finds its order.
//!
//! It records no notices: clients hear nothing about old orders.
//!
//! Run with `READ_STORE=postgres` (graduating to Elasticsearch while the
//! same-database mode serves; no relay runs), it also marks each replayed
//! event published once the new index has it and its order version is
//! noticed: the relay, once the mode is switched, starts after them and
//! delivers only what committed since — nothing missing, nothing noticed
//! twice (see docs/ARCHITECTURE.md, *Moving between the modes*).
//!
//! Here: the entry points ([`run`], [`abandon`]) and a run's state. The
//! phases in order are in `phases`; starting or resuming (the maintenance
//! lock, the new indices) in `start`; the passes over the outbox and the
//! writes into the new indices in `replay`; pause, drain, swap in `swap`;
//! the `rebuilds` table in `log` (core's `rebuild_log`); the command line in `cli`; the progress
//! bar and the report in `report`.

mod cli;
mod phases;
mod replay;
mod report;
mod start;
mod swap;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use sqlx::PgPool;

use crate::config::Settings;
use crate::db::connect_and_migrate;
// The rebuild log lives in core: outbox pruning and the projector read it too.
use crate::read_side::index::SearchIndex;
use crate::rebuild_log as log;
pub use cli::{RebuildArgs, command};
pub use report::RebuildReport;
use report::progress_bar;
use start::{Unfinished, begin, check_unfinished, maintenance_guard, release};

#[derive(Clone, Debug)]
pub struct RebuildOptions {
    /// Events per bulk write (and per persisted step).
    pub batch_size: i64,
    /// Delete the old indices after the swap (default: keep them).
    pub delete_old: bool,
    /// Swap even if the new orders index holds fewer orders than the live
    /// one (events pruned from the log).
    pub allow_fewer: bool,
    /// Stop, resumably, after this many batches (to try out resuming).
    pub stop_after_batches: Option<u64>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            delete_old: false,
            allow_fewer: false,
            stop_after_batches: None,
        }
    }
}

/// Rebuilds both read-model indices and swaps the aliases (see the module
/// docs). `progress` draws a bar on stderr (it hides itself when stderr is
/// not a terminal).
pub async fn run(
    settings: &Settings,
    options: RebuildOptions,
    progress: bool,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let db = connect_and_migrate(settings).await?;
    let store = SearchIndex::from_settings(settings)?;
    store.ensure_exists().await.with_context(|| {
        format!(
            "Elasticsearch is not usable at {} — start it with `scripts/services start elasticsearch`",
            crate::config::redact_url(&settings.elasticsearch_url)
        )
    })?;
    let guard = maintenance_guard(&db).await?;

    let (row, resumed) = match log::unfinished(&db).await? {
        Some(row) => match check_unfinished(&db, &store, &row).await? {
            Unfinished::Resume => (row, true),
            Unfinished::AlreadySwapped => {
                // Interrupted after the swap, before recording it: done.
                let orders = store.count(&row.orders_index).await?;
                release(guard).await;
                return Ok(RebuildReport {
                    swapped: true,
                    resumed: true,
                    orders,
                    ..report_of(&row, started)
                });
            }
            Unfinished::Abandoned => (begin(&db, &store).await?, false),
        },
        None => (begin(&db, &store).await?, false),
    };

    let bar = progress_bar(&db, row.last_outbox_id, progress).await?;
    let mut rebuild = Rebuild {
        db: db.clone(),
        store,
        report: RebuildReport {
            resumed,
            ..report_of(&row, started)
        },
        row,
        mark_published: settings.read_store == crate::config::ReadStoreKind::Postgres,
        batch_size: options.batch_size.max(1),
        stop_after: options.stop_after_batches,
        batches: 0,
        bar,
    };
    if resumed {
        rebuild.note(format!(
            "resuming the rebuild into {} after outbox id {}",
            rebuild.row.orders_index, rebuild.row.last_outbox_id
        ));
    } else {
        rebuild.note(format!(
            "rebuilding {} → {} and {} → {}",
            rebuild.report.previous_orders_index,
            rebuild.row.orders_index,
            rebuild.report.previous_summaries_index,
            rebuild.row.summaries_index
        ));
    }
    let result = rebuild.run(&options).await;
    rebuild.bar.finish_and_clear();
    release(guard).await;
    result?;
    Ok(rebuild.report)
}

/// Gives up an unfinished rebuild: deletes the indices it was building.
/// Returns the abandoned orders index, if there was an unfinished rebuild.
pub async fn abandon(settings: &Settings) -> anyhow::Result<Option<String>> {
    let db = connect_and_migrate(settings).await?;
    let store = SearchIndex::from_settings(settings)?;
    let guard = maintenance_guard(&db).await?;
    let Some(row) = log::unfinished(&db).await? else {
        release(guard).await;
        return Ok(None);
    };
    if let Unfinished::AlreadySwapped = check_unfinished(&db, &store, &row).await? {
        release(guard).await;
        bail!(
            "the rebuild into {} had already swapped the aliases; nothing to abandon",
            row.orders_index
        );
    }
    for index in [&row.orders_index, &row.summaries_index] {
        store.delete_index(index).await?;
    }
    log::finish(&db, row.id, "abandoned").await?;
    release(guard).await;
    Ok(Some(row.orders_index))
}

fn report_of(row: &log::RebuildRow, started: Instant) -> RebuildReport {
    RebuildReport {
        rebuild_id: row.id,
        orders_index: row.orders_index.clone(),
        summaries_index: row.summaries_index.clone(),
        previous_orders_index: row.previous_orders_index.clone().unwrap_or_default(),
        previous_summaries_index: row.previous_summaries_index.clone().unwrap_or_default(),
        resumed: false,
        swapped: false,
        old_deleted: false,
        replayed: 0,
        undecodable: 0,
        rejected: 0,
        summaries: 0,
        orders: 0,
        last_outbox_id: row.last_outbox_id,
        paused_for: Duration::ZERO,
        elapsed: started.elapsed(),
    }
}

/// A run in progress: the indices it writes into (its `rebuilds` row),
/// what it has done so far, and its progress bar. Its phases are methods in
/// `phases`, `replay` and `swap`.
struct Rebuild {
    db: PgPool,
    store: SearchIndex,
    row: log::RebuildRow,
    report: RebuildReport,
    /// Marks what it replayed published (same-database mode: no relay runs).
    mark_published: bool,
    batch_size: i64,
    stop_after: Option<u64>,
    batches: u64,
    bar: ProgressBar,
}

/// How a pass over the outbox ended.
enum Pass {
    /// Replayed this many events.
    Done(u64),
    /// `stop_after_batches` reached.
    Stopped,
}
