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
    /// Retention: delete notices older than `NOTICE_RETENTION_DAYS`, expired
    /// sessions, and the projector inbox's record of events that can never be
    /// delivered again. Without `--yes` it only counts. A client away for less
    /// than the retention bound still resumes its event stream completely;
    /// one away longer gets `event: reset`. (The outbox has its own
    /// `outbox prune`.)
    Prune {
        /// Delete; without it, only report what would go.
        #[arg(long)]
        yes: bool,
        /// Rows deleted per transaction.
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
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
    /// Put a parked event back in the relay's way.
    Retry {
        /// The outbox id, as `outbox dead` lists it.
        id: i64,
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
        Command::Prune {
            yes,
            batch_size,
            settings,
        } => prune(yes, batch_size, settings).await,
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

async fn prune(yes: bool, batch_size: i64, settings: Settings) -> anyhow::Result<()> {
    use sightline::visibility::retention;
    let db = connect_and_migrate(&settings).await?;
    let cutoff = chrono::Utc::now() - settings.notice_retention();
    let report = if yes {
        retention::prune(&db, cutoff, batch_size).await?
    } else {
        retention::plan(&db, cutoff).await?
    };
    println!(
        "{} {} notices recorded before {} ({} days), {} expired sessions, {} inbox entries of \
         events published before then{}",
        if yes { "deleted" } else { "would delete" },
        report.notices,
        cutoff.to_rfc3339(),
        settings.notice_retention_days,
        report.sessions,
        report.inbox,
        if yes {
            ""
        } else {
            "; pass --yes to delete them"
        }
    );
    Ok(())
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
            for d in dead {
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
        }
        OutboxCommand::Retry { id } => {
            if !sightline::outbox::retry(&db, id).await? {
                anyhow::bail!("no dead letter with outbox id {id} (see `sightline outbox dead`)");
            }
            println!("outbox event {id} is back in the relay's queue");
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
