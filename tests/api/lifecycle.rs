//! Orders have a lifecycle: cancellation, versions above 1, and the
//! counter-style summary that must stay exact under redelivery.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{order_ids, spawn_app, visible_id};

#[tokio::test]
async fn cancelling_produces_version_2_with_its_own_notice_and_the_list_shows_it() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;
    let order = app.place_simple_order(&user, "CANCEL-ME").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let placed = stream.next_order_visible().await;
    assert_eq!(visible_id(&placed), id);
    assert_eq!(placed.json()["version"], 1);
    assert_eq!(placed.json()["status"], "placed");

    let response = app.cancel_order(&user, &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["version"], 2);
    assert!(cancelled["consistency_token"].is_string());

    let notice = stream.next_order_visible().await;
    assert_eq!(visible_id(&notice), id);
    assert_eq!(notice.json()["version"], 2);
    assert_eq!(notice.json()["status"], "cancelled");
    // The promise holds for version 2 too: right now, search shows the cancellation.
    let (source, list) = app.list(&user, "/api/orders").await;
    assert_eq!(source, "read-model");
    assert_eq!(list["orders"][0]["status"], "cancelled");
    assert_eq!(list["orders"][0]["version"], 2);
    let one: Value = app
        .get(&user, &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_twice_changes_nothing_and_others_cannot_cancel() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let order = app.place_simple_order(&alice, "ONCE").await;
    let id = order["id"].as_str().unwrap();
    let cancel = |user| app.cancel_order(user, id);

    let response = cancel(&bob).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'OrderCancelled'")
            .await,
        0
    );

    let first: Value = cancel(&alice).await.json().await.unwrap();
    let response = cancel(&alice).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["status"], "cancelled");
    assert_eq!(second["version"], first["version"]);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'OrderCancelled'")
            .await,
        1
    );

    let unknown = app
        .cancel_order(&alice, &uuid::Uuid::new_v4().to_string())
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// The write side is really ahead of search: an earlier batch is held (its
/// notices blocked, and the relay takes one batch at a time), so the cancel's
/// event is not even claimed and search still shows version 1, placed. A read
/// with the cancel's token must replace that with the write side's version 2.
#[tokio::test]
async fn a_consistency_token_from_a_cancel_shows_the_cancellation_before_search_does_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "RYW-CANCEL").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_visible(&user, &id).await;

    let hold = app.hold_notices().await;
    let earlier = app.place_simple_order(&user, "RYW-EARLIER").await;
    let earlier = earlier["id"].as_str().unwrap().to_owned();
    app.wait_until_projector_blocked().await;
    let cancelled: Value = app.cancel_order(&user, &id).await.json().await.unwrap();
    assert_eq!(cancelled["version"], 2);
    let token = cancelled["consistency_token"].as_str().unwrap();

    // Search is behind: it shows the order placed, at version 1.
    let shown = |list: &Value| -> Value {
        let orders = list["orders"].as_array().unwrap();
        let matching: Vec<&Value> = orders.iter().filter(|o| o["id"] == id.as_str()).collect();
        assert_eq!(
            matching.len(),
            1,
            "order {id} listed {} times",
            matching.len()
        );
        matching[0].clone()
    };
    let (source, list) = app.list(&user, "/api/orders").await;
    assert_eq!(source, "read-model");
    assert_eq!(shown(&list)["status"], "placed");
    assert_eq!(shown(&list)["version"], 1);

    // With the token, the write side's newer version replaces it.
    let (source, list) = app
        .list(&user, &format!("/api/orders?consistency_token={token}"))
        .await;
    assert_eq!(source, "merged");
    let merged = shown(&list);
    assert_eq!(merged["status"], "cancelled", "{list}");
    assert_eq!(merged["version"], 2);
    assert_eq!(
        merged["visible"], false,
        "search does not show version 2 yet"
    );
    assert!(order_ids(&list).contains(&earlier));

    // Once the pipeline goes on, search shows it and the token adds nothing.
    hold.release().await;
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let (source, list) = app
            .list(&user, &format!("/api/orders?consistency_token={token}"))
            .await;
        if source == "read-model" {
            assert_eq!(shown(&list)["status"], "cancelled");
            assert_eq!(shown(&list)["version"], 2);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 2 never became visible"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn summary(app: &crate::helpers::TestApp, user: &crate::helpers::TestUser) -> Value {
    let response = app.get(user, "/api/summary").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_summary_counts_exactly_once_even_when_every_event_is_delivered_again_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    let empty = summary(&app, &user).await;
    assert_eq!(empty["orders_placed"], 0);

    let mut ids = vec![];
    for (sku, qty, price, currency) in [
        ("A", 2, 500, "USD"),
        ("B", 1, 1999, "USD"),
        ("C", 3, 100, "EUR"),
    ] {
        let response = app
            .place_order(
                &user,
                &json!({ "items": [{ "sku": sku, "quantity": qty, "unit_price_cents": price }],
                         "currency": currency }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["currency"], currency);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    app.place_simple_order(&other, "NOT-MINE").await;
    let cancel = app.cancel_order(&user, &ids[1]).await;
    assert_eq!(cancel.status(), StatusCode::OK);
    for _ in 0..4 {
        stream.next_order_visible().await;
    }
    let expected = json!({ "USD": 1000, "EUR": 300 });
    let before = summary(&app, &user).await;
    assert_eq!(before["orders_placed"], 3);
    assert_eq!(before["orders_cancelled"], 1);
    assert_eq!(before["spent_cents"], expected);

    // Deliver every event again, as after a crash between indexing and marking.
    let notices_before = app.count("SELECT count(*) FROM notices").await;
    sqlx::query("UPDATE outbox SET published_at = NULL")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('sightline_outbox', '')")
        .execute(&app.db)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while app
        .count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = summary(&app, &user).await;
    assert_eq!(after["orders_placed"], 3);
    assert_eq!(after["orders_cancelled"], 1);
    assert_eq!(after["spent_cents"], expected);
    assert_eq!(
        app.count("SELECT count(*) FROM notices").await,
        notices_before
    );
    let other_summary = summary(&app, &other).await;
    assert_eq!(other_summary["orders_placed"], 1);
}

#[tokio::test]
async fn a_bad_currency_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let response = app
        .place_order(
            &user,
            &json!({ "items": [{ "sku": "A", "quantity": 1, "unit_price_cents": 1 }],
                     "currency": "dollars" }),
        )
        .await;
    let body =
        crate::helpers::assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert_eq!(body["field"], "currency");
}

#[tokio::test]
async fn the_orders_page_shows_status_summary_and_cancels_without_javascript() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let cookie = crate::helpers::TestApp::session_cookie(&user);
    let order = app.place_simple_order(&user, "PAGE-CANCEL").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_visible(&user, &id).await;

    let page = app
        .http
        .get(app.url("/orders"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(r#"action="/orders/{id}/cancel""#)),
        "{page}"
    );
    assert!(page.contains(r#"id="summary-placed">1<"#), "{page}");
    assert!(page.contains(r#"data-status="placed""#));

    let response = app
        .http
        .post(app.url(&format!("/orders/{id}/cancel")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/orders?consistency_token="),
        "{location}"
    );

    // Right after the redirect the page shows the cancellation, from the
    // write side if search has not caught up yet.
    let page = app
        .http
        .get(app.url(&location))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-status="cancelled""#), "{page}");
    assert!(!page.contains(&format!(r#"action="/orders/{id}/cancel""#)));

    // A cross-site cancel is refused.
    let response = app
        .http
        .post(app.url(&format!("/orders/{id}/cancel")))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_no_js_form_keeps_the_consistency_token_in_the_session_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let cookie = crate::helpers::TestApp::session_cookie(&user);
    // Hold the pipeline: a first order gets stuck in the projector, so the
    // form's order behind it cannot become searchable yet.
    let hold = app.hold_notices().await;
    app.place_simple_order(&user, "STUCK").await;
    app.wait_until_projector_blocked().await;
    let response = app
        .http
        .post(app.url("/orders"))
        .header("cookie", &cookie)
        .form(&[
            ("id", uuid::Uuid::new_v4().to_string().as_str()),
            ("sku", "SESSION-TOKEN"),
            ("quantity", "1"),
            ("unit_price_cents", "100"),
            ("note", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Plain /orders, no token in the URL: the session carries it.
    let page = app
        .http
        .get(app.url("/orders"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("SESSION-TOKEN"), "{page}");
    assert!(page.contains(r#"data-state="pending""#), "{page}");

    // An API list without a token only shows what search has.
    let (_, list) = app.list(&user, "/api/orders").await;
    assert!(!list.to_string().contains("SESSION-TOKEN"), "{list}");
    hold.release().await;
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    assert_eq!(
        app.get(&user, "/api/orders").send().await.unwrap().status(),
        StatusCode::OK
    );
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    let response = app.get(&user, "/api/orders").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let page = app
        .http
        .get(app.url("/orders"))
        .header("cookie", crate::helpers::TestApp::session_cookie(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()["location"], "/login");
}

/// Relay batches may run concurrently, so an order's version 1 can finish
/// after its version 2: a notice for it then would describe an order search
/// no longer shows.
#[tokio::test]
async fn a_notice_older_than_one_already_recorded_is_not_recorded() {
    use sightline::visibility::notice_log::{self, NewNotice, ORDER_VISIBLE};

    let app = spawn_app().await;
    let user = app.new_user().await;
    let user_id = app.user_id(&user).await;
    let order_id = uuid::Uuid::new_v4();
    let notice = |order_version, status| NewNotice {
        user_id,
        order_id,
        order_version,
        kind: ORDER_VISIBLE,
        status,
        error: None,
        committed_at: None,
    };
    let newer = notice_log::record(&app.db, &[notice(2, "cancelled")])
        .await
        .unwrap();
    assert_eq!(newer.len(), 1);
    let older = notice_log::record(&app.db, &[notice(1, "placed")])
        .await
        .unwrap();
    assert!(older.is_empty(), "an older version was noticed: {older:?}");
    let both_at_once = notice_log::record(&app.db, &[notice(3, "placed"), notice(4, "x")])
        .await
        .unwrap();
    assert_eq!(
        both_at_once.len(),
        2,
        "one batch may carry several versions"
    );
    // A redelivered batch may carry them newest first: the older one would
    // come after the newer on the stream, so it is not noticed.
    let newest_first = notice_log::record(&app.db, &[notice(6, "placed"), notice(5, "x")])
        .await
        .unwrap();
    let versions: Vec<i32> = newest_first.iter().map(|n| n.order_version).collect();
    assert_eq!(versions, [6], "a version noticed after a newer one");
}

/// Place-then-cancel with four relay batches in flight: whatever order the
/// batches finish in, a stream never shows an order going back to an older
/// version, and each order's last notice matches what search shows.
#[tokio::test]
async fn with_concurrent_batches_an_orders_notices_never_go_back_a_version() {
    let mut settings = crate::helpers::test_settings().await;
    settings.relay_concurrency = 4;
    let app = crate::helpers::spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    const ORDERS: usize = 24;
    let mut ids = Vec::new();
    for n in 0..ORDERS {
        let order = app.place_simple_order(&user, &format!("RACE-{n}")).await;
        let id = order["id"].as_str().unwrap().to_owned();
        let response = app.cancel_order(&user, &id).await;
        assert_eq!(response.status(), StatusCode::OK);
        ids.push(id);
    }

    let mut last_version: std::collections::HashMap<String, i64> = Default::default();
    while ids.iter().any(|id| last_version.get(id) != Some(&2)) {
        let notice = stream.next_order_visible().await;
        let body = notice.json();
        let (id, version) = (visible_id(&notice), body["version"].as_i64().unwrap());
        let before = last_version.insert(id.clone(), version);
        assert!(
            before.is_none_or(|b| b < version),
            "order {id}: version {version} noticed after {before:?}"
        );
        if version == 2 {
            assert_eq!(body["status"], "cancelled");
        }
    }
    let (_, list) = app.list(&user, "/api/orders?limit=100").await;
    let statuses: Vec<&str> = list["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["cancelled"; ORDERS], "{list}");
}
