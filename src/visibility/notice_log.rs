//! The durable notice log: one row per order version that search can see.
//!
//! Its `seq` is the SSE cursor. Writers hold an advisory lock from before the
//! insert until commit, so sequence order is commit order: a reader that has
//! seen `seq = N` has seen every notice below N, whatever commits concurrently.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::locks;

/// Every instance's hub listens here; a recording commit wakes them all.
pub const CHANNEL: &str = "sightline_notices";

/// `order-visible`: search shows this version. `order-failed`: its event
/// was dead-lettered, so it will not show until retried.
pub const ORDER_VISIBLE: &str = "order-visible";
pub const ORDER_FAILED: &str = "order-failed";

#[derive(sqlx::FromRow, Serialize, Clone, Debug, PartialEq)]
pub struct Notice {
    pub seq: i64,
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub order_version: i32,
    pub kind: String,
    /// The order's status at this version (`placed`, `cancelled`).
    pub status: String,
    pub error: Option<String>,
    /// When the notice was recorded.
    pub visible_at: DateTime<Utc>,
    /// When the event behind it was committed (its outbox row's `created_at`).
    /// Only the hub's read ([`after`]) fills it in, for the commit → sent
    /// histogram; `None` elsewhere and once the event is pruned.
    #[sqlx(default)]
    #[serde(skip)]
    pub committed_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct NewNotice {
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub order_version: i32,
    pub kind: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
}

const COLUMNS: &str = "seq, user_id, order_id, order_version, kind, status, error, visible_at";

/// Records notices for order versions that search now shows. Recording the
/// same version again does nothing, so redelivery never sends a notice twice;
/// nor does recording a version older than one already noticed (relay
/// batches run concurrently, so an older version can finish last: its notice
/// would describe an order search no longer shows). Returns the notices newly
/// recorded.
#[tracing::instrument(skip_all, fields(notices = notices.len()))]
pub async fn record(db: &PgPool, notices: &[NewNotice]) -> sqlx::Result<Vec<Notice>> {
    if notices.is_empty() {
        return Ok(vec![]);
    }
    let users: Vec<Uuid> = notices.iter().map(|n| n.user_id).collect();
    let orders: Vec<Uuid> = notices.iter().map(|n| n.order_id).collect();
    let versions: Vec<i32> = notices.iter().map(|n| n.order_version).collect();
    let kinds: Vec<&str> = notices.iter().map(|n| n.kind).collect();
    let statuses: Vec<&str> = notices.iter().map(|n| n.status).collect();
    let errors: Vec<Option<String>> = notices.iter().map(|n| n.error.clone()).collect();
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(locks::NOTICE_RECORD)
        .execute(&mut *tx)
        .await?;
    let recorded: Vec<Notice> = sqlx::query_as(&format!(
        "INSERT INTO notices (user_id, order_id, order_version, kind, status, error)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[])
                 AS n (user_id, order_id, order_version, kind, status, error)
         WHERE NOT EXISTS (SELECT 1 FROM notices later
                            WHERE later.order_id = n.order_id
                              AND later.order_version > n.order_version)
         ON CONFLICT (order_id, order_version, kind) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(&users)
    .bind(&orders)
    .bind(&versions)
    .bind(&kinds)
    .bind(&statuses)
    .bind(&errors)
    .fetch_all(&mut *tx)
    .await?;
    if !recorded.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(recorded)
}

/// Every user's notices after `seq`, in order (the hub's catch-up), with
/// their events' commit times.
pub async fn after(db: &PgPool, seq: i64, limit: i64) -> sqlx::Result<Vec<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS},
                (SELECT o.created_at FROM outbox o
                  WHERE o.aggregate_id = notices.order_id
                    AND o.aggregate_version = notices.order_version
                  ORDER BY o.id LIMIT 1) AS committed_at
         FROM notices WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One user's notices with `after < seq <= up_to`, in order (SSE replay).
pub async fn for_user_between(
    db: &PgPool,
    user_id: Uuid,
    after: i64,
    up_to: i64,
) -> sqlx::Result<Vec<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notices WHERE user_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
    ))
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(db)
    .await
}

/// The newest cursor.
pub async fn head(db: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM notices")
        .fetch_one(db)
        .await
}

/// The latest notice of an order, if any.
pub async fn latest_for_order(db: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notices WHERE order_id = $1 ORDER BY seq DESC LIMIT 1"
    ))
    .bind(order_id)
    .fetch_optional(db)
    .await
}

/// The latest `order-visible` notice of an order, if any.
pub async fn latest_visible(db: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notices WHERE order_id = $1 AND kind = '{ORDER_VISIBLE}'
         ORDER BY seq DESC LIMIT 1"
    ))
    .bind(order_id)
    .fetch_optional(db)
    .await
}
