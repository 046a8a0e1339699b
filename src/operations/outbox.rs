//! `sightline outbox …`: backlog, dead letters, retries and retention, as an
//! operator sees them (the queries live in [`crate::outbox`]).

use clap::Subcommand;

use crate::config::Settings;
use crate::db::connect_and_migrate;
use crate::outbox;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Backlog, age of the oldest pending event, dead letters.
    Status,
    /// List parked (dead-lettered) events with their errors.
    Dead,
    /// Put parked events back in the relay's way: one by id, or every one
    /// (`--all`) or those the filters select (e.g. those parked by a fault
    /// that has passed). `--dry-run` lists what would go.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["id", "all", "error", "parked_after", "parked_before"]).multiple(true))]
    Retry {
        /// The outbox id, as `outbox dead` lists it.
        #[arg(conflicts_with_all = ["all", "error", "parked_after", "parked_before"])]
        id: Option<i64>,
        /// Every parked event (narrowed by the filters, if given).
        #[arg(long)]
        all: bool,
        /// Only events whose error contains this text (case-insensitive),
        /// e.g. `cluster_block_exception`.
        #[arg(long, value_name = "TEXT")]
        error: Option<String>,
        /// Only events parked at or after this: an RFC 3339 time, a date
        /// (UTC) or an age (15min, 6h, 2d).
        #[arg(long, value_name = "WHEN")]
        parked_after: Option<String>,
        /// Only events parked before this (same forms).
        #[arg(long, value_name = "WHEN")]
        parked_before: Option<String>,
        /// List what would be put back; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete published events older than a cutoff (retention). Without
    /// `--yes` it only counts. Unpublished and parked events are never
    /// deleted. Pruned events are gone from the audit trail, and a later
    /// `rebuild` cannot restore their orders.
    Prune {
        /// Delete events published before this: an RFC 3339 time
        /// (2026-01-31T00:00:00Z), a date (2026-01-31, UTC) or an age (30d).
        #[arg(long, value_name = "WHEN")]
        published_before: String,
        /// Delete; without it, only report what would go.
        #[arg(long)]
        yes: bool,
        /// Rows deleted per transaction.
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
    },
}

/// Runs an `outbox` subcommand and prints its answer.
pub async fn command(command: OutboxCommand, settings: Settings) -> anyhow::Result<()> {
    let db = connect_and_migrate(&settings).await?;
    match command {
        OutboxCommand::Status => {
            let status = outbox::status(&db).await?;
            println!("backlog:       {}", status.backlog);
            match status.oldest_pending_age_seconds {
                Some(age) => println!("oldest event:  {age:.1} s old"),
                None => println!("oldest event:  -"),
            }
            println!("dead letters:  {}", status.dead_letters);
            println!("published:     {}", status.published);
        }
        OutboxCommand::Dead => {
            let dead = outbox::dead_letters(&db).await?;
            if dead.is_empty() {
                println!("no dead letters");
            }
            dead.iter().for_each(print_dead_letter);
        }
        OutboxCommand::Retry {
            id: Some(id),
            dry_run,
            ..
        } => {
            let all = outbox::RetryFilter::default();
            let parked = outbox::parked_matching(&db, &all).await?;
            let found = parked.iter().find(|d| d.outbox_id == id);
            if dry_run && let Some(d) = found {
                print_dead_letter(d);
                println!("would put outbox event {id} back in the relay's queue (dry run)");
                return Ok(());
            }
            if dry_run || !outbox::retry(&db, id).await? {
                anyhow::bail!("no dead letter with outbox id {id} (see `sightline outbox dead`)");
            }
            println!("outbox event {id} is back in the relay's queue");
        }
        OutboxCommand::Retry {
            id: None,
            all: _,
            error,
            parked_after,
            parked_before,
            dry_run,
        } => {
            let now = chrono::Utc::now();
            let when = |flag: &str, value: Option<String>| {
                value
                    .map(|v| outbox::parse_cutoff(&v, now))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            };
            let filter = outbox::RetryFilter {
                error_contains: error,
                parked_after: when("--parked-after", parked_after)?,
                parked_before: when("--parked-before", parked_before)?,
            };
            let picked = if dry_run {
                outbox::parked_matching(&db, &filter).await?
            } else {
                outbox::retry_matching(&db, &filter).await?
            };
            picked.iter().for_each(print_dead_letter);
            let n = picked.len();
            let events = if n == 1 { "event" } else { "events" };
            if dry_run {
                println!("would put {n} parked {events} back in the relay's queue (dry run)");
            } else {
                println!("put {n} parked {events} back in the relay's queue");
            }
        }
        OutboxCommand::Prune {
            published_before,
            yes,
            batch_size,
        } => {
            let cutoff = outbox::parse_cutoff(&published_before, chrono::Utc::now())
                .map_err(|e| anyhow::anyhow!("--published-before: {e}"))?;
            let plan = outbox::prune_plan(&db, cutoff).await?;
            if plan.unpublished + plan.parked > 0 {
                println!(
                    "keeping {} unpublished and {} parked events from before {} (never pruned)",
                    plan.unpublished,
                    plan.parked,
                    cutoff.to_rfc3339()
                );
            }
            if !yes {
                println!(
                    "would delete {} events published before {}; pass --yes to delete them \
                     (their orders can then no longer be rebuilt from the log)",
                    plan.deletable,
                    cutoff.to_rfc3339()
                );
                return Ok(());
            }
            let deleted = outbox::prune(&db, cutoff, batch_size).await?;
            println!(
                "deleted {deleted} events published before {}",
                cutoff.to_rfc3339()
            );
        }
    }
    Ok(())
}

/// One line of `outbox dead` (and of `outbox retry`'s listing).
fn print_dead_letter(d: &outbox::DeadLetter) {
    println!(
        "{}\t{} v{}\torder {} v{}\tattempts {}\tparked {}\t{}",
        d.outbox_id,
        d.event_type,
        d.schema_version,
        d.aggregate_id,
        d.aggregate_version,
        d.attempts,
        d.parked_at.to_rfc3339(),
        d.error
    );
}
