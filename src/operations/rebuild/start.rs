//! Starting a rebuild or picking one up: the maintenance lock (one rebuild
//! at a time, no pruning meanwhile), what became of an unfinished rebuild,
//! and a new rebuild's row and `_v{N+1}` indices.

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, PgPool};

use super::log;
use crate::locks;
use crate::read_side::index::SearchIndex;

/// Takes the maintenance lock (session-level, on a connection of its own):
/// one rebuild at a time, and no pruning while one runs.
pub(super) async fn maintenance_guard(db: &PgPool) -> anyhow::Result<PgConnection> {
    let mut guard = db.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(locks::MAINTENANCE)
        .fetch_one(&mut guard)
        .await?;
    if !locked {
        bail!("another rebuild (or an outbox prune) is running against this database");
    }
    Ok(guard)
}

pub(super) async fn release(mut guard: PgConnection) {
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(locks::MAINTENANCE)
        .execute(&mut guard)
        .await;
    let _ = guard.close().await;
}

pub(super) enum Unfinished {
    Resume,
    /// Interrupted between the swap and recording it.
    AlreadySwapped,
    /// Its indices are gone: nothing to resume into.
    Abandoned,
}

pub(super) async fn check_unfinished(
    db: &PgPool,
    store: &SearchIndex,
    row: &log::RebuildRow,
) -> anyhow::Result<Unfinished> {
    if store.alias_target(store.alias()).await?.as_deref() == Some(row.orders_index.as_str()) {
        log::finish(db, row.id, "swapped").await?;
        return Ok(Unfinished::AlreadySwapped);
    }
    if !store.index_exists(&row.orders_index).await?
        || !store.index_exists(&row.summaries_index).await?
    {
        tracing::warn!(index = %row.orders_index, "the interrupted rebuild's indices are gone; starting over");
        log::finish(db, row.id, "abandoned").await?;
        return Ok(Unfinished::Abandoned);
    }
    Ok(Unfinished::Resume)
}

/// Records a new rebuild into the next free `_v{N}` and creates its indices.
/// The row comes first: a crash before the indices exist just abandons it,
/// while indices without a row would be left over.
pub(super) async fn begin(db: &PgPool, store: &SearchIndex) -> anyhow::Result<log::RebuildRow> {
    let mut names = Vec::new();
    for alias in [store.alias(), store.summaries_alias()] {
        let live = store
            .alias_target(alias)
            .await?
            .with_context(|| format!("alias {alias} does not exist"))?;
        let next = next_version(
            alias,
            &live,
            &store.indices_matching(&format!("{alias}_v*")).await?,
        );
        names.push((live, format!("{alias}_v{next}")));
    }
    let row = log::start(db, &names[0], &names[1])
        .await
        .context("Failed to record the rebuild")?;
    for (index, mappings) in [
        (&row.orders_index, store.order_mappings()),
        (&row.summaries_index, store.summary_mappings()),
    ] {
        if !store.create_bare_index(index, mappings).await? {
            bail!("index {index} exists already, though no rebuild is using it; delete it first");
        }
    }
    Ok(row)
}

/// One more than the highest `<alias>_v<N>` in use (the live one included).
fn next_version(alias: &str, live: &str, existing: &[String]) -> u64 {
    let prefix = format!("{alias}_v");
    existing
        .iter()
        .map(String::as_str)
        .chain([live])
        .filter_map(|name| name.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_is_past_every_existing_one() {
        let existing = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(next_version("p-orders", "p-orders_v1", &existing(&[])), 2);
        assert_eq!(
            next_version(
                "p-orders",
                "p-orders_v2",
                &existing(&["p-orders_v1", "p-orders_v2", "p-orders_v7", "p-orders_vx"])
            ),
            8
        );
        assert_eq!(next_version("p-orders", "elsewhere", &existing(&[])), 1);
    }
}
