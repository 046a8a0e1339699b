//! Read-your-writes: the one read path allowed to consult the write database.
//!
//! A read that presents a consistency token must include every order of the
//! user up to that token. Orders the read model cannot show yet are taken from
//! the write database and merged in; the response says so in `X-Read-Source`.
//! A page is the first `limit` orders of both stores together after the
//! cursor, so any number of pending orders spreads over pages like the rest.

use std::collections::HashSet;

use chrono::DateTime;
use uuid::Uuid;

use super::index::SortKey;
use crate::consistency::ConsistencyToken;
use crate::order::OrderView;
use crate::write_side::store;

pub const HEADER: &str = "x-read-source";

/// Which store answered a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSource {
    ReadModel,
    WriteDb,
    Merged,
}

impl ReadSource {
    /// Its name in the `X-Read-Source` header.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadSource::ReadModel => "read-model",
            ReadSource::WriteDb => "write-db",
            ReadSource::Merged => "merged",
        }
    }
}

/// How many write-side orders one query reads while paging through them.
const PENDING_CHUNK: i64 = 500;

/// The first `want` of the user's orders up to `token` whose notices are
/// not recorded yet, in the list's order, after `after` (a page's start) and
/// matching `q` — however many are pending: the write database is paged
/// through until they are found (or it runs out).
/// Must be asked BEFORE the read model: an order that turns visible in
/// between is then in the search result (and deduplicated), never in neither.
pub async fn pending_orders(
    db: &sqlx::PgPool,
    user_id: Uuid,
    token: ConsistencyToken,
    after: Option<&SortKey>,
    q: Option<&str>,
    want: usize,
) -> sqlx::Result<Vec<OrderView>> {
    // The list sorts by the millisecond (as Elasticsearch stores the time)
    // and then the id; the database by the exact time. Start with everything
    // up to the cursor's millisecond and compare exact keys here.
    let mut before = after.map(|start| {
        let millis = start.placed_at_millis.clamp(FIRST_MILLI, LAST_MILLI) + 1;
        let at = DateTime::from_timestamp_millis(millis).expect("clamped into chrono's range");
        (at, Uuid::nil())
    });
    let mut found: Vec<OrderView> = Vec::new();
    loop {
        let chunk =
            store::not_yet_visible(db, user_id, token.write_seq, before, PENDING_CHUNK).await?;
        let Some(last) = chunk.last() else { break };
        before = Some((last.placed_at, last.id));
        let exhausted = (chunk.len() as i64) < PENDING_CHUNK;
        let last_millis = last.placed_at.timestamp_millis();
        found.extend(
            chunk
                .into_iter()
                .map(|o| OrderView {
                    visible: false,
                    ..o.view()
                })
                .filter(|o| after.is_none_or(|start| sort_key(o) < *start))
                .filter(|o| matches_query(o, q)),
        );
        // Enough once `want` are found and the chunk has left the
        // millisecond of the last one needed (within a millisecond the
        // database's order and the list's may differ).
        let enough = want
            .checked_sub(1)
            .and_then(|i| found.get(i))
            .is_some_and(|o| o.placed_at.timestamp_millis() > last_millis);
        if exhausted || enough {
            break;
        }
    }
    found.sort_by_key(|o| std::cmp::Reverse(sort_key(o)));
    found.truncate(want);
    Ok(found)
}

/// Bounds of a cursor's time that PostgreSQL can compare: years 1 to 9999.
const FIRST_MILLI: i64 = -62_135_596_800_000;
const LAST_MILLI: i64 = 253_402_300_799_998;

/// One of the user's own orders, from the write database, for when search
/// cannot see it (yet): it is reported as not visible.
pub async fn own_order(
    db: &sqlx::PgPool,
    user_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<OrderView>> {
    Ok(store::load(db, id)
        .await?
        .filter(|o| o.user_id == user_id)
        .map(|o| OrderView {
            visible: false,
            ..o.view()
        }))
}

/// The user's newest orders from the write database, for a page to show
/// while search is unreachable: each is `visible` if its notice was recorded.
pub async fn newest_orders(
    db: &sqlx::PgPool,
    user_id: Uuid,
    limit: usize,
) -> sqlx::Result<Vec<OrderView>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(store::newest(db, user_id, limit)
        .await?
        .iter()
        .map(store::StoredOrder::view)
        .collect())
}

