//! Read-your-writes with more orders pending than one query of the write
//! database reads: a token's list pages through all of them, in order, each
//! once, with search held back so none of them can come from the read model.

use serde_json::Value;
use uuid::Uuid;

use crate::direct_writes::{Owner, insert_order, one_item};
use crate::helpers::{TestApp, TestUser, order_ids, spawn_app};

const PAGE: usize = 100;

/// Every page of `/api/orders` presenting `token` (and `q`), following the
/// cursor to the end.
async fn all_pages(app: &TestApp, user: &TestUser, token: &str, q: Option<&str>) -> Vec<Value> {
    let mut pages: Vec<Value> = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/orders?limit={PAGE}&consistency_token={token}");
        if let Some(q) = q {
            path.push_str(&format!("&q={q}"));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (_, page) = app.list(user, &path).await;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        assert!(pages.len() < 100, "the cursor never ends");
        if cursor.is_none() {
            return pages;
        }
    }
}

/// The user's orders in the list's order (newest millisecond first, then
/// id), as the write database has them; `sku_like` narrows them.
async fn expected(app: &TestApp, user_id: Uuid, sku_like: &str) -> Vec<String> {
    sqlx::query_scalar::<_, Uuid>(
        "SELECT o.id FROM orders o
         WHERE o.user_id = $1
           AND EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id AND i.sku LIKE $2)
         ORDER BY floor(extract(epoch FROM o.placed_at) * 1000) DESC, o.id DESC",
    )
    .bind(user_id)
    .bind(sku_like)
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect()
}

#[tokio::test]
async fn a_token_lists_every_pending_order_also_beyond_a_thousand_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let owner = Owner {
        id: app.user_id(&user).await,
        username: user.username.clone(),
    };

    // Searchable and noticed.
    let mut seen = vec![];
    for sku in ["SEEN-A", "RARE-SEEN", "SEEN-B"] {
        let order = app.place_simple_order(&user, sku).await;
        seen.push(order["id"].as_str().unwrap().to_owned());
    }
    for id in &seen {
        app.wait_until_visible(&user, id).await;
    }

    // From here on the pipeline is held: the next batch becomes searchable
    // but its notice waits, and nothing after it is projected.
    let hold = app.hold_notices().await;
    app.place_simple_order(&user, "HELD").await;
    app.wait_until_projector_blocked().await;

    // 1,100 more in 11 transactions: 11 times shared by 100 orders each
    // (ties within one millisecond, across the chunks the server reads).
    for t in 0..11 {
        let mut tx = app.db.begin().await.unwrap();
        for n in 0..100 {
            let sku = if (t * 100 + n) % 7 == 0 {
                "RARE-PENDING"
            } else {
                "PENDING"
            };
            insert_order(&mut tx, &owner, Uuid::new_v4(), one_item(sku), 2)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // A cancellation search does not have yet; its token covers everything.
    let response = app.cancel_order(&user, &seen[2]).await;
    assert!(response.status().is_success());
    let cancelled: Value = response.json().await.unwrap();
    let token = cancelled["consistency_token"].as_str().unwrap().to_owned();

    // Search alone still has the four orders it had.
    let (source, plain) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(source, "read-model");
    assert_eq!(order_ids(&plain).len(), 4);

    let everything = expected(&app, owner.id, "%").await;
    assert_eq!(everything.len(), 1104);
    let pages = all_pages(&app, &user, &token, None).await;
    let listed: Vec<String> = pages.iter().flat_map(order_ids).collect();
    assert_eq!(
        listed.len(),
        everything.len(),
        "the token's list has {} of the {} orders",
        listed.len(),
        everything.len()
    );
    assert_eq!(listed, everything, "each order once, in the list's order");
    for page in &pages {
        assert!(
            order_ids(page).len() <= PAGE,
            "a page longer than its limit"
        );
    }
    let orders = pages.iter().flat_map(|p| p["orders"].as_array().unwrap());
    let shown = orders
        .clone()
        .find(|o| o["id"] == seen[2].as_str())
        .unwrap();
    assert_eq!(
        shown["status"], "cancelled",
        "the write side's newer version"
    );
    assert_eq!(
        orders.filter(|o| o["visible"] == false).count(),
        1101,
        "the 1,100 and the cancellation are not visible yet"
    );

    // The same with a search term, which the write side's orders are
    // filtered by as search would.
    let rare = expected(&app, owner.id, "RARE-%").await;
    assert_eq!(rare.len(), 1 + 1100 / 7 + 1);
    let pages = all_pages(&app, &user, &token, Some("rare")).await;
    let listed: Vec<String> = pages.iter().flat_map(order_ids).collect();
    assert_eq!(listed, rare);

    hold.release().await;
}
