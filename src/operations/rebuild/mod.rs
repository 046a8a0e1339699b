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
//! 5. Pause, drain, swap: it takes [`locks::REBUILD`] exclusively, which waits
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

mod cli;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use elasticsearch::params::Refresh;
use indicatif::ProgressBar;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::config::Settings;
use crate::db::connect_and_migrate;
use crate::locks;
// The rebuild log lives in core: outbox pruning and the projector read it too.
use crate::outbox::events::OrderEvent;
use crate::outbox::{self, OutboxEvent};
use crate::read_side::index::{SearchIndex, WriteOutcome};
use crate::rebuild_log as log;
pub use cli::{RebuildArgs, command};
pub use report::RebuildReport;
use report::progress_bar;

/// Unlocked catch-up passes at most, before the final (locked) one; under
/// steady load each pass only has what arrived during the previous one.
const MAX_CATCH_UP_PASSES: u32 = 10;
/// How long the final pass waits for the relay's batch in flight.
const LOCK_TIMEOUT: &str = "60s";
/// Attempts at a bulk write whose items Elasticsearch answered with 429/5xx.
const WRITE_ATTEMPTS: u32 = 6;

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

/// Takes the maintenance lock (session-level, on a connection of its own):
/// one rebuild at a time, and no pruning while one runs.
async fn maintenance_guard(db: &PgPool) -> anyhow::Result<PgConnection> {
    let mut guard = db.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(locks::MAINTENANCE)
        .fetch_one(&mut guard)
        .await?;
    if !locked {
        bail!("another rebuild (or an outbox prune) is running against this database");
    }
    Ok(guard)
}

async fn release(mut guard: PgConnection) {
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(locks::MAINTENANCE)
        .execute(&mut guard)
        .await;
    let _ = guard.close().await;
}

enum Unfinished {
    Resume,
    /// Interrupted between the swap and recording it.
    AlreadySwapped,
    /// Its indices are gone: nothing to resume into.
    Abandoned,
}

async fn check_unfinished(
    db: &PgPool,
    store: &SearchIndex,
    row: &log::RebuildRow,
) -> anyhow::Result<Unfinished> {
    if store.alias_target(store.alias()).await?.as_deref() == Some(row.orders_index.as_str()) {
        log::finish(db, row.id, "swapped").await?;
        return Ok(Unfinished::AlreadySwapped);
    }
    if !store.index_exists(&row.orders_index).await?
        || !store.index_exists(&row.summaries_index).await?
    {
        tracing::warn!(index = %row.orders_index, "the interrupted rebuild's indices are gone; starting over");
        log::finish(db, row.id, "abandoned").await?;
        return Ok(Unfinished::Abandoned);
    }
    Ok(Unfinished::Resume)
}

/// Records a new rebuild into the next free `_v{N}` and creates its indices.
/// The row comes first: a crash before the indices exist just abandons it,
/// while indices without a row would be left over.
async fn begin(db: &PgPool, store: &SearchIndex) -> anyhow::Result<log::RebuildRow> {
    let mut names = Vec::new();
    for alias in [store.alias(), store.summaries_alias()] {
        let live = store
            .alias_target(alias)
            .await?
            .with_context(|| format!("alias {alias} does not exist"))?;
        let next = next_version(
            alias,
            &live,
            &store.indices_matching(&format!("{alias}_v*")).await?,
        );
        names.push((live, format!("{alias}_v{next}")));
    }
    let row = log::start(db, &names[0], &names[1])
        .await
        .context("Failed to record the rebuild")?;
    for (index, mappings) in [
        (&row.orders_index, store.order_mappings()),
        (&row.summaries_index, store.summary_mappings()),
    ] {
        if !store.create_bare_index(index, mappings).await? {
            bail!("index {index} exists already, though no rebuild is using it; delete it first");
        }
    }
    Ok(row)
}