/// Whether the order exists and is this user's (the write side knows orders
/// search cannot see yet).
pub async fn owns_order(db: &sqlx::PgPool, user_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    store::owner_of(db, id)
        .await
        .map(|owner| owner == Some(user_id))
}

/// An order's version and status once none of its events is pending or
/// parked: every version was made searchable (the relay publishes an event
/// only after its notice is recorded). With `same_database`
/// (`READ_STORE=postgres`) every committed version is visible and nothing
/// publishes the outbox, so the current version is settled. The visibility
/// poll asks this only when the order has no notice left, i.e. its notices
/// were pruned.
pub async fn settled_version(
    db: &sqlx::PgPool,
    id: Uuid,
    same_database: bool,
) -> sqlx::Result<Option<(i32, String)>> {
    sqlx::query_as(
        "SELECT version, status FROM orders o
         WHERE o.id = $1
           AND ($2 OR NOT EXISTS (SELECT 1 FROM outbox
                                   WHERE aggregate_id = $1 AND (published_at IS NULL OR parked)))",
    )
    .bind(id)
    .bind(same_database)
    .fetch_optional(db)
    .await
}

pub fn sort_key(order: &OrderView) -> SortKey {
    SortKey {
        placed_at_millis: order.placed_at.timestamp_millis(),
        id: order.id.to_string(),
    }
}

/// One page of the merged list: the first `limit` orders after the page's
/// start of the read model's and the write side's together.
pub struct MergedPage {
    pub orders: Vec<OrderView>,
    /// Sort key of the last order when more follow.
    pub next: Option<SortKey>,
    pub source: ReadSource,
}

/// Merges pending orders into one page of read-model results. `found` is
/// the read model's first `limit` orders after the page's start (`more`:
/// whether it has further ones), `pending` the write side's first `limit + 1`
/// after the same start (see [`pending_orders`]). The page is the first
/// `limit` of both together — an order in both counts once, in its newer
/// version — so the next page starts after its last order and across all
/// pages each order shows up exactly once, whatever the number pending.
pub fn merge_into_page(
    found: Vec<OrderView>,
    more: bool,
    pending: Vec<OrderView>,
    limit: usize,
) -> MergedPage {
    let mut orders = found;
    let mut from_pending: HashSet<Uuid> = HashSet::new();
    for order in pending {
        match orders.iter_mut().find(|o| o.id == order.id) {
            // The write side is ahead (e.g. a cancellation not yet projected).
            Some(shown) if shown.version < order.version => {
                from_pending.insert(order.id);
                *shown = order;
            }
            Some(_) => {}
            None => {
                from_pending.insert(order.id);
                orders.push(order);
            }
        }
    }
    orders.sort_by_key(|o| std::cmp::Reverse(sort_key(o)));
    let more = more || orders.len() > limit;
    orders.truncate(limit);
    let source = if orders.iter().any(|o| from_pending.contains(&o.id)) {
        ReadSource::Merged
    } else {
        ReadSource::ReadModel
    };
    MergedPage {
        next: if more {
            orders.last().map(sort_key)
        } else {
            None
        },
        orders,
        source,
    }
}

/// The words a search looks for: runs of letters and digits, lower-cased
/// (as Elasticsearch's standard analyzer splits "WIDGET-42" into "widget",
/// "42"). At most 16, so a long query cannot fan out into many clauses.
/// Every read model's search takes its words from here.
pub fn query_words(q: &str) -> Vec<String> {
    words(q).take(16).collect()
}

