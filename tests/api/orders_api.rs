//! Orders: placing (rules, idempotency), reading one, listing (pagination,
//! search, read-your-writes), visibility polling, and an outbox replay.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, WAIT, assert_error, order_ids, spawn_app, visible_id};

fn item(sku: &str, quantity: i64, unit_price_cents: i64) -> Value {
    json!({ "sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents })
}

async fn orders_and_outbox(app: &TestApp) -> (i64, i64) {
    (
        app.count("SELECT count(*) FROM orders").await,
        app.count("SELECT count(*) FROM outbox").await,
    )
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------
// POST /api/orders

#[tokio::test]
async fn placing_an_order_answers_201_with_its_location_and_the_order() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let id = Uuid::new_v4();

    let response = app
        .place_order(
            &user,
            &json!({
                "id": id,
                "items": [item("APPLE", 3, 125), item("PEAR", 1, 99)],
                "note": "leave at the door"
            }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "location"), format!("/api/orders/{id}"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["username"], user.username.as_str());
    assert_eq!(
        body["items"],
        json!([item("APPLE", 3, 125), item("PEAR", 1, 99)])
    );
    assert_eq!(body["total_cents"], 3 * 125 + 99);
    assert_eq!(body["note"], "leave at the door");
    chrono::DateTime::parse_from_rfc3339(body["placed_at"].as_str().unwrap())
        .expect("placed_at is RFC 3339");
    assert_eq!(body["visible"], false);
    assert!(
        body["consistency_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

#[tokio::test]
async fn without_an_id_the_server_assigns_one() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let first = app.place_simple_order(&user, "A").await;
    let second = app.place_simple_order(&user, "A").await;

    let first_id: Uuid = first["id"].as_str().unwrap().parse().unwrap();
    let second_id: Uuid = second["id"].as_str().unwrap().parse().unwrap();
    assert_ne!(first_id, second_id);
    assert_eq!(first["note"], Value::Null);
    assert_eq!(orders_and_outbox(&app).await, (2, 2));
}

#[tokio::test]
async fn the_server_computes_the_total_and_refuses_one_sent_by_the_client() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let response = app
        .place_order(
            &user,
            &json!({ "items": [item("A", 2, 500)], "total_cents": 1 }),
        )
        .await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_shape").await;
    assert_eq!(orders_and_outbox(&app).await, (0, 0));

    let free = app
        .place_order(
            &user,
            &json!({ "items": [item("FREE", 7, 0), item("B", 2, 500)] }),
        )
        .await;
    assert_eq!(free.status(), StatusCode::CREATED);
    let body: Value = free.json().await.unwrap();
    assert_eq!(body["total_cents"], 1000);
}

#[tokio::test]
async fn orders_at_every_limit_are_accepted() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let sku = "S".repeat(64);
    let items: Vec<Value> = (0..100).map(|_| item(&sku, 1000, 10_000_000)).collect();
    // 1000 characters, 2000 bytes: the limit counts characters.
    let note = "é".repeat(1000);

    let response = app
        .place_order(&user, &json!({ "items": items, "note": note }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["total_cents"], 100 * 1000 * 10_000_000_i64);
    assert_eq!(body["items"].as_array().unwrap().len(), 100);
    assert_eq!(body["note"], note.as_str());
}

#[tokio::test]
async fn each_broken_rule_is_refused_with_422_naming_the_field_and_commits_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let ok = item("OK", 1, 100);
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "items": [] }), "items"),
        (
            json!({ "items": (0..101).map(|_| ok.clone()).collect::<Vec<_>>() }),
            "items",
        ),
        (json!({ "items": [item("", 1, 100)] }), "items[0].sku"),
        (
            json!({ "items": [item(&"x".repeat(65), 1, 100)] }),
            "items[0].sku",
        ),
        (json!({ "items": [item("A", 0, 100)] }), "items[0].quantity"),
        (
            json!({ "items": [item("A", 1001, 100)] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [item("A", -5, 100)] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [item("A", 1, -1)] }),
            "items[0].unit_price_cents",
        ),
        (
            json!({ "items": [item("A", 1, 10_000_001)] }),
            "items[0].unit_price_cents",
        ),
        (
            json!({ "items": [ok.clone(), ok.clone(), item("A", 1001, 1)] }),
            "items[2].quantity",
        ),
        (
            json!({ "items": [ok.clone()], "note": "n".repeat(1001) }),
            "note",
        ),
    ];
    for (body, field) in cases {
        let response = app.place_order(&user, &body).await;
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        assert_eq!(error["field"], field);
    }
    assert_eq!(orders_and_outbox(&app).await, (0, 0));
    assert_eq!(app.count("SELECT count(*) FROM order_items").await, 0);

    // A refused id stays free: the same id with a valid body is placed.
    let id = Uuid::new_v4();
    let refused = app
        .place_order(&user, &json!({ "id": id, "items": [item("A", 0, 1)] }))
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let placed = app
        .place_order(&user, &json!({ "id": id, "items": [item("A", 1, 1)] }))
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_order_and_its_order_placed_event_commit_together() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "EVENT-1").await;
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();

    let (event_type, schema_version, aggregate_id, aggregate_version, user_id, payload): (
        String,
        i32,
        Uuid,
        i32,
        Uuid,
        Value,
    ) = sqlx::query_as(
        "SELECT event_type, schema_version, aggregate_id, aggregate_version, user_id, payload
         FROM outbox",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(event_type, "OrderPlaced");
    assert_eq!(schema_version, 2);
    assert_eq!(aggregate_id, id);
    assert_eq!(aggregate_version, 1);
    assert_eq!(user_id, app.user_id(&user).await);
    assert_eq!(payload["order_id"], id.to_string());
    assert_eq!(payload["items"], order["items"]);
    assert_eq!(payload["total_cents"], 300);
}

