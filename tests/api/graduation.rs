//! Moving between the two read models on one database: from
//! `READ_STORE=postgres` to Elasticsearch (`sightline rebuild` while the
//! same-database mode serves, then a restart in the Elasticsearch mode) and
//! back. Orders placed before, during and after each move are all listed,
//! the summary carries over, and every order version is noticed exactly
//! once over the whole history. In-process instances over one test's data
//! (a stopped instance, then another in the other mode, as a restart).

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::{ReadStoreKind, Role};
use sightline::operations::rebuild::{self, RebuildOptions};

use crate::helpers::{
    TestApp, TestUser, WAIT, order_ids, spawn_app_with, spawn_instance, test_settings,
};

async fn place(app: &TestApp, user: &TestUser, sku: &str) -> String {
    let response = app
        .place_order(
            user,
            &json!({ "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 300 }] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Stops an instance and waits until it no longer answers (a restart).
async fn stop(app: &TestApp) {
    app.stop();
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.http.get(app.url("/healthz")).send().await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every order id the list shows (all pages) and the answering store.
async fn listed(app: &TestApp, user: &TestUser) -> (BTreeSet<String>, Value) {
    let (source, page) = app.list(user, "/api/orders?limit=100").await;
    assert_eq!(source, "read-model");
    assert!(page["next_cursor"].is_null());
    let summary: Value = app
        .get(user, "/api/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (order_ids(&page).into_iter().collect(), summary)
}

async fn unpublished(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked")
        .await
}

#[tokio::test]
async fn graduating_to_elasticsearch_and_back_keeps_every_order_and_notices_each_once_needs_elasticsearch()
 {
    // The test moves to Elasticsearch, so it needs it in either run.
    crate::helpers::require_elasticsearch();
    let mut settings = test_settings().await;
    settings.read_store = ReadStoreKind::Postgres;
    let es_settings = {
        let mut s = settings.clone();
        s.read_store = ReadStoreKind::Elasticsearch;
        s
    };
    // Owns the data: dropped last, it removes the database and indices.
    let same_db = spawn_app_with(settings.clone()).await;
    let user = same_db.new_user().await;
    let mut placed = BTreeSet::new();
    let mut noticed_versions = 0;

    // Before: in the same-database mode, listed and noticed at commit.
    for sku in ["BEFORE-1", "BEFORE-2", "BEFORE-3"] {
        placed.insert(place(&same_db, &user, sku).await);
        noticed_versions += 1;
    }
    let cancelled = placed.iter().next().unwrap().clone();
    assert_eq!(
        same_db.cancel_order(&user, &cancelled).await.status(),
        StatusCode::OK
    );
    noticed_versions += 1;
    assert_eq!(listed(&same_db, &user).await.0, placed);

    // During: the rebuild stops after its first batch (as if still running),
    // orders come in, and it resumes, catches up and swaps.
    let options = RebuildOptions {
        batch_size: 2,
        stop_after_batches: Some(1),
        ..RebuildOptions::default()
    };
    let first = rebuild::run(&settings, options, false).await.unwrap();
    assert!(!first.swapped);
    for sku in ["DURING-1", "DURING-2"] {
        placed.insert(place(&same_db, &user, sku).await);
        noticed_versions += 1;
    }
    let report = rebuild::run(&settings, RebuildOptions::default(), false)
        .await
        .unwrap();
    assert!(report.swapped, "{report:?}");
    // What the rebuild wrote is marked published: the relay starts after it.
    assert_eq!(unpublished(&same_db).await, 0);

    // After the rebuild, before the restart: still served by PostgreSQL,
    // left for the Elasticsearch mode's relay.
    for sku in ["AFTER-REBUILD-1", "AFTER-REBUILD-2"] {
        placed.insert(place(&same_db, &user, sku).await);
        noticed_versions += 1;
    }
    let (_, summary_before) = listed(&same_db, &user).await;
    assert_eq!(unpublished(&same_db).await, 2, "the relay's starting place");
    stop(&same_db).await;

    // The move: READ_STORE=elasticsearch, restarted. The relay delivers the
    // two, notices nothing again, and Elasticsearch lists every order.
    let es = spawn_instance(es_settings.clone()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while unpublished(&es).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ids, summary) = listed(&es, &user).await;
    assert_eq!(ids, placed, "Elasticsearch lists every order");
    assert_eq!(summary, summary_before, "the summary carried over");
    let (_, cancelled_search) = es.list(&user, "/api/orders?q=BEFORE").await;
    assert!(
        cancelled_search["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == cancelled.as_str() && o["status"] == "cancelled"),
        "{cancelled_search}"
    );
    // After the move: the pipeline serves new orders.
    let after_move = place(&es, &user, "AFTER-MOVE").await;
    es.wait_until_visible(&user, &after_move).await;
    placed.insert(after_move);
    noticed_versions += 1;
    stop(&es).await;

    // Back: orders an Elasticsearch-mode web took but no relay delivered
    // (an instance without the pipeline) are noticed when the same-database
    // mode starts, and listed.
    let mut web_only = es_settings.clone();
    web_only.roles = vec![Role::Web];
    let es_web = spawn_instance(web_only).await;
    for sku in ["UNDELIVERED-1", "UNDELIVERED-2"] {
        placed.insert(place(&es_web, &user, sku).await);
        noticed_versions += 1;
    }
    stop(&es_web).await;
    // The Elasticsearch mode kept no same-database search words for its
    // orders (nothing there reads them)...
    let without_words: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o
         WHERE NOT EXISTS (SELECT 1 FROM order_search s WHERE s.order_id = o.id)",
    )
    .fetch_one(&es.db)
    .await
    .unwrap();
    assert!(
        without_words >= 3,
        "the Elasticsearch mode still kept search words ({without_words} orders without)"
    );
    let back = spawn_instance(settings.clone()).await;
    let (ids, summary) = listed(&back, &user).await;
    assert_eq!(ids, placed, "the same-database mode lists every order");
    // ...and the same-database mode added them when it started: `q` finds
    // the orders the other mode wrote.
    for word in ["AFTER", "UNDELIVERED"] {
        let (_, body) = back.list(&user, &format!("/api/orders?q={word}")).await;
        assert!(
            !crate::helpers::order_ids(&body).is_empty(),
            "q={word} finds nothing after the move back: {body}"
        );
    }
    assert_eq!(summary["orders_placed"], placed.len());
    assert_eq!(summary["orders_cancelled"], 1);
    let last = place(&back, &user, "BACK").await;
    placed.insert(last);
    noticed_versions += 1;

    // Every version noticed exactly once, over the whole history: the
    // replay from the start holds each once, and nothing else.
    let mut stream = back.open_events(&user, Some("0")).await;
    assert_eq!(stream.next_event().await.event.as_deref(), Some("ready"));
    let mut seen = BTreeSet::new();
    for _ in 0..noticed_versions {
        let frame = stream.next_order_visible().await;
        let data = frame.json();
        let key = (
            data["id"].as_str().unwrap().to_owned(),
            data["version"].as_i64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "noticed twice: {key:?}");
    }
    let noticed_orders: BTreeSet<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(noticed_orders, placed);
    assert!(seen.contains(&(cancelled.clone(), 2)));
    let user_id = back.user_id(&user).await;
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM notices WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&back.db)
        .await
        .unwrap();
    assert_eq!(
        logged, noticed_versions,
        "nothing noticed twice or left out"
    );
    back.stop();
    drop(same_db);
}
