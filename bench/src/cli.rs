//! The command line: the run's options (`--quick`, `--only`, …), the hidden
//! sub-modes the capacity test starts as child processes, and the parts a
//! run is made of.

use clap::{Parser, Subcommand, ValueEnum};

use crate::capacity;

/// Sightline's end-to-end benchmark: floor, visibility latency, seed settings
/// vs tuned, maximum sustained rate, SSE capacity.
#[derive(Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    /// A shorter run of the same: 10 s load steps, 2,000 SSE streams.
    #[arg(long)]
    pub quick: bool,
    /// Seconds per load step (default 60, or 10 with --quick).
    #[arg(long, value_name = "SECS")]
    pub step_secs: Option<u64>,
    /// Idle SSE streams to open (default 18,000, or 2,000 with --quick).
    #[arg(long, value_name = "N")]
    pub sse_streams: Option<usize>,
    /// Run only these parts, for iterating on one of them: the table is
    /// printed, latest.json is left alone.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// A setting every server of the run gets over the scenario's own, e.g.
    /// `--server-env RELAY_CONCURRENCY=1` (repeatable), for trying a knob.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,
    /// The maximum-rate search's steps instead of the default ladder, e.g.
    /// `--only max --rates 1400` to offer one rate past capacity.
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub rates: Vec<u32>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Subcommand)]
pub enum Mode {
    /// Internal: hold idle SSE streams for the capacity test.
    #[command(hide = true)]
    SseClients(capacity::ClientArgs),
    /// Internal: a bare axum SSE server, for the capacity test's floor.
    #[command(hide = true)]
    SseFloorServer,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Floor,
    Visibility,
    Seed,
    Max,
    Sse,
    /// The in-process bus beside NATS JetStream with one projector process
    /// and with two (needs `scripts/services start nats`): 200/s and the
    /// maximum sustained rate of each, the stages, CPU and disk writes per
    /// order; and the disk's fsync latency.
    Bus,
    /// Notices fanned out to 2 and to 8 web instances at 200/s: CPU per
    /// instance.
    Fanout,
    /// The cost of recording journeys: the in-process bus at 200/s with
    /// `RECORD_JOURNEYS` on and off, alternately: CPU per order of the
    /// server, PostgreSQL and Elasticsearch.
    Journeys,
    Replay,
}