/// The write-side stand-in for the index's search: every word of `q` begins
/// a word of the skus or the note (case-insensitive).
pub fn matches_query(order: &OrderView, q: Option<&str>) -> bool {
    let wanted = q.map(query_words).unwrap_or_default();
    if wanted.is_empty() {
        return true;
    }
    let mut haystack: Vec<String> = order.items.iter().flat_map(|i| words(&i.sku)).collect();
    if let Some(note) = &order.note {
        haystack.extend(words(note));
    }
    wanted
        .iter()
        .all(|w| haystack.iter().any(|h| h.starts_with(w.as_str())))
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Item;
    use chrono::{TimeZone, Utc};

    fn order(n: u128, millis: i64, sku: &str) -> OrderView {
        OrderView {
            id: Uuid::from_u128(n),
            username: "u".into(),
            items: vec![Item {
                sku: sku.into(),
                quantity: 1,
                unit_price_cents: 1,
            }],
            total_cents: 1,
            currency: "USD".into(),
            note: Some("Blue widget".into()),
            placed_at: Utc.timestamp_millis_opt(millis).unwrap(),
            status: crate::order::OrderStatus::Placed,
            version: 1,
            visible: false,
        }
    }

    fn ids(page: &MergedPage) -> Vec<u128> {
        page.orders.iter().map(|o| o.id.as_u128()).collect()
    }

    /// Pages through a read model and a write side as `list_page` does.
    fn all_pages(
        read_model: &[OrderView],
        write_side: &[OrderView],
        limit: usize,
    ) -> Vec<MergedPage> {
        let after_start = |start: &Option<SortKey>, o: &&OrderView| {
            start.as_ref().is_none_or(|s| sort_key(o) < *s)
        };
        let first = |orders: &[OrderView], start: &Option<SortKey>, n: usize| {
            let mut orders: Vec<OrderView> = orders
                .iter()
                .filter(|o| after_start(start, o))
                .cloned()
                .collect();
            orders.sort_by_key(|o| std::cmp::Reverse(sort_key(o)));
            let more = orders.len() > n;
            orders.truncate(n);
            (orders, more)
        };
        let mut pages = vec![];
        let mut start = None;
        loop {
            let (found, more) = first(read_model, &start, limit);
            let (pending, _) = first(write_side, &start, limit + 1);
            let page = merge_into_page(found, more, pending, limit);
            start = page.next.clone();
            pages.push(page);
            if start.is_none() {
                return pages;
            }
        }
    }

    #[test]
    fn each_order_lands_on_exactly_one_page_in_order() {
        // The read model has 9 and 8; the write side 1..=3 (pending) and a
        // newer version of 8.
        let read_model = vec![order(9, 200, "x"), order(8, 100, "y")];
        let mut cancelled = order(8, 100, "y");
        cancelled.version = 2;
        let write_side = vec![
            order(1, 500, "a"),
            order(2, 150, "b"),
            order(3, 50, "c"),
            cancelled,
        ];
        let pages = all_pages(&read_model, &write_side, 2);
        let pages: Vec<Vec<u128>> = pages.iter().map(ids).collect();
        assert_eq!(pages, vec![vec![1, 9], vec![2, 8], vec![3]]);
        let pages = all_pages(&read_model, &write_side, 2);
        assert_eq!(pages[1].orders[1].version, 2, "the newer version wins");
        assert_eq!(pages[1].source, ReadSource::Merged);
    }

    #[test]
    fn more_pending_orders_than_fit_on_a_page_spread_over_pages() {
        let read_model: Vec<OrderView> = (0..5).map(|n| order(n, n as i64 * 10, "r")).collect();
        let write_side: Vec<OrderView> = (100..1337)
            .map(|n| order(n, n as i64 * 10 + 5, "w"))
            .chain([order(3, 30, "r")]) // also in the read model
            .collect();
        let pages = all_pages(&read_model, &write_side, 100);
        assert!(pages.iter().all(|p| p.orders.len() <= 100));
        let listed: Vec<u128> = pages.iter().flat_map(ids).collect();
        let mut expected: Vec<u128> = (0..5).chain(100..1337).collect();
        expected.sort_by_key(|n| std::cmp::Reverse(*n));
        assert_eq!(listed, expected);
        assert_eq!(pages[0].source, ReadSource::Merged);
    }

    #[test]
    fn query_matching_needs_every_word() {
        let o = order(1, 1, "SKU-42");
        assert!(matches_query(&o, Some("sku 42")));
        assert!(matches_query(&o, Some("blue")));
        assert!(!matches_query(&o, Some("red")));
        assert!(matches_query(&o, None));
    }
}
