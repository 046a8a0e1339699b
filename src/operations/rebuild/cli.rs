//! `sightline rebuild`'s arguments and what it prints.

use std::io::IsTerminal;

use super::RebuildOptions;
use crate::config::Settings;

#[derive(clap::Args)]
pub struct RebuildArgs {
    /// Events per bulk write (and per step persisted for resuming).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch_size: i64,
    /// Delete the old indices after the swap (by default they are kept and named).
    #[arg(long)]
    pub delete_old: bool,
    /// Swap even when the new orders index holds fewer orders than the live
    /// one (their events were pruned from the log).
    #[arg(long)]
    pub allow_fewer: bool,
    /// Give up an interrupted rebuild: delete the indices it was building.
    #[arg(long, conflicts_with_all = ["delete_old", "allow_fewer"])]
    pub abandon: bool,
    /// Stop (resumably) after this many batches: for trying out resuming.
    #[arg(long, hide = true)]
    pub stop_after_batches: Option<u64>,
}

/// `sightline rebuild`: runs (or abandons) a rebuild and prints its report.
pub async fn command(args: RebuildArgs, settings: Settings) -> anyhow::Result<()> {
    if args.abandon {
        match super::abandon(&settings).await? {
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
        report = super::run(&settings, options, progress) => {
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
