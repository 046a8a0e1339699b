//! Read-your-writes: the one read path allowed to consult the write database.
//!
//! A read that presents a consistency token must include every order of the
//! user up to that token. Orders the read model cannot show yet are taken from
//! the write database and merged in; the response says so in `X-Read-Source`.

use axum::http::HeaderValue;
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
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            ReadSource::ReadModel => "read-model",
            ReadSource::WriteDb => "write-db",
            ReadSource::Merged => "merged",
        })
    }
}

/// The user's orders up to `token` whose notices are not recorded yet.
/// Must be asked BEFORE the read model: an order that turns visible in
/// between is then in the search result (and deduplicated), never in neither.
pub async fn pending_orders(
    db: &sqlx::PgPool,
    user_id: Uuid,
    token: ConsistencyToken,
) -> sqlx::Result<Vec<OrderView>> {
    let orders = store::not_yet_visible(db, user_id, token.write_seq).await?;
    Ok(orders
        .into_iter()
        .map(|o| OrderView {
            visible: false,
            ..o.view()
        })
        .collect())
}

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

/// Whether the order exists and is this user's (the write side knows orders
/// search cannot see yet).
pub async fn owns_order(db: &sqlx::PgPool, user_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    store::owner_of(db, id)
        .await
        .map(|owner| owner == Some(user_id))
}

/// An order's version and status once none of its events is pending or
/// parked: every version was made searchable (the relay publishes an event
/// only after its notice is recorded). The visibility poll asks this only
/// when the order has no notice left, i.e. its notices were pruned.
pub async fn settled_version(db: &sqlx::PgPool, id: Uuid) -> sqlx::Result<Option<(i32, String)>> {
    sqlx::query_as(
        "SELECT version, status FROM orders o
         WHERE o.id = $1
           AND NOT EXISTS (SELECT 1 FROM outbox
                            WHERE aggregate_id = $1 AND (published_at IS NULL OR parked))",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

pub fn sort_key(order: &OrderView) -> SortKey {
    SortKey {
        placed_at_millis: order.placed_at.timestamp_millis(),
        id: order.id.to_string(),
    }
}

/// Merges pending orders into one page of read-model results. A pending order
/// belongs to this page when it sorts after the page's start (`after`) and,
/// if more pages follow, no later than the page's last order — so across all
/// pages each pending order shows up exactly once.
pub fn merge_into_page(
    page: &mut Vec<OrderView>,
    pending: Vec<OrderView>,
    after: Option<&SortKey>,
    next: Option<&SortKey>,
    q: Option<&str>,
) -> ReadSource {
    let mut merged = false;
    for order in pending {
        let key = sort_key(&order);
        // Descending order: "after the start" means a smaller key.
        let after_start = after.is_none_or(|start| key < *start);
        let before_end = next.is_none_or(|end| key >= *end);
        if !(after_start && before_end && matches_query(&order, q)) {
            continue;
        }
        match page.iter_mut().find(|o| o.id == order.id) {
            // The write side is ahead (e.g. a cancellation not yet projected).
            Some(shown) if shown.version < order.version => {
                *shown = order;
                merged = true;
            }
            Some(_) => {}
            None => {
                page.push(order);
                merged = true;
            }
        }
    }
    if merged {
        page.sort_by_key(|o| std::cmp::Reverse(sort_key(o)));
        ReadSource::Merged
    } else {
        ReadSource::ReadModel
    }
}

/// The write-side stand-in for the index's full-text match: every word of
/// `q` appears among the words of the skus and the note (case-insensitive).
pub fn matches_query(order: &OrderView, q: Option<&str>) -> bool {
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else {
        return true;
    };
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let mut haystack: Vec<String> = order.items.iter().flat_map(|i| words(&i.sku)).collect();
    if let Some(note) = &order.note {
        haystack.extend(words(note));
    }
    words(q).iter().all(|w| haystack.contains(w))
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

    #[test]
    fn each_pending_order_lands_on_exactly_one_page() {
        let pending = vec![order(1, 500, "a"), order(2, 150, "b"), order(3, 50, "c")];
        // Page 1 covers [newest .. key 200], page 2 covers (200 .. end].
        let end_of_page_1 = sort_key(&order(9, 200, "x"));
        let mut page1 = vec![order(9, 200, "x")];
        let mut page2 = vec![order(8, 100, "y")];
        assert_eq!(
            merge_into_page(
                &mut page1,
                pending.clone(),
                None,
                Some(&end_of_page_1),
                None
            ),
            ReadSource::Merged
        );
        merge_into_page(&mut page2, pending, Some(&end_of_page_1), None, None);
        let ids = |p: &[OrderView]| p.iter().map(|o| o.id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(&page1), vec![1, 9]);
        assert_eq!(ids(&page2), vec![2, 8, 3]);
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
