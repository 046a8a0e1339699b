//! The write database's pool: connecting (with a one-line error that names
//! the command starting PostgreSQL) and migrating. Every command that touches
//! the database — `serve`, `migrate`, `rebuild`, `outbox`, the benchmark —
//! opens it here.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::{ReadStoreKind, Settings, redact_in};

/// The session setting an instance in the Elasticsearch mode opens its
/// connections with: the same-database search words' trigger skips their
/// writes, since nothing in that mode reads the words (migration
/// `20270101000002`; `read_side::postgres::search_words` adds the missing
/// ones when an instance starts in the same-database mode).
pub const ORDER_SEARCH_OFF: (&str, &str) = ("sightline.order_search", "off");

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Opens the pool and applies pending migrations (every command that touches
/// the database runs this first; sqlx serialises concurrent migrators).
pub async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<PgPool> {
    let db = connect_database(settings).await?;
    migrate(&db).await?;
    Ok(db)
}

/// The web's pool, after applying pending migrations on a connection of
/// their own: a migration may run longer than the web's statement timeout
/// (`WEB_STATEMENT_TIMEOUT_MS`) allows any request's statement.
pub async fn connect_web_and_migrate(settings: &Settings) -> anyhow::Result<PgPool> {
    let migrator = connect_pool(settings, 1).await?;
    migrate(&migrator).await?;
    migrator.close().await;
    let timeout = Duration::from_millis(settings.web_statement_timeout_ms);
    open_pool(
        settings,
        settings.database_max_connections,
        Some(timeout).filter(|t| !t.is_zero()),
    )
    .await
}

/// Applies the pending migrations (also the benchmark's, for its floor
/// database).
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../../migrations")
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
    open_pool(settings, max_connections, None).await
}

async fn open_pool(
    settings: &Settings,
    max_connections: u32,
    statement_timeout: Option<Duration>,
) -> anyhow::Result<PgPool> {
    // The parse error is not passed on: it may quote the URL, password and all.
    let mut options: PgConnectOptions = settings
        .database_url
        .parse()
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a valid postgres:// URL"))?;
    if let Some(timeout) = statement_timeout {
        // Sent in the start-up packet: no round trip per connection.
        options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
    }
    if settings.read_store == ReadStoreKind::Elasticsearch {
        // Nothing in this mode reads the same-database search words: their
        // trigger skips this instance's writes (see `search_words`).
        options = options.options([ORDER_SEARCH_OFF]);
    }
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        // sqlx pings every connection it returns to the pool (on release),
        // and by default again on every acquire: two round trips around
        // each query. Only a connection that sat idle is likely to have died
        // since its release ping (a PostgreSQL restart, an idle reaper), so
        // only that one is pinged before use. Under load this is most of the
        // pings gone, and an acquire that times out can no longer close a
        // healthy connection mid-ping. A connection used less than a second
        // before a restart meets it on its next query instead: that request
        // answers 503 `unavailable` (`web::error::is_connection_error`) and the
        // release ping drops the connection.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| {
            let e = redact_in(&e.to_string(), &settings.database_url);
            anyhow::anyhow!(
                "PostgreSQL is not reachable at {host}:{port} ({e}) — start it with `scripts/services start postgres`"
            )
        })
}
