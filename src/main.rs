use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sightline::config::Settings;
use sightline::startup::{Application, connect_and_migrate};
use sightline::telemetry;

/// Sightline: orders committed with an outbox, projected into Elasticsearch,
/// and "order now visible" pushed over SSE once search can find them.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and run the relay, projector and notice hub.
    Serve(Settings),
    /// Apply database migrations and exit.
    Migrate(Settings),
    /// Build fresh read-model indices from the event log (the outbox) while
    /// the live ones keep serving, then swap the aliases atomically.
    ///
    /// Creates `<prefix>orders_v{N+1}` and `<prefix>summaries_v{M+1}` beside
    /// the live indices, replays every event into them, catches up, then
    /// pauses the relay for a last pass and moves both aliases in one step.
    /// Interrupted (Ctrl-C, kill), it resumes where it stopped when run
    /// again. It sends no notices. Progress goes to stderr when that is a
    /// terminal; the summary line to stdout.
    Rebuild {
        #[command(flatten)]
        options: RebuildArgs,
        #[command(flatten)]
        settings: Settings,
    },
    /// Inspect the outbox: backlog, dead letters, retries, retention.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
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

#[derive(clap::Args)]
struct RebuildArgs {
    /// Events per bulk write (and per step persisted for resuming).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    batch_size: i64,
    /// Delete the old indices after the swap (by default they are kept and named).
    #[arg(long)]
    delete_old: bool,
    /// Swap even when the new orders index holds fewer orders than the live
    /// one (their events were pruned from the log).
    #[arg(long)]
    allow_fewer: bool,
    /// Give up an interrupted rebuild: delete the indices it was building.
    #[arg(long, conflicts_with_all = ["delete_old", "allow_fewer"])]
    abandon: bool,
    /// Stop (resumably) after this many batches: for trying out resuming.
    #[arg(long, hide = true)]
    stop_after_batches: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    telemetry::init_tracing();
    let result = match Cli::parse().command {
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => migrate(settings).await,
        Command::Rebuild { options, settings } => rebuild(options, settings).await,
        Command::Outbox { command, settings } => outbox(command, settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sightline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    connect_and_migrate(&settings).await?;
    println!("migrations applied");
    Ok(())
}

async fn rebuild(args: RebuildArgs, settings: Settings) -> anyhow::Result<()> {
    use sightline::projector::rebuild::{self, RebuildOptions};
    use std::io::IsTerminal;
    if args.abandon {
        match rebuild::abandon(&settings).await? {
            Some(index) => println!("abandoned the rebuild into {index} (its indices are deleted)"),
            None => println!("no unfinished rebuild"),
        }
        return Ok(());
    }
    let options = RebuildOptions {
        batch_size: args.batch_size,
        delete_old: args.delete_old,
        allow_fewer: args.allow_fewer,
        stop_after_batches: args.stop_after_batches,
    };
    let progress = std::io::stderr().is_terminal();
    tokio::select! {
        report = rebuild::run(&settings, options, progress) => {
            println!("{}", report?);
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            // Every finished batch is recorded; a final pass in progress is
            // rolled back with the connection, and the relay goes on.
            anyhow::bail!("interrupted: run `sightline rebuild` again to resume where it stopped")
        }
    }
}

/// One line of `outbox dead` (and of `outbox retry`'s listing).
fn print_dead_letter(d: &sightline::outbox::DeadLetter) {
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

async fn outbox(command: OutboxCommand, settings: Settings) -> anyhow::Result<()> {
    let db = connect_and_migrate(&settings).await?;
    match command {
        OutboxCommand::Status => {
            let status = sightline::outbox::status(&db).await?;
            println!("backlog:       {}", status.backlog);
            match status.oldest_pending_age_seconds {
                Some(age) => println!("oldest event:  {age:.1} s old"),
                None => println!("oldest event:  -"),
            }
            println!("dead letters:  {}", status.dead_letters);
            println!("published:     {}", status.published);
        }
        OutboxCommand::Dead => {
            let dead = sightline::outbox::dead_letters(&db).await?;
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
            let all = sightline::outbox::RetryFilter::default();
            let parked = sightline::outbox::parked_matching(&db, &all).await?;
            let found = parked.iter().find(|d| d.outbox_id == id);
            if dry_run && let Some(d) = found {
                print_dead_letter(d);
                println!("would put outbox event {id} back in the relay's queue (dry run)");
                return Ok(());
            }
            if dry_run || !sightline::outbox::retry(&db, id).await? {
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
                    .map(|v| sightline::outbox::parse_cutoff(&v, now))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            };
            let filter = sightline::outbox::RetryFilter {
                error_contains: error,
                parked_after: when("--parked-after", parked_after)?,
                parked_before: when("--parked-before", parked_before)?,
            };
            let picked = if dry_run {
                sightline::outbox::parked_matching(&db, &filter).await?
            } else {
                sightline::outbox::retry_matching(&db, &filter).await?
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
            let cutoff = sightline::outbox::parse_cutoff(&published_before, chrono::Utc::now())
                .map_err(|e| anyhow::anyhow!("--published-before: {e}"))?;
            let plan = sightline::outbox::prune_plan(&db, cutoff).await?;
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
            let deleted = sightline::outbox::prune(&db, cutoff, batch_size).await?;
            println!(
                "deleted {deleted} events published before {}",
                cutoff.to_rfc3339()
            );
        }
    }
    Ok(())
}
