//! PostgreSQL restarts under a running app: while it is down, writes fail
//! fast with a clear 503; once it is back, writes work again and their orders
//! become visible — without restarting the app.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{
    TestApp, TestUser, assert_error, order_ids, spawn_app_with, test_settings, visible_id,
};
use crate::services::{self, Service};

/// How long the app may take to use the database again after it is back.
const RECOVERY: Duration = Duration::from_secs(120);

fn order_body(id: Uuid, sku: &str) -> Value {
    json!({ "id": id, "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 250 }] })
}

/// Places an order with a fixed id until the app answers 201, retrying the
/// same id (so a lost answer cannot duplicate it) while it says 503.
async fn place_once_database_is_back(
    app: &TestApp,
    client: &reqwest::Client,
    user: &TestUser,
    sku: &str,
) -> String {
    let id = Uuid::new_v4();
    let deadline = Instant::now() + RECOVERY;
    let mut unanswered = false;
    loop {
        let sent = client
            .post(app.url("/api/orders"))
            .bearer_auth(&user.token)
            .json(&order_body(id, sku))
            .send()
            .await;
        match sent.as_ref().map(|r| r.status()) {
            Ok(StatusCode::CREATED) => return id.to_string(),
            // Only if an earlier attempt went unanswered may it have committed.
            Ok(StatusCode::OK) if unanswered => return id.to_string(),
            Ok(StatusCode::SERVICE_UNAVAILABLE) => {}
            Ok(status) => panic!("unexpected {status} while PostgreSQL comes back"),
            Err(e) => {
                eprintln!("faults: no answer while PostgreSQL comes back: {e}");
                unanswered = true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "writes did not work again within {RECOVERY:?} after PostgreSQL was back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn with_postgres_restarted_writes_fail_fast_then_work_again_without_restarting_the_app() {
    let _serial = services::serial().await;
    let mut settings = test_settings().await;
    // No safety poll worth the name: only NOTIFY wakes the relay, so an order
    // shows only if the relay's LISTEN connection came back after the restart.
    settings.relay_poll_ms = 3_600_000;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let before = app.place_simple_order(&user, "BEFORE-RESTART").await;
    let before_id = before["id"].as_str().unwrap().to_owned();
    assert_eq!(visible_id(&events.next_order_visible().await), before_id);

    let outage = services::stop(Service::Postgres).await;

    // A write fails fast and clearly: an answer (not a hang), 503, Retry-After, JSON.
    let response = client
        .post(app.url("/api/orders"))
        .bearer_auth(&user.token)
        .json(&order_body(Uuid::new_v4(), "WHILE-DOWN"))
        .send()
        .await
        .expect("no answer within 20 s to a write while PostgreSQL is down");
    assert!(
        response.headers().contains_key("retry-after"),
        "503 without Retry-After"
    );
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    let response = client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("no answer from /readyz while PostgreSQL is down");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["postgres"], "down", "{body}");
    let response = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the process still lives");

    outage.end().await;

    // Writes work again, and the order reaches the stream opened before the
    // restart (the notice hub is back on the log).
    let first = place_once_database_is_back(&app, &client, &user, "AFTER-RESTART-1").await;
    assert_eq!(visible_id(&events.next_order_visible().await), first);

    // The relay has gone back to waiting for NOTIFY by now; this one shows
    // only through its re-established LISTEN.
    let second = place_once_database_is_back(&app, &client, &user, "AFTER-RESTART-2").await;
    assert_eq!(visible_id(&events.next_order_visible().await), second);

    let response = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, list) = app.list(&user, "/api/orders").await;
    assert_eq!(order_ids(&list), vec![second, first, before_id]);
    // The write refused while the database was down left nothing behind.
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 3);
}