/// One more than the highest `<alias>_v<N>` in use (the live one included).
fn next_version(alias: &str, live: &str, existing: &[String]) -> u64 {
    let prefix = format!("{alias}_v");
    existing
        .iter()
        .map(String::as_str)
        .chain([live])
        .filter_map(|name| name.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1
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

enum Pass {
    /// Replayed this many events.
    Done(u64),
    /// `stop_after_batches` reached.
    Stopped,
}

impl Rebuild {
    fn note(&self, message: String) {
        if self.bar.is_hidden() {
            tracing::info!("{message}");
        } else {
            self.bar.println(message);
        }
    }

    async fn run(&mut self, options: &RebuildOptions) -> anyhow::Result<()> {
        let started = Instant::now();
        // Scheduled refreshes are wasted on an index nobody reads yet.
        for index in [&self.row.orders_index, &self.row.summaries_index] {
            self.store.set_refresh_interval(index, None).await?;
        }

        // The replay, then catch-up passes while there is much to catch up.
        let mut passes = 0;
        loop {
            passes += 1;
            match self.pass(true).await? {
                Pass::Stopped => {
                    self.report.elapsed = started.elapsed();
                    return Ok(());
                }
                Pass::Done(n) if n as i64 >= self.batch_size && passes <= MAX_CATCH_UP_PASSES => {
                    self.bar
                        .set_message(format!("catching up (pass {})", passes + 1));
                }
                Pass::Done(_) => break,
            }
        }

        self.bar.set_message("summaries");
        let summaries_copied_from: DateTime<Utc> = clock(&self.db).await?;
        self.copy_summaries(None).await?;

        // Refreshed at the configured pace again, and refreshed now: the
        // bulk of the work becomes searchable before the relay is paused, so
        // the refresh under the lock only has the last pass to do.
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

        // Pause, drain, swap.
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

        if options.delete_old {
            self.store.delete_index(&old_orders).await?;
            self.store.delete_index(&old_summaries).await?;
            self.report.old_deleted = true;
        }
        self.report.elapsed = started.elapsed();
        self.bar.finish_and_clear();
        Ok(())
    }

    /// One pass: what has appeared in the gaps (id ranges read past while
    /// empty), then every event after the last one replayed. Afterwards
    /// each committed event is replayed, or above the last id, or in a gap.
    async fn pass(&mut self, may_stop: bool) -> anyhow::Result<Pass> {
        let mut replayed = 0u64;

        if !self.row.gap_starts.is_empty() {
            // Read the xmin first: in a gap whose possible owners had all
            // ended by then, the query below finds everything there will be.
            let xmin: i64 =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(&self.db)
                    .await?;
            let events =
                outbox::in_ranges(&self.db, &self.row.gap_starts, &self.row.gap_ends).await?;
            if !events.is_empty() {
                self.replay(&events).await?;
                replayed += events.len() as u64;
            }
            // Open gaps stay (what was found is replayed again: harmless).
            let row = &mut self.row;
            let open: Vec<usize> = (0..row.gap_xmaxes.len())
                .filter(|&i| row.gap_xmaxes[i] > xmin)
                .collect();
            row.gap_starts = open.iter().map(|&i| row.gap_starts[i]).collect();
            row.gap_ends = open.iter().map(|&i| row.gap_ends[i]).collect();
            row.gap_xmaxes = open.iter().map(|&i| row.gap_xmaxes[i]).collect();
            self.save(events.len()).await?;
        }

        loop {
            let events = outbox::after(&self.db, self.row.last_outbox_id, self.batch_size).await?;
            let Some(last) = events.last().map(|e| e.id) else {
                break;
            };
            let gaps = gaps_in(self.row.last_outbox_id, &events);
            if !gaps.is_empty() {
                // Read after the query: a transaction that could own an id
                // in a gap had its transaction id (below this) before.
                let xmax: i64 = sqlx::query_scalar(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
                )
                .fetch_one(&self.db)
                .await?;
                for (start, end) in gaps {
                    self.row.gap_starts.push(start);
                    self.row.gap_ends.push(end);
                    self.row.gap_xmaxes.push(xmax);
                }
            }
            self.replay(&events).await?;
            replayed += events.len() as u64;
            self.row.last_outbox_id = last;
            self.report.last_outbox_id = last;
            self.save(events.len()).await?;
            if may_stop && self.batch_done() {
                return Ok(Pass::Stopped);
            }
        }
        Ok(Pass::Done(replayed))
    }

    /// Persists how far the rebuild got (after the batch is written).
    async fn save(&self, replayed: usize) -> sqlx::Result<()> {
        log::save(&self.db, &self.row, replayed).await
    }

    /// Counts a batch; true when the run should stop here.
    fn batch_done(&mut self) -> bool {
        self.batches += 1;
        self.stop_after.is_some_and(|n| self.batches >= n)
    }

    /// Writes a batch of events into the new orders index.
    async fn replay(&mut self, events: &[OutboxEvent]) -> anyhow::Result<()> {
        let mut writes = Vec::with_capacity(events.len());
        for event in events {
            match OrderEvent::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(order_event) => {
                    let doc = crate::projector::to_document(event, &order_event);
                    writes.push((doc.id.to_string(), doc.version, serde_json::to_value(&doc)?));
                }
                Err(reason) => {
                    tracing::debug!(outbox_id = event.id, %reason, "skipping an undecodable event");
                    self.report.undecodable += 1;
                }
            }
        }
        let index = self.row.orders_index.clone();
        self.report.rejected += write_all(&self.store, &index, writes).await?;
        if self.mark_published {
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            outbox::mark_replayed(&self.db, &ids).await?;
        }
        self.report.replayed += events.len() as u64;
        let bar = &self.bar;
        if bar.position() + events.len() as u64 > bar.length().unwrap_or(0) {
            bar.set_length(bar.position() + events.len() as u64);
        }
        bar.inc(events.len() as u64);
        Ok(())
    }

    /// Copies summaries from `user_summaries` (all, or these users') into the
    /// new summaries index, keyed on their revision.
    async fn copy_summaries(&mut self, users: Option<&[Uuid]>) -> anyhow::Result<()> {
        let mut cursor = Uuid::nil();
        loop {
            let rows =
                crate::projector::summaries::page(&self.db, cursor, self.batch_size, users).await?;
            let Some(last) = rows.last() else { break };
            cursor = last.user_id;
            let count = rows.len() as u64;
            let writes = rows
                .into_iter()
                .map(|doc| {
                    Ok((
                        doc.user_id.to_string(),
                        doc.revision,
                        serde_json::to_value(&doc)?,
                    ))
                })
                .collect::<Result<Vec<_>, serde_json::Error>>()?;
            let index = self.row.summaries_index.clone();
            self.report.rejected += write_all(&self.store, &index, writes).await?;
            self.report.summaries += count;
        }
        Ok(())
    }
}

/// The id ranges after `after` and below the last event that `events`
/// (sorted by id) lacks.
fn gaps_in(after: i64, events: &[OutboxEvent]) -> Vec<(i64, i64)> {
    let mut gaps = Vec::new();
    let mut expected = after + 1;
    for event in events {
        if event.id > expected {
            gaps.push((expected, event.id - 1));
        }
        expected = event.id + 1;
    }
    gaps
}

/// The database's clock, the one `published_at` is set from.
async fn clock(db: &PgPool) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(db)
        .await
}