#[tokio::test]
async fn a_faithful_retry_answers_200_with_the_same_order_and_token_and_duplicates_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let id = Uuid::new_v4();
    let body = json!({ "id": id, "items": [item("A", 1, 10), item("B", 2, 20)], "note": "hi" });

    let first = app.place_order(&user, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();

    let retry = app.place_order(&user, &body).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(header(&retry, "location"), format!("/api/orders/{id}"));
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["consistency_token"], first["consistency_token"]);
    for field in [
        "id",
        "username",
        "items",
        "total_cents",
        "note",
        "placed_at",
    ] {
        assert_eq!(retry[field], first[field], "{field}");
    }
    assert_eq!(orders_and_outbox(&app).await, (1, 1));

    // Once visible, a retry reports the order as it is now.
    app.wait_until_visible(&user, &id.to_string()).await;
    let later = app.place_order(&user, &body).await;
    assert_eq!(later.status(), StatusCode::OK);
    let later: Value = later.json().await.unwrap();
    assert_eq!(later["visible"], true);
    assert_eq!(later["consistency_token"], first["consistency_token"]);
    assert_eq!(orders_and_outbox(&app).await, (1, 1));
    assert_eq!(app.count("SELECT count(*) FROM notices").await, 1);
}

#[tokio::test]
async fn an_absent_note_and_a_null_note_are_the_same_content() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let id = Uuid::new_v4();

    let first = app
        .place_order(&user, &json!({ "id": id, "items": [item("A", 1, 1)] }))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let retry = app
        .place_order(
            &user,
            &json!({ "id": id, "items": [item("A", 1, 1)], "note": null }),
        )
        .await;
    assert_eq!(retry.status(), StatusCode::OK);

    let other_id = Uuid::new_v4();
    let first = app
        .place_order(
            &user,
            &json!({ "id": other_id, "items": [item("A", 1, 1)], "note": null }),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let retry = app
        .place_order(
            &user,
            &json!({ "id": other_id, "items": [item("A", 1, 1)] }),
        )
        .await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(orders_and_outbox(&app).await, (2, 2));
}

#[tokio::test]
async fn the_same_id_with_other_content_is_a_409_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let id = Uuid::new_v4();
    let original = json!({ "id": id, "items": [item("A", 1, 10), item("B", 2, 20)], "note": "hi" });
    let placed = app.place_order(&user, &original).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.unwrap();

    let variants = [
        json!({ "id": id, "items": [item("A", 1, 10), item("B", 3, 20)], "note": "hi" }),
        json!({ "id": id, "items": [item("A", 1, 10), item("B", 2, 21)], "note": "hi" }),
        json!({ "id": id, "items": [item("A", 1, 10), item("C", 2, 20)], "note": "hi" }),
        json!({ "id": id, "items": [item("B", 2, 20), item("A", 1, 10)], "note": "hi" }),
        json!({ "id": id, "items": [item("A", 1, 10)], "note": "hi" }),
        json!({ "id": id, "items": [item("A", 1, 10), item("B", 2, 20)], "note": "bye" }),
        json!({ "id": id, "items": [item("A", 1, 10), item("B", 2, 20)] }),
    ];
    for variant in &variants {
        let response = app.place_order(&user, variant).await;
        assert_error(response, StatusCode::CONFLICT, "id_reused").await;
    }
    assert_eq!(orders_and_outbox(&app).await, (1, 1));

    let response = app
        .get(&user, &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let now: Value = response.json().await.unwrap();
    assert_eq!(now["items"], placed["items"]);
    assert_eq!(now["note"], "hi");
}

