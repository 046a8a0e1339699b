//! Where the relay stands, for the lag monitor (each second) and for
//! `sightline outbox status`: the backlog, its oldest event's age, dead
//! letters.

use sqlx::PgPool;

/// The backlog in one cheap query, for the lag monitor's every sample:
/// pending events, the oldest pending one's age in seconds (0 with none),
/// and parked ones. ([`status`] adds a count of every published event,
/// which is too dear to take each second.)
pub async fn backlog(db: &PgPool) -> sqlx::Result<(i64, f64, i64)> {
    sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked),
           coalesce((SELECT extract(epoch FROM clock_timestamp() - min(created_at))::float8
                       FROM outbox WHERE published_at IS NULL AND NOT parked), 0),
           (SELECT count(*) FROM dead_letters)",
    )
    .fetch_one(db)
    .await
}

/// Where the relay stands: its backlog and its dead letters.
#[derive(Debug, serde::Serialize)]
pub struct OutboxStatus {
    pub backlog: i64,
    pub oldest_pending_age_seconds: Option<f64>,
    pub dead_letters: i64,
    pub published: i64,
}

pub async fn status(db: &sqlx::PgPool) -> sqlx::Result<OutboxStatus> {
    let (backlog, oldest, dead, published): (i64, Option<f64>, i64, i64) = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked),
           (SELECT extract(epoch FROM now() - min(created_at))::float8
              FROM outbox WHERE published_at IS NULL AND NOT parked),
           (SELECT count(*) FROM dead_letters),
           (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL)",
    )
    .fetch_one(db)
    .await?;
    Ok(OutboxStatus {
        backlog,
        oldest_pending_age_seconds: oldest,
        dead_letters: dead,
        published,
    })
}
