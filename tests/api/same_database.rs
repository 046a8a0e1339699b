//! The same-database read model (`READ_STORE=postgres`) on its own terms:
//! what the Elasticsearch mode cannot do or does differently. (Every other
//! API and browser test runs in this mode too, through
//! `SIGHTLINE_TEST_READ_STORE=postgres`.)

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::ReadStoreKind;

use crate::helpers::{TestApp, WAIT, order_ids, spawn_app_with, test_settings, visible_id};

async fn same_database_app() -> TestApp {
    let mut settings = test_settings().await;
    settings.read_store = ReadStoreKind::Postgres;
    spawn_app_with(settings).await
}

/// The order, its summary and its notice commit together: while the notice
/// recording lock is held exclusively (the tests' seam; recordings take it
/// shared), the write cannot commit, so nobody sees the order;
/// once released, the commit makes it listed, counted and noticed at once.
/// (With the notice recorded after the commit, as a projector would, the
/// 201 would come back while the lock is held.)
#[tokio::test]
async fn an_order_is_listed_counted_and_noticed_in_its_own_commit() {
    let app = same_database_app().await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    let hold = app.hold_notices().await;
    let placing = {
        let (http, url, token) = (app.http.clone(), app.url("/api/orders"), user.token.clone());
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({ "items": [{ "sku": "HELD-1", "quantity": 1, "unit_price_cents": 100 }] }))
                .send()
                .await
                .unwrap()
        })
    };
    // The write waits for the lock inside its transaction.
    app.wait_until_projector_blocked().await;
    assert!(
        !placing.is_finished(),
        "the write committed without its notice"
    );
    let (_, list) = app.list(&user, "/api/orders").await;
    assert!(
        order_ids(&list).is_empty(),
        "listed before its commit: {list}"
    );
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    hold.release().await;
    let response = placing.await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    // The notice was in the stream's way before the 201 was read; a list
    // made now includes the order, and the summary counts it.
    assert_eq!(visible_id(&stream.next_order_visible().await), id);
    let (source, list) = app.list(&user, "/api/orders").await;
    assert_eq!(source, "read-model");
    assert_eq!(order_ids(&list), vec![id.to_owned()]);
    assert_eq!(list["orders"][0]["visible"], true);
    let summary: Value = app.user_json(&user, "/api/summary").await;
    assert_eq!(summary["orders_placed"], 1);
    // Nothing publishes the outbox in this mode: the event is kept.
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        1
    );
}

/// Search matches every word as a prefix over skus and note, case aside,
/// split at anything not a letter or digit, as the Elasticsearch mode does;
/// cursors page the results.
#[tokio::test]
async fn search_matches_word_prefixes_and_pages_with_cursors() {
    let app = same_database_app().await;
    let user = app.new_user().await;
    let mut ids = vec![];
    for (sku, note) in [
        ("WIDGET-42", "Blue widget"),
        ("GADGET-7", "red gadget"),
        ("WIDGET-9", "green"),
    ] {
        let response = app
            .place_order(
                &user,
                &json!({ "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 100 }], "note": note }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let found = async |q: &str| {
        let (_, list) = app.list(&user, &format!("/api/orders?q={q}")).await;
        order_ids(&list)
    };
    assert_eq!(found("wid").await, vec![ids[2].clone(), ids[0].clone()]);
    assert_eq!(found("blue%20wid").await, vec![ids[0].clone()]);
    assert_eq!(found("widget%2042").await, vec![ids[0].clone()]);
    assert_eq!(found("GADG").await, vec![ids[1].clone()]);
    assert_eq!(found("purple").await, Vec::<String>::new());
    // Query syntax is not a query: operators are just separators.
    assert_eq!(found("wid%20%7C%20!gad%3A*").await, Vec::<String>::new());

    let mut paged = vec![];
    let mut path = "/api/orders?limit=1".to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline);
        let (_, page) = app.list(&user, &path).await;
        paged.extend(order_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/orders?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(paged, newest_first);
}

/// Operators see the mode: no lag (nothing is projected), the kept outbox
/// is not shown as a backlog, and Elasticsearch is not used.
#[tokio::test]
async fn status_and_readiness_say_the_outbox_is_kept_not_late() {
    let app = same_database_app().await;
    let user = app.new_user().await;
    app.place_simple_order(&user, "KEPT").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        let page = app.text_of("/status").await;
        if page.contains("1 event kept unpublished for a later move, not lag") {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(page.contains(r#"data-overall="ok""#), "{page}");
    assert!(
        page.contains(r#"<dd data-field="elasticsearch">not used</dd>"#),
        "{page}"
    );
    let ready: Value = app.json_of("/readyz").await;
    assert_eq!(
        ready,
        json!({
            "status": "ready",
            "postgres": "up",
            "elasticsearch": "not used",
            "bus": "not used"
        })
    );
}