#[tokio::test]
async fn another_users_order_id_is_a_409() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let id = Uuid::new_v4();
    let body = json!({ "id": id, "items": [item("A", 1, 10)] });
    assert_eq!(
        app.place_order(&alice, &body).await.status(),
        StatusCode::CREATED
    );

    // Even with exactly the same content.
    let response = app.place_order(&bob, &body).await;
    assert_error(response, StatusCode::CONFLICT, "id_taken").await;
    let response = app
        .place_order(&bob, &json!({ "id": id, "items": [item("Z", 9, 9)] }))
        .await;
    assert_error(response, StatusCode::CONFLICT, "id_taken").await;

    assert_eq!(orders_and_outbox(&app).await, (1, 1));
    let (_, list) = app.list(&bob, "/api/orders").await;
    assert!(order_ids(&list).is_empty());
}

#[tokio::test]
async fn two_identical_requests_at_once_give_one_201_and_one_200() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for round in 0..5 {
        let id = Uuid::new_v4();
        let body =
            json!({ "id": id, "items": [item("RACE", 1, 10)], "note": format!("round {round}") });
        let (a, b) = tokio::join!(app.place_order(&user, &body), app.place_order(&user, &body));
        let mut statuses = [a.status(), b.status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CREATED],
            "round {round}"
        );
        let a: Value = a.json().await.unwrap();
        let b: Value = b.json().await.unwrap();
        assert_eq!(a["id"], id.to_string());
        assert_eq!(a["consistency_token"], b["consistency_token"]);
        assert_eq!(a["placed_at"], b["placed_at"]);
    }
    assert_eq!(orders_and_outbox(&app).await, (5, 5));
}

// ---------------------------------------------------------------------------
// GET /api/orders/{id}

