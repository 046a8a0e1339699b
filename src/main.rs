//! The `sightline` command: parses the command line and calls into the
//! library (`startup` for `serve`, `operations` for the operator's commands).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sightline::config::Settings;
use sightline::db::connect_and_migrate;
use sightline::operations::journey;
use sightline::operations::outbox::{self, OutboxCommand};
use sightline::operations::prune;
use sightline::operations::rebuild::{self, RebuildArgs};
use sightline::startup::Application;
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
    /// Print one order's journey through the pipeline: when it was
    /// committed, claimed, handed to the bus, delivered to a projector,
    /// indexed, made searchable, noticed and first sent (or where it
    /// stopped), any user's order. Journeys go with the notice log's
    /// retention (`prune`).
    Journey {
        /// The order's id.
        order_id: uuid::Uuid,
        /// An earlier version than the latest.
        #[arg(long)]
        version: Option<i32>,
        /// Print the JSON document `GET /api/orders/{id}/journey` answers.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Print the OpenAPI 3.1 document of the JSON API (the one served at
    /// `/api/openapi.json`), e.g. to generate a client without a server.
    Openapi,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    // Only a server exports traces (named after its roles); the operator's
    // commands only log.
    let traces_as = match &cli.command {
        Command::Serve(settings) => Some(telemetry::traces::service_name(&settings.roles)),
        _ => None,
    };
    telemetry::init_tracing(traces_as.as_deref());
    let result = match cli.command {
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => migrate(settings).await,
        Command::Rebuild { options, settings } => rebuild::command(options, settings).await,
        Command::Outbox { command, settings } => outbox::command(command, settings).await,
        Command::Prune {
            yes,
            batch_size,
            settings,
        } => prune::command(yes, batch_size, settings).await,
        Command::Journey {
            order_id,
            version,
            json,
            settings,
        } => journey::command(order_id, version, json, settings).await,
        Command::Openapi => {
            print!("{}", sightline::web::openapi::json());
            Ok(())
        }
    };
    // The spans still buffered (a no-op when none are exported).
    tokio::task::spawn_blocking(telemetry::traces::shutdown)
        .await
        .ok();
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
