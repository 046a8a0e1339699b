//! The counter-style read model: per-user summaries.
//!
//! Counters are where duplicate delivery does damage, so every event is
//! counted through an inbox keyed by event id, in the same transaction as the
//! counters: a redelivered event finds itself in the inbox and counts nothing.
//! The folds commute, so delivery order does not matter either.
//!
//! Retention of the inbox ([`prune_settled_inbox`]). Why pruning it cannot count an event twice: the relay only delivers
//! unpublished events, and it marks a batch published in the very transaction
//! that holds the claimed rows, so an event published (or already pruned from
//! the outbox, which only prunes published events) is never delivered again.
//! Only those inbox rows go, and only once both the inbox row and the
//! publication are older than the bound — an operator putting an event back
//! by hand within the bound is still caught.

//! (It reads the outbox's `published_at` and `parked` for that, in the
//! same statement: the outbox owns those columns.)

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::outbox::events::OrderEvent;
use crate::read_side::document::SummaryDocument;

/// Folds one event into a summary. Pure, and commutative across events.
pub fn fold(summary: &mut SummaryDocument, event: &OrderEvent) {
    let order = event.order();
    match event {
        OrderEvent::Placed(_) => {
            summary.orders_placed += 1;
            *summary
                .spent_cents
                .entry(order.currency.clone())
                .or_default() += order.total_cents;
            summary.last_order_at = summary.last_order_at.max(Some(order.placed_at));
        }
        OrderEvent::Cancelled(_) => {
            summary.orders_cancelled += 1;
            *summary
                .spent_cents
                .entry(order.currency.clone())
                .or_default() -= order.total_cents;
        }
    }
    summary.revision += 1;
}

