//! The write database's pool: connecting (with a one-line error that names
//! the command starting PostgreSQL) and migrating. Every command that touches
//! the database — `serve`, `migrate`, `rebuild`, `outbox`, the benchmark —
//! opens it here.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{Settings, redact_in};

/// Opens the pool and applies pending migrations (every command that touches
/// the database runs this first; sqlx serialises concurrent migrators).
pub async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<PgPool> {
    let db = connect_database(settings).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Applies the pending migrations (also the benchmark's, for its floor
/// database).
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(db)
        .await
        .context("Failed to migrate the database")
}

/// Opens the pool, failing in one line that names the service and the
/// command that starts it.
pub async fn connect_database(settings: &Settings) -> anyhow::Result<PgPool> {
    connect_pool(settings, settings.database_max_connections).await
}

/// Opens a pool of at most `max_connections` to the write database: the
/// web and the pipeline each have one, so neither can take all connections
/// from the other.
pub async fn connect_pool(settings: &Settings, max_connections: u32) -> anyhow::Result<PgPool> {
    // The parse error is not passed on: it may quote the URL, password and all.
    let options: PgConnectOptions = settings
        .database_url
        .parse()
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a valid postgres:// URL"))?;
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .map_err(|e| {
            let e = redact_in(&e.to_string(), &settings.database_url);
            anyhow::anyhow!(
                "PostgreSQL is not reachable at {host}:{port} ({e}) — start it with `scripts/services start postgres`"
            )
        })
}
