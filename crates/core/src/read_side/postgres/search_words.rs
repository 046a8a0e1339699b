//! The search words of orders written while nothing kept them.
//!
//! The `order_search` trigger does nothing for an instance in the
//! Elasticsearch mode (its connections say `sightline.order_search = off`:
//! `db::ORDER_SEARCH_OFF`), since nothing there reads the words. So an instance starting
//! in the same-database mode first gives every order without words its
//! words — the orders the other mode wrote — before it notices anything or
//! serves a search: a notice never announces an order `q` cannot find.

use sqlx::PgPool;

use uuid::Uuid;

/// Orders looked at per statement: each statement stays short (the web
/// pool's statement timeout applies) however many orders there are.
const BATCH: i64 = 5_000;

/// Adds the words of every order that has none, walking the orders by id a
/// batch at a time; returns how many it added.
pub async fn fill_missing(db: &PgPool) -> sqlx::Result<u64> {
    let mut after = Uuid::nil();
    let mut added = 0;
    loop {
        let (count, last): (i64, Option<Uuid>) = sqlx::query_as(
            "WITH batch AS (
                 SELECT id, note FROM orders WHERE id > $1 ORDER BY id LIMIT $2
             ), added AS (
                 INSERT INTO order_search (order_id, document)
                 SELECT b.id, order_search_words(
                            (SELECT string_agg(i.sku, ' ' ORDER BY i.position) FROM order_items i
                              WHERE i.order_id = b.id),
                            b.note)
                 FROM batch b
                 WHERE NOT EXISTS (SELECT 1 FROM order_search s WHERE s.order_id = b.id)
                 ON CONFLICT (order_id) DO NOTHING
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM added), (SELECT id FROM batch ORDER BY id DESC LIMIT 1)",
        )
        .bind(after)
        .bind(BATCH)
        .fetch_one(db)
        .await?;
        added += count as u64;
        match last {
            Some(last) => after = last,
            None => return Ok(added),
        }
    }
}
