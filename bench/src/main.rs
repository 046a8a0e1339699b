//! `bench`: Sightline's end-to-end benchmark (run it with `scripts/bench`).
//!
//! Everything is measured in one run against the real PostgreSQL and
//! Elasticsearch, with the release `sightline serve` binary as a child
//! process per scenario (fresh database and index prefix each). The machine
//! is shared and noisy, so only ratios within one run mean much: the floor
//! (bare PostgreSQL commit + bare searchable index call + bare SSE push) is
//! measured in the same run as everything compared with it.
//!
//! Prints a table and writes `target/bench/latest.json` (and the table to
//! `target/bench/latest.txt`). See docs/BENCHMARKS.md for what each number
//! means and the targets.
//!
//! This file only parses the command line and dispatches: the arguments are
//! in `cli`, the run's steps in `run`, what it measured in `results`, and
//! the table and `latest.json` in `report`.

mod bare_write;
mod bus;
mod capacity;
mod cli;
mod floor;
mod load;
mod replay;
mod report;
mod results;
mod run;
mod server;
mod sse;
mod statements;
mod stats;
mod waits;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Mode};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(Mode::SseClients(args)) => capacity::clients(args).await,
        Some(Mode::SseFloorServer) => capacity::floor_server().await,
        None => run::run(&cli).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