/// Folds the events the inbox saw for the first time into their users'
/// summaries; returns the users whose summary changed. Events already in the
/// inbox (redeliveries) count nothing.
pub fn fold_fresh(
    summaries: &mut HashMap<Uuid, SummaryDocument>,
    fresh: &std::collections::HashSet<Uuid>,
    events: &[(Uuid, Uuid, &OrderEvent)],
) -> Vec<Uuid> {
    let mut uncounted = fresh.clone();
    let mut changed = Vec::new();
    for (event_id, user_id, event) in events {
        // Removing it means a batch carrying the same event twice counts it once.
        if !uncounted.remove(event_id) {
            continue;
        }
        let summary = summaries
            .entry(*user_id)
            .or_insert_with(|| SummaryDocument {
                user_id: *user_id,
                ..Default::default()
            });
        fold(summary, event);
        changed.push(*user_id);
    }
    changed.sort();
    changed.dedup();
    changed
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    user_id: Uuid,
    revision: i64,
    orders_placed: i64,
    orders_cancelled: i64,
    spent_cents: sqlx::types::Json<BTreeMap<String, i64>>,
    last_order_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<SummaryRow> for SummaryDocument {
    fn from(row: SummaryRow) -> Self {
        SummaryDocument {
            user_id: row.user_id,
            orders_placed: row.orders_placed,
            orders_cancelled: row.orders_cancelled,
            spent_cents: row.spent_cents.0,
            last_order_at: row.last_order_at,
            revision: row.revision,
        }
    }
}

/// A page of stored summaries in user id order, after `after` (all users, or
/// only `users`), skipping users with nothing counted yet. The rebuild copies
/// them into a fresh summaries index with this.
pub async fn page(
    db: &PgPool,
    after: Uuid,
    limit: i64,
    users: Option<&[Uuid]>,
) -> sqlx::Result<Vec<SummaryDocument>> {
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT user_id, revision, orders_placed, orders_cancelled, spent_cents, last_order_at
         FROM user_summaries
         WHERE revision > 0 AND user_id > $1 AND ($3::uuid[] IS NULL OR user_id = ANY($3))
         ORDER BY user_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .bind(users)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Counts the events not counted before and returns the current summary of
/// every user the batch touches — also when nothing new was counted, so a
/// summary lost between this commit and the read store write is written again.
pub async fn count(
    db: &PgPool,
    events: &[(Uuid, Uuid, &OrderEvent)],
) -> sqlx::Result<Vec<SummaryDocument>> {
    if events.is_empty() {
        return Ok(vec![]);
    }
    let mut tx = db.begin().await?;
    let summaries = count_in(&mut tx, events).await?;
    tx.commit().await?;
    Ok(summaries)
}

/// [`count`] inside the caller's transaction (the same-database mode counts
/// an order's event in the order's own transaction).
pub async fn count_in(
    tx: &mut sqlx::PgConnection,
    events: &[(Uuid, Uuid, &OrderEvent)],
) -> sqlx::Result<Vec<SummaryDocument>> {
    if events.is_empty() {
        return Ok(vec![]);
    }
    let event_ids: Vec<Uuid> = events.iter().map(|(id, _, _)| *id).collect();
    let mut user_ids: Vec<Uuid> = events.iter().map(|(_, user, _)| *user).collect();
    user_ids.sort();
    user_ids.dedup();

    // One round trip for both inserts (the inbox's and a missing summary
    // row's); the lock below is a statement of its own, so it sees the row.
    let fresh: Vec<Uuid> = sqlx::query_scalar(
        "WITH ensured AS (
             INSERT INTO user_summaries (user_id, revision) SELECT *, 0 FROM UNNEST($2::uuid[])
             ON CONFLICT DO NOTHING
         )
         INSERT INTO projector_inbox (event_id) SELECT * FROM UNNEST($1::uuid[])
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(&event_ids)
    .bind(&user_ids)
    .fetch_all(&mut *tx)
    .await?;
    // Sorted ids: concurrent projectors lock rows in the same order.
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT user_id, revision, orders_placed, orders_cancelled, spent_cents, last_order_at
         FROM user_summaries WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
    )
    .bind(&user_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut summaries: HashMap<Uuid, SummaryDocument> =
        rows.into_iter().map(|r| (r.user_id, r.into())).collect();

    let fresh: std::collections::HashSet<Uuid> = fresh.into_iter().collect();
    let changed = fold_fresh(&mut summaries, &fresh, events);
    if !changed.is_empty() {
        // One statement for every changed user: a batch of hundreds of users
        // paid a round trip each here (most of the batch's "count" stage).
        let rows: Vec<&SummaryDocument> = changed.iter().map(|u| &summaries[u]).collect();
        sqlx::query(
            "UPDATE user_summaries s
             SET revision = u.revision, orders_placed = u.orders_placed,
                 orders_cancelled = u.orders_cancelled, spent_cents = u.spent_cents,
                 last_order_at = u.last_order_at
             FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::jsonb[],
                         $6::timestamptz[])
                  AS u (user_id, revision, orders_placed, orders_cancelled, spent_cents,
                        last_order_at)
             WHERE s.user_id = u.user_id",
        )
        .bind(rows.iter().map(|s| s.user_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.revision).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.orders_placed).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.orders_cancelled).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|s| sqlx::types::Json(&s.spent_cents))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|s| s.last_order_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    // Users with nothing counted yet (revision 0) have nothing to show.
    Ok(summaries.into_values().filter(|s| s.revision > 0).collect())
}

/// Inbox rows of events that can never be delivered again: applied before
/// `cutoff`, and their outbox row published (not parked) before it, or gone.
const SETTLED: &str = "i.applied_at < $1
    AND (o.id IS NULL OR (o.published_at < $1 AND NOT o.parked))";

/// How many inbox rows [`prune_settled_inbox`] would delete.
pub async fn count_settled_inbox(db: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM projector_inbox i
         LEFT JOIN outbox o ON o.event_id = i.event_id WHERE {SETTLED}"
    ))
    .bind(cutoff)
    .fetch_one(db)
    .await
}

/// Deletes the inbox's memory of events that cannot come again, `batch` per
/// statement. Returns how many went.
pub async fn prune_settled_inbox(
    db: &PgPool,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> sqlx::Result<i64> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let deleted = sqlx::query(&format!(
            "DELETE FROM projector_inbox WHERE event_id IN (
               SELECT i.event_id FROM projector_inbox i
               LEFT JOIN outbox o ON o.event_id = i.event_id
               WHERE {SETTLED} LIMIT $2)"
        ))
        .bind(cutoff)
        .bind(batch)
        .execute(db)
        .await?
        .rows_affected() as i64;
        total += deleted;
        if deleted < batch {
            return Ok(total);
        }
    }
}
