//! Bounded work per request (issue 24): input a person would never send is
//! refused having cost little, and gets a small answer. Asserted on the work
//! done (lines parsed and shown, bytes answered), never on time.

use reqwest::StatusCode;
use sightline::write_side::validation::{ITEMS_COUNT_MESSAGE, MAX_ITEMS};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

const PASSWORD: &str = "correct horse battery";

/// A browser-like client signed in through the pages.
async fn signed_in(app: &TestApp) -> reqwest::Client {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let username = format!("b{}", &Uuid::new_v4().simple().to_string()[..12]);
    let r = browser
        .post(app.url("/signup"))
        .form(&[("username", username.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    browser
}

async fn post_form(app: &TestApp, browser: &reqwest::Client, body: String) -> (StatusCode, String) {
    let r = browser
        .post(app.url("/orders"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// How many item lines the page's form shows.
fn lines_shown(page: &str) -> usize {
    page.matches(r#"name="sku""#).count()
}

#[tokio::test]
async fn a_64_kib_form_of_empty_item_lines_is_refused_showing_at_most_the_allowed_lines() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    // ~13,000 item lines in the 64 KiB a form may have: once 0.9 s of CPU
    // and a 21 MB page of 13,000 lines, each with its errors.
    let body = "sku=&".repeat(13_000);
    assert!(body.len() <= 65_536);
    let (status, page) = post_form(&app, &browser, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page:.500}");
    assert!(page.contains(ITEMS_COUNT_MESSAGE), "says why: {page:.2000}");
    let shown = lines_shown(&page);
    assert!(
        (1..=MAX_ITEMS).contains(&shown),
        "the form shows {shown} lines"
    );
    assert!(page.len() < 512 * 1024, "a {} byte answer", page.len());
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn the_form_allows_as_many_lines_as_the_json_path_and_not_one_more() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let lines = |n: usize| {
        let mut body = format!("id={}", Uuid::new_v4());
        for i in 0..n {
            body.push_str(&format!("&sku=MANY-{i}&quantity=1&unit_price=1.00"));
        }
        body
    };
    let (status, page) = post_form(&app, &browser, lines(MAX_ITEMS + 1)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains(ITEMS_COUNT_MESSAGE), "{page:.2000}");
    assert_eq!(lines_shown(&page), MAX_ITEMS);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    let (status, _) = post_form(&app, &browser, lines(MAX_ITEMS)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "100 lines are an order");
    assert_eq!(
        app.count("SELECT count(*) FROM order_items").await,
        MAX_ITEMS as i64
    );
}

#[tokio::test]
async fn a_refused_form_is_charged_to_the_write_limit_like_a_json_write() {
    let mut settings = test_settings().await;
    settings.write_burst = 1;
    settings.write_rate_per_min = 1;
    let app = spawn_app_with(settings).await;
    let browser = signed_in(&app).await;
    let (status, _) = post_form(
        &app,
        &browser,
        "sku=X&quantity=lots&unit_price=1.00".to_owned(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The limit was taken by the refused form: a good one now waits.
    let (status, page) = post_form(
        &app,
        &browser,
        "sku=X&quantity=1&unit_price=1.00".to_owned(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page:.2000}");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

/// No request holds a web connection for long: a statement past
/// `WEB_STATEMENT_TIMEOUT_MS` is cancelled by PostgreSQL, the request
/// answers 503 `busy`, and nothing is written.
#[tokio::test]
async fn a_write_held_past_the_statement_timeout_answers_busy_and_writes_nothing() {
    let mut settings = test_settings().await;
    settings.web_statement_timeout_ms = 300;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    // Placing an order takes the user's row lock; this holds it.
    let held = app.hold_user_row(&user).await;
    let response = app
        .place_order(
            &user,
            &serde_json::json!({"items": [{"sku": "HELD", "quantity": 1, "unit_price_cents": 100}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "busy", "{body}");
    held.rollback().await.unwrap();
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    // The connection is free again: the next write goes through.
    app.place_simple_order(&user, "AFTER").await;
}
