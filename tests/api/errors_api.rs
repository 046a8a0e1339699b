//! The error contract, request ids, health, readiness and metrics — and the
//! write path staying up while Elasticsearch is down.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_error, settings_behind_proxy, spawn_app, spawn_app_with, test_settings,
};

fn order_body() -> Value {
    json!({ "items": [{ "sku": "ERR-1", "quantity": 1, "unit_price_cents": 100 }] })
}

/// A raw `POST /api/orders` with the given content type and body.
async fn post_raw(
    app: &TestApp,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/api/orders"))
        .bearer_auth(token)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "RID").await;
    let id = order["id"].as_str().unwrap();

    let requests = [
        app.http.get(app.url("/healthz")),
        app.http.get(app.url("/readyz")),
        app.http.get(app.url("/metrics")),
        app.http.get(app.url("/api/orders")),
        app.http.get(app.url("/api/nope")),
        app.get(&user, "/api/orders"),
        app.get(&user, &format!("/api/orders/{id}")),
        app.get(&user, &format!("/api/orders/{id}/visibility")),
        app.get(&user, "/api/orders?limit=0"),
        app.post(&user, "/api/orders").json(&order_body()),
        app.http
            .post(app.url("/api/users"))
            .json(&json!({ "username": "x", "password": "y" })),
    ];
    let mut seen = std::collections::HashSet::new();
    for request in requests {
        let response = request.send().await.unwrap();
        let rid = response
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id on {}", response.url()))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!rid.is_empty());
        assert!(seen.insert(rid), "request ids are not unique");
    }
    // The SSE stream too.
    let response = app.get(&user, "/api/events").send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut body = order_body();
    body["note"] = json!("x".repeat(65 * 1024));

    let response = app.place_order(&user, &body).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = app
        .http
        .post(app.url("/api/users"))
        .json(&json!({ "username": "big_one", "password": "p".repeat(70 * 1024) }))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Just under the limit, the same note breaks a rule instead.
    body["note"] = json!("x".repeat(60 * 1024));
    let response = app.place_order(&user, &body).await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn every_api_route_without_a_session_is_401() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    let requests = [
        app.http.get(app.url("/api/orders")),
        app.http.post(app.url("/api/orders")).json(&order_body()),
        app.http.get(app.url(&format!("/api/orders/{id}"))),
        app.http
            .get(app.url(&format!("/api/orders/{id}/visibility?wait=1"))),
        app.http.get(app.url("/api/events")),
        app.http.delete(app.url("/api/sessions")),
        app.http
            .get(app.url("/api/orders"))
            .header("Authorization", "Bearer "),
        app.http
            .get(app.url("/api/orders"))
            .header("Authorization", "Basic dXNlcjpwYXNz"),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let json_text = order_body().to_string();

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = post_raw(&app, &user.token, content_type, json_text.clone()).await;
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    let response = app
        .http
        .post(app.url("/api/sessions"))
        .header("Content-Type", "text/plain")
        .body(json!({ "username": user.username, "password": user.password }).to_string())
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for body in [
        r#"{"items": ["#,
        "",
        "not json",
        r#"{"items": []} trailing"#,
    ] {
        let response = post_raw(&app, &user.token, Some("application/json"), body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

/// A body of the wrong shape names the field in plain words, never serde's
/// internals ("invalid type: string, expected i64 at line 1 column 35").
#[tokio::test]
async fn json_of_the_wrong_shape_is_422() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let item = json!({ "sku": "A", "quantity": 1, "unit_price_cents": 1 });
    let bodies = [
        (json!({ "items": "x" }), "items", "items must be a list"),
        (
            json!({ "items": [{ "sku": "A", "quantity": "2", "unit_price_cents": 1 }] }),
            "items[0].quantity",
            "items[0].quantity must be a whole number",
        ),
        (
            json!({ "items": [{ "sku": "A", "quantity": 1.5, "unit_price_cents": 1 }] }),
            "items[0].quantity",
            "items[0].quantity must be a whole number",
        ),
        (
            json!({ "items": [{ "sku": "A", "quantity": 1 }] }),
            "items[0].unit_price_cents",
            "items[0].unit_price_cents is required",
        ),
        (
            json!({ "items": [{ "sku": 7, "quantity": 1, "unit_price_cents": 1 }] }),
            "items[0].sku",
            "items[0].sku must be text",
        ),
        (
            json!({ "items": [item], "colour": "red" }),
            "colour",
            "colour is not a field this request takes",
        ),
        (
            json!({ "items": [{ "sku": "A", "quantity": 1, "unit_price_cents": 1, "discount": 5 }] }),
            "items[0].discount",
            "items[0].discount is not a field this request takes",
        ),
        (
            json!({ "items": [item], "id": "not-a-uuid" }),
            "id",
            "id must be an id such as",
        ),
        (
            json!({ "items": [item], "note": 5 }),
            "note",
            "note must be text",
        ),
        (json!({}), "items", "items is required"),
        (json!([item]), "", "the request body must be an object"),
    ];
    for (body, field, message) in bodies {
        let response = app.place_order(&user, &body).await;
        let answer =
            assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_shape").await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(message), "{body}: {answer}");
        for internal in ["expected", "line ", "column", "invalid type", "deserialize"] {
            assert!(
                !error.contains(internal),
                "{body}: serde's words in {error:?}"
            );
        }
        assert_eq!(answer["errors"][0]["field"], field, "{body}: {answer}");
        assert_eq!(answer["errors"][0]["message"], error, "{body}: {answer}");
    }
    let response = app
        .http
        .post(app.url("/api/users"))
        .json(&json!({ "username": "no_password" }))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_shape").await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for request in [
        app.get(&user, "/api/nope"),
        app.post(&user, "/api/nope").json(&json!({})),
        app.get(&user, "/api/orders/a/b/c"),
        app.http.get(app.url("/api/nope")),
    ] {
        let response = request.send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn a_known_route_with_the_wrong_method_is_a_json_405() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for request in [
        app.http
            .put(app.url("/api/orders"))
            .bearer_auth(&user.token),
        app.http.get(app.url("/api/sessions")),
        app.http.delete(app.url("/api/users")),
    ] {
        let response = request.send().await.unwrap();
        assert!(response.headers().contains_key("allow"));
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_report_a_healthy_instance() {
    let app = spawn_app().await;

    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["postgres"], "up");
    let elasticsearch = match crate::helpers::test_read_store() {
        sightline::config::ReadStoreKind::Postgres => "not used",
        sightline::config::ReadStoreKind::Elasticsearch => "up",
    };
    assert_eq!(body["elasticsearch"], elasticsearch);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_sightline_metrics() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "METRICS").await;
    app.wait_until_visible(&user, order["id"].as_str().unwrap())
        .await;

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    for metric in [
        "sightline_orders_placed_total",
        "sightline_notices_recorded_total",
        "sightline_outbox_backlog",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(metric)),
            "{metric} missing from /metrics"
        );
    }
    assert!(text.contains("# TYPE sightline_orders_placed_total counter"));
}

