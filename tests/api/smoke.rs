use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{order_ids, spawn_app};

#[tokio::test]
async fn a_placed_order_becomes_visible_and_listed() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "SKU-1").await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(order["visible"], false);
    assert_eq!(order["total_cents"], 300);
    app.wait_until_visible(&user, id).await;
    let response = app.get(&user, "/api/orders").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-read-source"], "read-model");
    let list: Value = response.json().await.unwrap();
    assert_eq!(order_ids(&list), vec![id.to_owned()]);
}
