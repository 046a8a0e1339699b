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
            if !outbox::retry(&db, id).await? {
                anyhow::bail!("no dead letter with outbox id {id} (see `sightline outbox dead`)");
            }
            println!("outbox event {id} is back in the relay's queue");
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