#[tokio::test]
async fn following_the_location_always_finds_the_order() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for n in 0..10 {
        let response = app
            .place_order(
                &user,
                &json!({ "items": [item(&format!("LOC-{n}"), 1, 5)], "note": "n" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = header(&response, "location");
        let placed: Value = response.json().await.unwrap();

        let response = app.get(&user, &location).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {location}");
        let source = header(&response, "x-read-source");
        let order: Value = response.json().await.unwrap();
        match source.as_str() {
            "write-db" => assert_eq!(order["visible"], false),
            "read-model" => assert_eq!(order["visible"], true),
            other => panic!("unexpected X-Read-Source {other}"),
        }
        for field in [
            "id",
            "username",
            "items",
            "total_cents",
            "note",
            "placed_at",
        ] {
            assert_eq!(order[field], placed[field], "{field}");
        }
    }
}

#[tokio::test]
async fn a_visible_order_is_read_from_the_read_model() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let placed = app.place_simple_order(&user, "VISIBLE").await;
    let id = placed["id"].as_str().unwrap();
    app.wait_until_visible(&user, id).await;

    let response = app
        .get(&user, &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-read-source"), "read-model");
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["visible"], true);
    assert_eq!(order["id"], id);
    assert_eq!(order["items"], placed["items"]);
    assert_eq!(order["total_cents"], 300);
}

#[tokio::test]
async fn unknown_malformed_and_other_users_orders_are_404() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let order = app.place_simple_order(&alice, "SECRET").await;
    let id = order["id"].as_str().unwrap();

    // Before and after it is visible, Bob cannot see Alice's order.
    let response = app
        .get(&bob, &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    app.wait_until_visible(&alice, id).await;
    for path in [
        format!("/api/orders/{id}"),
        format!("/api/orders/{}", Uuid::new_v4()),
        "/api/orders/not-a-uuid".to_owned(),
        "/api/orders/12345".to_owned(),
    ] {
        let response = app.get(&bob, &path).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

// ---------------------------------------------------------------------------
// GET /api/orders

#[tokio::test]
async fn the_list_shows_only_my_orders_newest_first_from_the_read_model() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let mut placed = vec![];
    for n in 0..4 {
        let order = app.place_simple_order(&user, &format!("NEWEST-{n}")).await;
        let id = order["id"].as_str().unwrap().to_owned();
        // Waiting orders the placements strictly in time.
        app.wait_until_visible(&user, &id).await;
        placed.push(id);
        let foreign = app.place_simple_order(&other, "FOREIGN").await;
        app.wait_until_visible(&other, foreign["id"].as_str().unwrap())
            .await;
    }

    let (source, list) = app.list(&user, "/api/orders").await;
    assert_eq!(source, "read-model");
    placed.reverse();
    assert_eq!(order_ids(&list), placed);
    assert!(
        list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| { o["visible"] == true && o["username"] == user.username.as_str() })
    );
    assert_eq!(list["next_cursor"], Value::Null);
}

#[tokio::test]
async fn paging_with_limit_and_next_cursor_walks_every_order_exactly_once() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut placed = HashSet::new();
    for n in 0..7 {
        let order = app.place_simple_order(&user, &format!("PAGE-{n}")).await;
        placed.insert(order["id"].as_str().unwrap().to_owned());
    }
    for id in &placed {
        app.wait_until_visible(&user, id).await;
    }

    let mut walked = vec![];
    let mut page_sizes = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orders?limit=3&cursor={c}"),
            None => "/api/orders?limit=3".to_owned(),
        };
        let (source, page) = app.list(&user, &path).await;
        assert_eq!(source, "read-model");
        page_sizes.push(page["orders"].as_array().unwrap().len());
        walked.extend(page["orders"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(page_sizes.len() < 10, "paging does not end");
    }
    assert_eq!(page_sizes, vec![3, 3, 1]);
    let ids: Vec<String> = walked
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 7);
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), placed);

    // Newest first across pages, and the same order as one big page.
    let millis: Vec<i64> = walked
        .iter()
        .map(|o| {
            chrono::DateTime::parse_from_rfc3339(o["placed_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    assert!(millis.windows(2).all(|w| w[0] >= w[1]), "{millis:?}");
    let (_, whole) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(order_ids(&whole), ids);
}

#[tokio::test]
async fn q_searches_the_skus_and_the_note() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let mut ids = vec![];
    for body in [
        json!({ "items": [item("RED-WIDGET", 1, 1)] }),
        json!({ "items": [item("BLUE-GADGET", 1, 1)], "note": "gift for grandma" }),
        json!({ "items": [item("GREEN-WIDGET", 1, 1), item("BLUE-SPROCKET", 1, 1)], "note": "rush" }),
    ] {
        let response = app.place_order(&user, &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let order: Value = response.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let foreign = app.place_simple_order(&other, "RED-WIDGET").await;
    app.wait_until_visible(&other, foreign["id"].as_str().unwrap())
        .await;
    for id in &ids {
        app.wait_until_visible(&user, id).await;
    }

    let search = |q: &str| {
        let app = &app;
        let user = &user;
        let q = q.to_owned();
        async move {
            let (source, list) = app
                .list(user, &format!("/api/orders?q={}", urlencode(&q)))
                .await;
            assert_eq!(source, "read-model");
            order_ids(&list).into_iter().collect::<HashSet<_>>()
        }
    };
    let set = |picks: &[usize]| {
        picks
            .iter()
            .map(|i| ids[*i].clone())
            .collect::<HashSet<_>>()
    };
    assert_eq!(search("widget").await, set(&[0, 2]));
    assert_eq!(search("grandma").await, set(&[1]));
    assert_eq!(search("blue").await, set(&[1, 2]));
    assert_eq!(search("sprocket").await, set(&[2]));
    assert_eq!(search("red widget").await, set(&[0]));
    assert_eq!(search("RUSH").await, set(&[2]));
    assert_eq!(search("nothing-like-this").await, set(&[]));
    // As people type: every word matches the beginning of a word.
    assert_eq!(search("wid").await, set(&[0, 2]));
    assert_eq!(search("gr").await, set(&[1, 2]));
    assert_eq!(search("bl spr").await, set(&[2]));
    assert_eq!(search("red wid").await, set(&[0]));
    assert_eq!(search("idget").await, set(&[]), "not the middle of a word");
    assert_eq!(search("widgets").await, set(&[]), "not more than the word");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn bad_list_parameters_are_400() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for (query, code) in [
        ("limit=abc", "bad_query"),
        ("limit=0", "bad_query"),
        ("limit=101", "bad_query"),
        ("limit=-1", "bad_query"),
        ("cursor=garbage!", "bad_cursor"),
        ("cursor=Z2FyYmFnZQ", "bad_cursor"),
        ("consistency_token=garbage", "bad_consistency_token"),
    ] {
        let response = app
            .get(&user, &format!("/api/orders?{query}"))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, code).await;
    }
    let response = app
        .get(&user, "/api/orders")
        .header("X-Consistency-Token", "garbage")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "bad_consistency_token").await;

    // The limits themselves are fine, and an empty cursor or token is none
    // (`?cursor=` from a template with nothing to fill in; Schemathesis
    // sends them as valid strings).
    for query in ["limit=1", "limit=100", "cursor=", "consistency_token="] {
        let (source, _) = app.list(&user, &format!("/api/orders?{query}")).await;
        assert_eq!(source, "read-model");
    }
}

/// Each order placed is in the very next list that presents its token, in
/// whatever state the pipeline is: `merged` from the write side while not
/// visible, from the read model once it is.
#[tokio::test]
async fn a_consistency_token_always_includes_my_orders_up_to_it() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut placed: Vec<String> = vec![];
    for n in 0..20 {
        let order = app.place_simple_order(&user, &format!("RYW-{n}")).await;
        placed.push(order["id"].as_str().unwrap().to_owned());
        let token = order["consistency_token"].as_str().unwrap();

        let request = if n % 2 == 0 {
            app.get(
                &user,
                &format!("/api/orders?limit=100&consistency_token={token}"),
            )
        } else {
            app.get(&user, "/api/orders?limit=100")
                .header("X-Consistency-Token", token)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let source = header(&response, "x-read-source");
        let list: Value = response.json().await.unwrap();
        let ids = order_ids(&list);
        for id in &placed {
            assert_eq!(
                ids.iter().filter(|i| *i == id).count(),
                1,
                "order {id} missing or doubled after placing #{n}"
            );
        }
        let pending = list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["visible"] == false)
            .count();
        if pending > 0 {
            assert_eq!(source, "merged");
        } else {
            assert_eq!(source, "read-model");
        }
    }

    for id in &placed {
        app.wait_until_visible(&user, id).await;
    }
    let (source, list) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(source, "read-model");
    assert_eq!(order_ids(&list).len(), 20);
}

/// With the pipeline held, an order is deterministically not yet projected:
/// only reads presenting its token (and the owner's GET by id) show it.
#[tokio::test]
async fn read_your_writes_while_the_pipeline_is_held_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let hold = app.hold_notices().await;
    let first = app.place_simple_order(&user, "FIRST").await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    app.wait_until_projector_blocked().await;

    let second = app
        .place_order(
            &user,
            &json!({ "items": [item("SECOND", 1, 700)], "note": "pending note" }),
        )
        .await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    let second_id = second["id"].as_str().unwrap().to_owned();
    let token = second["consistency_token"].as_str().unwrap().to_owned();

    // Searchable or not, neither notice is recorded: neither is "visible".
    assert!(!app.visibility(&user, &first_id).await);
    assert!(!app.visibility(&user, &second_id).await);

    // The owner reads it from the write side.
    let response = app
        .get(&user, &format!("/api/orders/{second_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-read-source"), "write-db");
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["visible"], false);
    assert_eq!(order["note"], "pending note");
    assert_eq!(order["total_cents"], 700);

    // A plain list is the read model, which does not have it yet.
    let (source, list) = app.list(&user, "/api/orders").await;
    assert_eq!(source, "read-model");
    assert!(!order_ids(&list).contains(&second_id));

    // With the token, by query or by header, it is there, as not visible.
    for request in [
        app.get(&user, &format!("/api/orders?consistency_token={token}")),
        app.get(&user, "/api/orders")
            .header("X-Consistency-Token", &token),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-read-source"), "merged");
        let list: Value = response.json().await.unwrap();
        assert_eq!(order_ids(&list), vec![second_id.clone(), first_id.clone()]);
        assert_eq!(list["orders"][0]["visible"], false);
        assert_eq!(list["orders"][0]["items"], second["items"]);
    }
    // A search still filters what the token adds.
    let (_, list) = app
        .list(
            &user,
            &format!("/api/orders?q=pending&consistency_token={token}"),
        )
        .await;
    assert_eq!(order_ids(&list), vec![second_id.clone()]);
    let (_, list) = app
        .list(
            &user,
            &format!("/api/orders?q=first&consistency_token={token}"),
        )
        .await;
    assert_eq!(order_ids(&list), vec![first_id.clone()]);

    hold.release().await;
    app.wait_until_visible(&user, &second_id).await;
    let (source, list) = app
        .list(&user, &format!("/api/orders?consistency_token={token}"))
        .await;
    assert_eq!(source, "read-model");
    assert_eq!(order_ids(&list), vec![second_id.clone(), first_id]);
    assert!(
        list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["visible"] == true)
    );
}