/// Elasticsearch down: writes keep working, reads that need search say 503.
#[tokio::test]
async fn with_elasticsearch_down_writes_work_and_searches_are_503_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let mut settings = test_settings().await;
    settings.elasticsearch_url = "http://127.0.0.1:1".to_owned();
    let app = spawn_app_with(settings).await;

    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "degraded is still ready");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["postgres"], "up");
    assert_eq!(body["elasticsearch"], "down");
    assert_eq!(body["status"], "degraded");

    let user = app.new_user().await;
    let response = app.place_order(&user, &order_body()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 1);

    // The owner can still follow the Location.
    let response = app
        .get(&user, &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-read-source"], "write-db");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["visible"], false);
    assert!(!app.visibility(&user, id).await);

    for path in [
        "/api/orders".to_owned(),
        "/api/orders?q=err".to_owned(),
        format!(
            "/api/orders?consistency_token={}",
            order["consistency_token"].as_str().unwrap()
        ),
    ] {
        let response = app.get(&user, &path).send().await.unwrap();
        assert!(
            response.headers().contains_key("retry-after"),
            "503 without Retry-After"
        );
        let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
        let text = body.to_string().to_lowercase();
        for secret in [
            "127.0.0.1",
            "refused",
            "error sending",
            "reqwest",
            "hyper",
            "tcp",
        ] {
            assert!(!text.contains(secret), "error leaks {secret:?}: {body}");
        }
    }
}

