use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sightline::config::Settings;
use sightline::startup::{Application, connect_database};
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    telemetry::init_tracing();
    let result = match Cli::parse().command {
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => migrate(settings).await,
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
    let db = connect_database(&settings).await?;
    sqlx::migrate!("./migrations").run(&db).await?;
    println!("migrations applied");
    Ok(())
}