#[tokio::test]
async fn another_users_token_does_not_reveal_their_orders_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let hold = app.hold_notices().await;
    let order = app.place_simple_order(&alice, "ALICE").await;
    let token = order["consistency_token"].as_str().unwrap();

    let (_, list) = app
        .list(&bob, &format!("/api/orders?consistency_token={token}"))
        .await;
    assert!(order_ids(&list).is_empty());
    hold.release().await;
}

// ---------------------------------------------------------------------------
// GET /api/orders/{id}/visibility

#[tokio::test]
async fn visibility_turns_true_once_the_notice_is_recorded_and_a_long_poll_returns_it_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let hold = app.hold_notices().await;
    let order = app.place_simple_order(&user, "POLL").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_projector_blocked().await;

    assert!(!app.visibility(&user, &id).await);
    let response = app
        .get(&user, &format!("/api/orders/{id}/visibility?wait=0"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "id": id, "visible": false, "failed": false }));

    let long_poll = async {
        let response = app
            .get(&user, &format!("/api/orders/{id}/visibility?wait=30"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()
    };
    let (answer, ()) =
        tokio::time::timeout(WAIT, async { tokio::join!(long_poll, hold.release()) })
            .await
            .expect("the long poll did not answer");
    assert_eq!(answer["id"], id);
    assert_eq!(answer["visible"], true);

    assert!(app.visibility(&user, &id).await);
    let response = app
        .get(&user, &format!("/api/orders/{id}/visibility?wait=10"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["visible"], true);
}

#[tokio::test]
async fn a_long_poll_without_a_notice_answers_false_when_the_wait_ends_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let hold = app.hold_notices().await;
    let order = app.place_simple_order(&user, "SLOW").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_projector_blocked().await;

    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        WAIT,
        app.get(&user, &format!("/api/orders/{id}/visibility?wait=1"))
            .send(),
    )
    .await
    .expect("the long poll outlived its wait")
    .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["visible"], false);
    // It waited its second, and not much more.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "a poll with wait=1 answered after {took:?}"
    );
    hold.release().await;
}

