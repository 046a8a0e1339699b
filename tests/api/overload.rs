//! Past capacity, an instance refuses the excess writes at once and keeps
//! serving the rest: a write with no turn (`WRITE_CONCURRENCY`) and no room
//! in the line (`WRITE_QUEUE`), or one that waited its `WRITE_QUEUE_WAIT_MS`,
//! is answered 503 `busy` with `Retry-After` before it touched anything;
//! reads go on; the writes admitted commit; the refused one's retry with the
//! same id is taken. Capacity is forced small and full by holding a row lock
//! the admitted write waits on.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::web::admission::Refusal;
use sightline_test_support::{TestApp, assert_error, metric_value, spawn_app_with, test_settings};
use uuid::Uuid;

fn order(id: Uuid, sku: &str) -> Value {
    json!({ "id": id, "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 700 }] })
}

/// Waits until `n` writes wait in the instance's line.
async fn until_waiting(app: &TestApp, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.write_admission.waiting() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the line never held {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics` (the whole test process's) lists `series` at `min` or more.
async fn counted_in_metrics(app: &TestApp, series: &str, min: f64) {
    let value = metric_value(&app.metrics_text().await, series).unwrap_or(0.0);
    assert!(value >= min, "{series} is {value}, expected at least {min}");
}

async fn orders_with(app: &TestApp, id: Uuid) -> i64 {
    app.count(&format!("SELECT count(*) FROM orders WHERE id = '{id}'"))
        .await
}

#[tokio::test]
async fn a_write_past_the_line_is_refused_at_once_and_the_rest_go_on() {
    let mut settings = test_settings().await;
    settings.write_concurrency = 1;
    settings.write_queue = 1;
    settings.write_queue_wait_ms = 60_000;
    let app = spawn_app_with(settings).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let visible_before = app.place_simple_order(&bob, "BEFORE").await;
    app.wait_until_visible(&bob, visible_before["id"].as_str().unwrap())
        .await;

    let held = app.hold_user_row(&alice).await;
    let (first, second, refused) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // Alice's first order takes the one turn and waits on her row.
    let first_post = tokio::spawn(
        app.post(&alice, "/api/orders")
            .json(&order(first, "FIRST"))
            .send(),
    );
    app.until_a_session_waits_on_a_lock().await;
    // Her second waits in the line (room for one).
    let second_post = tokio::spawn(
        app.post(&alice, "/api/orders")
            .json(&order(second, "SECOND"))
            .send(),
    );
    until_waiting(&app, 1).await;

    // Bob's order finds no turn and no room: refused now, with the lock still
    // held — not after a pool timeout, and not half-written.
    let response = app.place_order(&bob, &order(refused, "REFUSED")).await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "a refusal says when to come back"
    );
    let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    assert_eq!(
        orders_with(&app, refused).await,
        0,
        "a refused write wrote nothing"
    );
    assert_eq!(app.write_admission.refused(Refusal::QueueFull), 1);
    counted_in_metrics(
        &app,
        "sightline_write_admission_refused_total{reason=\"queue_full\"}",
        1.0,
    )
    .await;

    // Reads are not held back by a full line.
    let (_, list) = app.list(&bob, "/api/orders").await;
    assert_eq!(list["orders"][0]["id"], visible_before["id"]);

    // The lock goes: the admitted and the waiting write both commit.
    held.commit().await.unwrap();
    assert_eq!(
        first_post.await.unwrap().unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        second_post.await.unwrap().unwrap().status(),
        StatusCode::CREATED
    );
    until_waiting(&app, 0).await;

    // The refused order's retry, same id, is taken and becomes visible once.
    let retry = app.place_order(&bob, &order(refused, "REFUSED")).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    app.wait_until_visible(&bob, &refused.to_string()).await;
    for id in [first, second, refused] {
        assert_eq!(orders_with(&app, id).await, 1, "order {id}");
    }
}

#[tokio::test]
async fn a_write_that_waits_too_long_for_a_turn_is_refused_and_writes_nothing() {
    let mut settings = test_settings().await;
    settings.write_concurrency = 1;
    settings.write_queue = 10;
    settings.write_queue_wait_ms = 300;
    let app = spawn_app_with(settings).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);

    let held = app.hold_user_row(&alice).await;
    let first = Uuid::new_v4();
    let first_post = tokio::spawn(
        app.post(&alice, "/api/orders")
            .json(&order(first, "FIRST"))
            .send(),
    );
    app.until_a_session_waits_on_a_lock().await;

    // Room in the line, but no turn within 300 ms: refused (the lock is
    // still held, so no turn could have come).
    let waited = Uuid::new_v4();
    let response = app.place_order(&bob, &order(waited, "WAITED")).await;
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    assert_eq!(orders_with(&app, waited).await, 0);
    assert_eq!(app.write_admission.refused(Refusal::Waited), 1);
    counted_in_metrics(
        &app,
        "sightline_write_admission_refused_total{reason=\"waited\"}",
        1.0,
    )
    .await;

    held.commit().await.unwrap();
    assert_eq!(
        first_post.await.unwrap().unwrap().status(),
        StatusCode::CREATED
    );
    // With the turn free again a write goes straight in.
    let again = app.place_order(&bob, &order(waited, "WAITED")).await;
    assert_eq!(again.status(), StatusCode::CREATED);
}
