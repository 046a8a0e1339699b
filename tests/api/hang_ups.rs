//! A client that hangs up mid-request does not cancel what it started: the
//! write commits (or not) by its own code, never abandoned half-way with its
//! connection, and a retry with the same id finds it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline_test_support::spawn_app;
use uuid::Uuid;

#[tokio::test]
async fn an_order_whose_client_hung_up_mid_write_is_committed_once_and_found_on_retry() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let id = Uuid::new_v4();
    let body = json!({ "id": id, "items": [{ "sku": "HUNG-UP", "quantity": 1, "unit_price_cents": 500 }] });

    // Hold the user's row: the order's transaction, which takes it first,
    // waits inside the write with its connection.
    let held = app.hold_user_row(&user).await;

    let request = tokio::spawn({
        let post = app.post(&user, "/api/orders").json(&body);
        async move { post.send().await }
    });
    app.until_a_session_waits_on_a_lock().await;
    // The client gives up: its connection closes, and the server's request
    // future with it.
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.commit().await.unwrap();

    // The write finished on its own: the order and its one event are there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let orders = app
            .count(&format!("SELECT count(*) FROM orders WHERE id = '{id}'"))
            .await;
        if orders == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order a client hung up on was never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client's retry finds it, and nothing is doubled.
    let retry = app.place_order(&user, &body).await;
    assert_eq!(retry.status(), StatusCode::OK, "a retry of a committed id");
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(retried["id"], id.to_string());
    let events = app
        .count(&format!(
            "SELECT count(*) FROM outbox WHERE aggregate_id = '{id}'"
        ))
        .await;
    assert_eq!(events, 1);
    app.wait_until_visible(&user, &id.to_string()).await;
    // And the server goes on serving writes.
    app.place_simple_order(&user, "AFTER").await;
}
