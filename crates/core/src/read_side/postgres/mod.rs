//! The same-database read model (`READ_STORE=postgres`): the query handlers'
//! own shape over the write tables — the `order_list` view and the
//! `order_search` words (a `tsvector` kept by a trigger, GIN-indexed), and
//! the per-user counters in `user_summaries` — read with queries built for
//! listing and searching, never through the write side's code. Answers come
//! in the read store's types ([`OrderDocument`], [`SummaryDocument`],
//! [`SearchPage`]), so the handlers do not know which mode they are in.
//!
//! What it shows is what has committed: in this mode the order's notice and
//! summary are recorded in the order's own transaction (see
//! `projector::same_database`), so a notice never runs ahead of this shape.

pub mod search_words;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::order::{Item, OrderStatus};
use crate::read_side::document::{OrderDocument, SummaryDocument};
use crate::read_side::index::{SearchPage, SortKey};
use crate::read_side::model::{ReadError, ReadQueries};

#[derive(Clone)]
pub struct PgReadModel {
    db: PgPool,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    username: String,
    note: Option<String>,
    total_cents: i64,
    currency: String,
    placed_at: DateTime<Utc>,
    status: String,
    cancelled_at: Option<DateTime<Utc>>,
    version: i32,
    items: Json<Vec<Item>>,
}

impl From<OrderRow> for OrderDocument {
    fn from(row: OrderRow) -> Self {
        let items = row.items.0;
        OrderDocument {
            id: row.id,
            user_id: row.user_id,
            username: row.username,
            skus: items.iter().map(|i| i.sku.clone()).collect(),
            items,
            total_cents: row.total_cents,
            currency: row.currency,
            note: row.note,
            placed_at: row.placed_at,
            // The column only ever holds what `OrderStatus::as_str` wrote.
            status: OrderStatus::parse(&row.status).unwrap_or(OrderStatus::Placed),
            cancelled_at: row.cancelled_at,
            version: row.version.into(),
        }
    }
}

const COLUMNS: &str = "id, user_id, username, note, total_cents, currency, placed_at, status,
                       cancelled_at, version, items";

/// `q` as a PostgreSQL text query: every word of it (split as the indexed
/// words are), each as a prefix — `wid` finds `widget` — all required.
/// `None` when `q` has no word. Only letters and digits reach `to_tsquery`,
/// so no input can be a query operator.
pub fn prefix_query(q: &str) -> Option<String> {
    let words: Vec<String> = crate::read_side::read_your_writes::query_words(q)
        .into_iter()
        .map(|w| format!("{w}:*"))
        .collect();
    (!words.is_empty()).then(|| words.join(" & "))
}

/// The cursor's millisecond as the view's `sort_at` (UTC, no zone), held
/// to years 1 to 9999 so PostgreSQL can compare it (any order is inside).
fn sort_at(key: &SortKey) -> NaiveDateTime {
    const FIRST_MILLI: i64 = -62_135_596_800_000;
    const LAST_MILLI: i64 = 253_402_300_799_999;
    DateTime::from_timestamp_millis(key.placed_at_millis.clamp(FIRST_MILLI, LAST_MILLI))
        .expect("clamped into chrono's range")
        .naive_utc()
}

impl PgReadModel {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

impl ReadQueries for PgReadModel {
    /// A page of one user's orders, newest first (by the millisecond, then
    /// the id, as the Elasticsearch store sorts), optionally filtered by the
    /// words of `q` over skus and note.
    // What a user typed stays out of the logs: only its length.
    #[tracing::instrument(skip(self, q), fields(q_len = q.map_or(0, str::len)))]
    fn search<'a>(
        &'a self,
        user_id: Uuid,
        q: Option<&'a str>,
        limit: usize,
        after: Option<&'a SortKey>,
    ) -> BoxFuture<'a, Result<SearchPage, ReadError>> {
        Box::pin(async move {
            let query = q.and_then(prefix_query);
            let after_at = after.map(sort_at);
            // A cursor's id is checked when it is decoded.
            let after_id = after.map(|a| a.id.parse::<Uuid>().unwrap_or(Uuid::max()));
            let rows: Vec<OrderRow> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM order_list
                 WHERE user_id = $1
                   AND ($2::text IS NULL OR document @@ to_tsquery('simple', $2))
                   AND ($3::timestamp IS NULL OR (sort_at, id) < ($3, $4))
                 ORDER BY sort_at DESC, id DESC
                 LIMIT $5"
            ))
            .bind(user_id)
            .bind(query)
            .bind(after_at)
            .bind(after_id.unwrap_or(Uuid::nil()))
            .bind(limit as i64 + 1)
            .fetch_all(&self.db)
            .await?;
            let mut orders: Vec<OrderDocument> = rows.into_iter().map(Into::into).collect();
            let next = if orders.len() > limit {
                orders.truncate(limit);
                orders.last().map(|o| SortKey {
                    placed_at_millis: o.placed_at.timestamp_millis(),
                    id: o.id.to_string(),
                })
            } else {
                None
            };
            Ok(SearchPage { orders, next })
        })
    }

    /// One order of one user.
    fn find(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> BoxFuture<'_, Result<Option<OrderDocument>, ReadError>> {
        Box::pin(async move {
            let row: Option<OrderRow> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM order_list WHERE id = $1 AND user_id = $2"
            ))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.db)
            .await?;
            Ok(row.map(Into::into))
        })
    }

    /// One user's counters, if anything is counted yet.
    fn summary(&self, user_id: Uuid) -> BoxFuture<'_, Result<Option<SummaryDocument>, ReadError>> {
        Box::pin(async move {
            type Row = (
                i64,
                i64,
                i64,
                Json<BTreeMap<String, i64>>,
                Option<DateTime<Utc>>,
            );
            let row: Option<Row> = sqlx::query_as(
                "SELECT revision, orders_placed, orders_cancelled, spent_cents, last_order_at
                 FROM user_summaries WHERE user_id = $1 AND revision > 0",
            )
            .bind(user_id)
            .fetch_optional(&self.db)
            .await?;
            Ok(row.map(
                |(revision, orders_placed, orders_cancelled, spent_cents, last_order_at)| {
                    SummaryDocument {
                        user_id,
                        orders_placed,
                        orders_cancelled,
                        spent_cents: spent_cents.0,
                        last_order_at,
                        revision,
                    }
                },
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_a_required_prefix_and_nothing_else_gets_through() {
        assert_eq!(prefix_query("wid").as_deref(), Some("wid:*"));
        assert_eq!(
            prefix_query("SKU-42 Blue").as_deref(),
            Some("sku:* & 42:* & blue:*")
        );
        assert_eq!(
            prefix_query("a & !b | (c:*)").as_deref(),
            Some("a:* & b:* & c:*")
        );
        assert_eq!(prefix_query(" -'& "), None);
    }
}