/// Writes versioned documents, retrying those Elasticsearch answered with a
/// passing failure. Returns how many it refused for good.
async fn write_all(
    store: &SearchIndex,
    index: &str,
    mut writes: Vec<(String, i64, Value)>,
) -> anyhow::Result<u64> {
    let mut rejected = 0;
    for attempt in 1..=WRITE_ATTEMPTS {
        let outcomes = match store
            .bulk_versioned(index, writes.clone(), Refresh::False)
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "bulk write failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                continue;
            }
            Err(e) => return Err(e).context("Failed to write to the new index"),
        };
        let mut retry = Vec::new();
        for (write, outcome) in writes.into_iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Applied | WriteOutcome::AlreadyApplied => {}
                WriteOutcome::Rejected(reason) => {
                    tracing::warn!(id = %write.0, %reason, "Elasticsearch refused a document");
                    rejected += 1;
                }
                WriteOutcome::Failed(_) => retry.push(write),
            }
        }
        if retry.is_empty() {
            return Ok(rejected);
        }
        writes = retry;
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    bail!(
        "{} documents still failed after {WRITE_ATTEMPTS} attempts; run again to resume",
        writes.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(ids: &[i64]) -> Vec<OutboxEvent> {
        ids.iter()
            .map(|&id| OutboxEvent {
                id,
                event_id: Uuid::nil(),
                event_type: String::new(),
                schema_version: 1,
                aggregate_id: Uuid::nil(),
                aggregate_version: 1,
                user_id: Uuid::nil(),
                payload: Value::Null,
                created_at: Utc::now(),
                relay_attempt: 0,
            })
            .collect()
    }

    #[test]
    fn gaps_are_the_missing_ranges_below_the_last_id() {
        assert_eq!(gaps_in(0, &events(&[1, 2, 3])), vec![]);
        assert_eq!(gaps_in(0, &events(&[3, 4, 7])), vec![(1, 2), (5, 6)]);
        assert_eq!(gaps_in(10, &events(&[12])), vec![(11, 11)]);
        assert_eq!(gaps_in(10, &events(&[])), vec![]);
    }

    #[test]
    fn the_next_version_is_past_every_existing_one() {
        let existing = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(next_version("p-orders", "p-orders_v1", &existing(&[])), 2);
        assert_eq!(
            next_version(
                "p-orders",
                "p-orders_v2",
                &existing(&["p-orders_v1", "p-orders_v2", "p-orders_v7", "p-orders_vx"])
            ),
            8
        );
        assert_eq!(next_version("p-orders", "elsewhere", &existing(&[])), 1);
    }
}