#[tokio::test]
async fn bad_waits_are_400_and_unknown_or_other_users_orders_404() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let order = app.place_simple_order(&alice, "MINE").await;
    let id = order["id"].as_str().unwrap();

    for wait in ["31", "abc", "-1", "1.5", "99999999999999999999"] {
        let response = app
            .get(&alice, &format!("/api/orders/{id}/visibility?wait={wait}"))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "bad_query").await;
    }
    for path in [
        format!("/api/orders/{id}/visibility"),
        format!("/api/orders/{id}/visibility?wait=5"),
        format!("/api/orders/{}/visibility", Uuid::new_v4()),
        "/api/orders/nope/visibility".to_owned(),
    ] {
        let response = app.get(&bob, &path).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    app.wait_until_visible(&alice, id).await;
    let response = app
        .get(&bob, &format!("/api/orders/{id}/visibility"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

// ---------------------------------------------------------------------------
// Crash safety

/// As if the relay had crashed after projecting but before marking the event
/// published: the event is delivered again, and nothing is duplicated.
#[tokio::test]
async fn redelivering_a_projected_event_duplicates_nothing_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;
    let order = app.place_simple_order(&user, "ONCE").await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(visible_id(&events.next_order_visible().await), id);

    sqlx::query("UPDATE outbox SET published_at = NULL")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('sightline_outbox', '')")
        .execute(&app.db)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while app
            .count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await
            > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay never republished the event");

    assert_eq!(app.count("SELECT count(*) FROM notices").await, 1);
    let (_, list) = app.list(&user, "/api/orders").await;
    assert_eq!(order_ids(&list), vec![id.clone()]);
    assert!(app.visibility(&user, &id).await);

    // No second notice went out: the next event is the next order's.
    let next = app.place_simple_order(&user, "NEXT").await;
    assert_eq!(
        visible_id(&events.next_order_visible().await),
        next["id"].as_str().unwrap()
    );
}
