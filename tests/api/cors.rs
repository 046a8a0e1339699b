//! CORS for frontends on other origins (`CORS_ALLOWED_ORIGINS`): an allowed
//! origin gets credentialed CORS and may write with the session cookie; any
//! other origin gets no CORS header at all and keeps being refused.

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with, test_settings};

const FRONTEND: &str = "http://frontend.example:5173";
const OTHER: &str = "https://evil.example";

async fn app_allowing_frontend() -> TestApp {
    let mut settings = test_settings().await;
    settings.cors_allowed_origins = vec![FRONTEND.to_owned(), String::new()];
    spawn_app_with(settings).await
}

fn order() -> Value {
    json!({ "items": [{ "sku": "CORS-1", "quantity": 1, "unit_price_cents": 100 }] })
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url("/api/orders"))
        .header(header::ORIGIN, origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,x-consistency-token",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_credentialed_cors() {
    let app = app_allowing_frontend().await;
    let response = preflight(&app, FRONTEND).await;
    assert!(response.status().is_success(), "{}", response.status());
    let h = response.headers();
    assert_eq!(header_text(h, "access-control-allow-origin"), FRONTEND);
    assert_eq!(header_text(h, "access-control-allow-credentials"), "true");
    let methods = header_text(h, "access-control-allow-methods").to_lowercase();
    for method in ["get", "post", "delete", "options"] {
        assert!(methods.contains(method), "methods: {methods}");
    }
    let allowed = header_text(h, "access-control-allow-headers").to_lowercase();
    for name in [
        "content-type",
        "authorization",
        "x-consistency-token",
        "last-event-id",
    ] {
        assert!(allowed.contains(name), "headers: {allowed}");
    }
    assert!(
        header_text(h, "vary").to_lowercase().contains("origin"),
        "Vary: Origin"
    );
    assert!(h.contains_key("x-request-id"), "every response has an id");
}

#[tokio::test]
async fn a_preflight_from_another_origin_gets_no_cors() {
    let app = app_allowing_frontend().await;
    for origin in [OTHER, "null", "http://frontend.example"] {
        let response = preflight(&app, origin).await;
        assert!(
            cors_headers(response.headers()).is_empty(),
            "{origin}: {:?}",
            response.headers()
        );
        assert!(
            !response.status().is_success(),
            "{origin}: not a preflight answer"
        );
    }
    // And without any allowlist, no origin gets CORS at all.
    let plain = spawn_app().await;
    let response = preflight(&plain, FRONTEND).await;
    assert!(cors_headers(response.headers()).is_empty());
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_cookie_post_from_an_allowed_origin_is_accepted_and_from_another_refused() {
    let app = app_allowing_frontend().await;
    let user = app.new_user().await;
    let cookie = TestApp::session_cookie(&user);

    // As a browser sends a credentialed fetch from the frontend.
    let response = app
        .http
        .post(app.url("/api/orders"))
        .header("Cookie", &cookie)
        .header(header::ORIGIN, FRONTEND)
        .header("Sec-Fetch-Site", "cross-site")
        .header("Sec-Fetch-Mode", "cors")
        .json(&order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let h = response.headers();
    assert_eq!(header_text(h, "access-control-allow-origin"), FRONTEND);
    assert_eq!(header_text(h, "access-control-allow-credentials"), "true");
    let exposed = header_text(h, "access-control-expose-headers").to_lowercase();
    for name in ["location", "x-read-source", "x-request-id", "retry-after"] {
        assert!(exposed.contains(name), "exposed: {exposed}");
    }
    let placed: Value = response.json().await.unwrap();
    assert_eq!(placed["username"], user.username.as_str());

    // Any other origin: refused, as before, and told nothing about CORS.
    for (origin, site) in [
        (OTHER, "cross-site"),
        ("http://frontend.example", "same-site"),
        ("null", "cross-site"),
    ] {
        let response = app
            .http
            .post(app.url("/api/orders"))
            .header("Cookie", &cookie)
            .header(header::ORIGIN, origin)
            .header("Sec-Fetch-Site", site)
            .json(&order())
            .send()
            .await
            .unwrap();
        assert!(cors_headers(response.headers()).is_empty(), "{origin}");
        assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // Cross-site without an Origin to vouch for it: refused too.
    let response = app
        .http
        .post(app.url("/api/orders"))
        .header("Cookie", &cookie)
        .header("Sec-Fetch-Site", "cross-site")
        .json(&order())
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);

    // Without the allowlist the same request from the frontend is refused.
    let plain = spawn_app().await;
    let user = plain.new_user().await;
    let response = plain
        .http
        .post(plain.url("/api/orders"))
        .header("Cookie", TestApp::session_cookie(&user))
        .header(header::ORIGIN, FRONTEND)
        .header("Sec-Fetch-Site", "cross-site")
        .json(&order())
        .send()
        .await
        .unwrap();
    assert!(cors_headers(response.headers()).is_empty());
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
}

/// What a frontend's `new EventSource(url, { withCredentials: true })` and
/// `fetch(…, { credentials: 'include' })` need on reads: the stream and the
/// list answer with credentialed CORS, and errors are readable too.
#[tokio::test]
async fn reads_and_the_event_stream_carry_cors_for_an_allowed_origin() {
    let app = app_allowing_frontend().await;
    let user = app.new_user().await;
    let cookie = TestApp::session_cookie(&user);

    let events = app
        .http
        .get(app.url("/api/events"))
        .header("Cookie", &cookie)
        .header(header::ORIGIN, FRONTEND)
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(
        header_text(events.headers(), "access-control-allow-origin"),
        FRONTEND
    );
    assert_eq!(
        header_text(events.headers(), "access-control-allow-credentials"),
        "true"
    );
    drop(events);

    let list = app
        .http
        .get(app.url("/api/orders"))
        .header("Cookie", &cookie)
        .header(header::ORIGIN, FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(
        header_text(list.headers(), "access-control-allow-origin"),
        FRONTEND
    );

    let unauthorized = app
        .http
        .get(app.url("/api/orders"))
        .header(header::ORIGIN, FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header_text(unauthorized.headers(), "access-control-allow-origin"),
        FRONTEND
    );
    assert_error(unauthorized, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // The module itself loads cross-origin (`import` is a CORS request).
    let module = app
        .http
        .get(app.url("/static/sightline.js"))
        .header(header::ORIGIN, FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(module.status(), StatusCode::OK);
    assert_eq!(
        header_text(module.headers(), "access-control-allow-origin"),
        FRONTEND
    );
}

#[tokio::test]
async fn the_session_cookie_can_be_made_same_site_none() {
    let mut settings = test_settings().await;
    settings.cookie_samesite = sightline::config::SameSite::None;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let response = app.log_in(&user.username, &user.password).await;
    let cookie = header_text(response.headers(), "set-cookie").to_owned();
    assert!(cookie.contains("SameSite=None"), "{cookie}");
    assert!(
        cookie.contains("; Secure"),
        "None is always Secure: {cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
}
