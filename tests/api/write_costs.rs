//! Placing an order costs the same beside many orders as beside none: no
//! statement it runs — its own or a trigger's — scans the `orders` table.
//!
//! PostgreSQL plans a trigger's queries once per connection and keeps the
//! plans. The search-words trigger's first version, planned while `orders`
//! was empty (a fresh database, before autovacuum's first ANALYZE), scanned
//! the whole table for every order placed after — two thirds of
//! PostgreSQL's CPU in the benchmark. The write path runs here on a
//! one-connection pool, so the plan made for the first order is the one the
//! later order uses, and the backend's own scan counters say what it did.

use serde_json::json;
use sightline::auth::session::CurrentUser;
use sightline::write_side::place_order::{Placed, place_order};
use sightline::write_side::validation::{PlaceOrderRequest, validate};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::helpers::spawn_app;

fn an_order() -> sightline::write_side::validation::ValidOrder {
    let request: PlaceOrderRequest = serde_json::from_value(json!({
        "id": Uuid::new_v4(),
        "items": [
            { "sku": "COST-A", "quantity": 1, "unit_price_cents": 100 },
            { "sku": "COST-B", "quantity": 2, "unit_price_cents": 200 }
        ],
        "note": "cost"
    }))
    .unwrap();
    validate(request).unwrap()
}

/// Sequential scans of `orders` so far, as this connection's backend counted
/// them (its pending counts flushed first, so the read is exact).
async fn seq_scans_of_orders(db: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(db)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'orders'",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn placing_an_order_never_scans_the_orders_table() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let user = CurrentUser {
        id: app.user_id(&user).await,
        username: user.username.clone(),
        via_cookie: false,
        session_key: Vec::new(),
        session_consistency_token: None,
    };
    // One connection: every statement below runs in the same backend.
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&app.settings.database_url)
        .await
        .unwrap();

    // The first order, into an empty table: the trigger's plans are made now.
    let first = place_order(&db, None, &user, an_order()).await.unwrap();
    assert!(matches!(first, Placed::Created(_)));

    // Many orders later (without items, so no trigger fires for them).
    sqlx::query(
        "INSERT INTO orders (id, user_id, user_write_seq, note, total_cents, currency)
         SELECT gen_random_uuid(), $1, 1000000 + g, 'filler', 100, 'USD'
         FROM generate_series(1, 5000) g",
    )
    .bind(user.id)
    .execute(&db)
    .await
    .unwrap();

    let before = seq_scans_of_orders(&db).await;
    let next = place_order(&db, None, &user, an_order()).await.unwrap();
    assert!(matches!(next, Placed::Created(_)));
    assert_eq!(
        seq_scans_of_orders(&db).await,
        before,
        "placing an order scanned the whole orders table"
    );
    // And the search words were written (the trigger did its job).
    let Placed::Created(order) = next else {
        unreachable!()
    };
    let words: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_search
         WHERE order_id = $1 AND document @@ to_tsquery('simple', 'cost & a & b')",
    )
    .bind(order.id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(words, 1);
}
