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
    /// Inspect the outbox: backlog, dead letters, retries.
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    telemetry::init_tracing();
    let result = match Cli::parse().command {
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => migrate(settings).await,
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
    let db = connect_database(&settings).await?;
    sqlx::migrate!("./migrations").run(&db).await?;
    println!("migrations applied");
    Ok(())
}

async fn outbox(command: OutboxCommand, settings: Settings) -> anyhow::Result<()> {
    let db = connect_database(&settings).await?;
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
    }
    Ok(())
}
