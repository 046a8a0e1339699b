//! The web and the pipeline draw on separate connection pools: requests that
//! hold every connection of the web's pool do not stop the relay, the
//! projector or the notice hub, and many relay batches in flight starve
//! neither each other nor the web.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sightline::config::Role;

use crate::helpers::{
    TestApp, WAIT, order_ids, spawn_app_with, spawn_instance, test_settings, visible_id,
};

/// The web's pool of the flooded instance.
const WEB_POOL: u32 = 4;

#[tokio::test]
async fn a_flood_of_web_requests_does_not_stop_notices() {
    let mut settings = test_settings().await;
    settings.database_max_connections = WEB_POOL;
    // Writes may take every connection of the web's pool (by default they
    // leave a quarter to reads): the flood below is to empty it.
    settings.write_concurrency = WEB_POOL;
    settings.relay_concurrency = 2;
    let app = spawn_app_with(settings.clone()).await;
    // Another web-only instance over the same data (with pools of its own):
    // where the order is placed while this one is flooded.
    let mut elsewhere = settings.clone();
    elsewhere.roles = vec![Role::Web];
    let web2 = spawn_instance(elsewhere).await;

    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    // The flood: orders of a user whose row the test holds locked. Each
    // request takes a connection of the web's pool and keeps it, waiting for
    // the lock, for as long as the test wants.
    let flooder = app.new_user().await;
    let lock = app.hold_user_row(&flooder).await;
    let flood: Vec<_> = (0..2 * WEB_POOL)
        .map(|n| {
            let request = app
                .post(&flooder, "/api/orders")
                .json(&json!({ "items": [{ "sku": format!("FLOOD-{n}"), "quantity": 1, "unit_price_cents": 1 }] }));
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();

    // Until the web's pool has no connection left: readiness (one `SELECT 1`
    // through it) gives up.
    tokio::time::timeout(WAIT, async {
        loop {
            let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
            if ready.status() == StatusCode::SERVICE_UNAVAILABLE {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the flood never took the web's whole pool");
    let blocked = app
        .count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
    assert!(blocked >= 1, "no request waits for the held lock");

    // An order placed elsewhere: this instance's relay, projector and hub
    // still make it searchable and announce it.
    let order = web2.place_simple_order(&user, "DURING-FLOOD").await;
    let id = order["id"].as_str().unwrap();
    let notice = events.next_order_visible().await;
    assert_eq!(visible_id(&notice), id);
    let (_, list) = web2.list(&user, "/api/orders").await;
    assert!(order_ids(&list).contains(&id.to_owned()));

    // The flood held throughout.
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    lock.rollback().await.unwrap();
    let mut placed = 0;
    for request in flood {
        if request.await.unwrap().unwrap() == StatusCode::CREATED {
            placed += 1;
        }
    }
    // Those that held a connection go through once the lock is gone.
    assert!(placed >= 1, "no flooded request got through after the lock");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Relay batches waiting to record their notices, each holding its claim
/// transaction and a second connection (the test holds the lock they wait for).
async fn batches_waiting(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
}

/// Many batches in flight at once, each holding two connections: more than
/// one shared 20-connection pool could give them and the web together.
/// Every batch still gets its connections, and the web keeps taking orders.
#[tokio::test]
async fn a_high_relay_concurrency_starves_neither_itself_nor_the_web_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    const BATCHES: usize = 16;
    let mut settings = test_settings().await;
    settings.relay_concurrency = BATCHES as u16;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    let hold = app.hold_notices().await;
    let mut placed = HashSet::new();
    for n in 0..BATCHES {
        // Through the web, while the batches before it hold their connections.
        let order = app.place_simple_order(&user, &format!("BATCH-{n}")).await;
        placed.insert(order["id"].as_str().unwrap().to_owned());
        tokio::time::timeout(WAIT, async {
            while batches_waiting(&app).await < n as i64 + 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("batch {} never got as far as its notices", n + 1));
    }
    hold.release().await;

    let mut announced = HashSet::new();
    while announced.len() < BATCHES {
        announced.insert(visible_id(&events.next_order_visible().await));
    }
    assert_eq!(announced, placed);
}