/// PostgreSQL unreachable: the instance is unready, requests that need the
/// database say 503 with Retry-After, and liveness still holds.
#[tokio::test]
async fn with_postgres_down_the_instance_is_unready_and_requests_are_503() {
    let (settings, proxy, direct_url) = settings_behind_proxy().await;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    proxy.cut();

    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["postgres"], "down");
    assert_eq!(body["status"], "unready");

    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the process still runs");

    for request in [
        app.post(&user, "/api/orders").json(&order_body()),
        app.get(&user, "/api/orders"),
        app.http
            .post(app.url("/api/users"))
            .json(&json!({ "username": "late_comer", "password": "correct horse" })),
    ] {
        let response = request.send().await.unwrap();
        assert!(
            response.headers().contains_key("retry-after"),
            "503 without Retry-After"
        );
        let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
        let text = body.to_string().to_lowercase();
        for secret in ["127.0.0.1", "sqlx", "refused", "pool"] {
            assert!(!text.contains(secret), "error leaks {secret:?}: {body}");
        }
    }

    let direct = sqlx::PgPool::connect(&direct_url).await.unwrap();
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&direct)
        .await
        .unwrap();
    assert_eq!(orders, 0);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&direct)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

/// Every broken rule is reported at once, each with its field, a code and a
/// message in words a person uses; the first is also `error`/`field`.
#[tokio::test]
async fn every_broken_rule_is_listed_with_its_field() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let body = json!({
        "items": [
            { "sku": "", "quantity": 0, "unit_price_cents": 10_000_001 },
            { "sku": "FINE", "quantity": 2, "unit_price_cents": 100 },
            { "sku": "X".repeat(65), "quantity": 1001, "unit_price_cents": -1 }
        ],
        "note": "n".repeat(1001),
        "currency": "usd"
    });
    let response = app.place_order(&user, &body).await;
    let answer = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let listed: Vec<(String, String, String)> = answer["errors"]
        .as_array()
        .expect("an errors list")
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap_or_default().to_owned(),
                e["code"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        (
            "currency",
            "invalid",
            "Currency must be a three-letter code such as USD",
        ),
        ("items[0].sku", "required", "SKU is required"),
        (
            "items[0].quantity",
            "out_of_range",
            "Quantity must be between 1 and 1,000",
        ),
        (
            "items[0].unit_price_cents",
            "out_of_range",
            "Price must be between $0.00 and $100,000.00",
        ),
        (
            "items[2].sku",
            "too_long",
            "SKU must be at most 64 characters",
        ),
        (
            "items[2].quantity",
            "out_of_range",
            "Quantity must be between 1 and 1,000",
        ),
        (
            "items[2].unit_price_cents",
            "out_of_range",
            "Price must be between $0.00 and $100,000.00",
        ),
        ("note", "too_long", "Note must be at most 1,000 characters"),
    ]
    .map(|(f, c, m)| (f.to_owned(), c.to_owned(), m.to_owned()));
    assert_eq!(listed, expected);
    assert_eq!(answer["field"], "currency");
    assert_eq!(
        answer["error"],
        "Currency must be a three-letter code such as USD"
    );
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // In euros, the price rule speaks euros.
    let body = json!({
        "items": [{ "sku": "A", "quantity": 1, "unit_price_cents": 10_000_001 }],
        "currency": "EUR"
    });
    let answer = assert_error(
        app.place_order(&user, &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    assert_eq!(
        answer["error"],
        "Price must be between €0.00 and €100,000.00"
    );
}

/// A query parameter of the wrong type is named, in plain words.
#[tokio::test]
async fn a_malformed_query_names_the_parameter() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let response = app
        .get(&user, "/api/orders?limit=abc")
        .send()
        .await
        .unwrap();
    let answer = assert_error(response, StatusCode::BAD_REQUEST, "bad_query").await;
    assert_eq!(
        answer["error"],
        "the query parameter limit must be a whole number"
    );
}
