//! Users and sessions: sign-up rules, login, logout, cookie auth and the
//! cross-site refusal.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, spawn_app};

#[tokio::test]
async fn sign_up_answers_201_and_the_new_user_can_log_in() {
    let app = spawn_app().await;

    let response = app.sign_up("alice_01-x", "correct horse").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice_01-x");

    let login = app.log_in("alice_01-x", "correct horse").await;
    assert_eq!(login.status(), StatusCode::OK);
}

#[tokio::test]
async fn usernames_and_passwords_at_the_limits_are_accepted() {
    let app = spawn_app().await;
    let cases = [
        ("abc".to_owned(), "8chars!!".to_owned()),
        ("a".repeat(32), "p".repeat(128)),
        ("A-Z_a-z_0-9".to_owned(), "pässwörd".to_owned()),
    ];
    for (username, password) in cases {
        let response = app.sign_up(&username, &password).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{username:?} / {} chars",
            password.chars().count()
        );
        assert_eq!(
            app.log_in(&username, &password).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_bad_username_is_refused_with_422_naming_the_field() {
    let app = spawn_app().await;
    for username in [
        "ab",
        "",
        "has space",
        "semi;colon",
        "ümlaut",
        "dot.name",
        &"a".repeat(33),
    ] {
        let response = app.sign_up(username, "correct horse").await;
        let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        assert_eq!(body["field"], "username", "for {username:?}");
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn a_bad_password_is_refused_with_422_naming_the_field() {
    let app = spawn_app().await;
    for password in ["1234567".to_owned(), "p".repeat(129), String::new()] {
        let response = app.sign_up("valid_name", &password).await;
        let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        assert_eq!(body["field"], "password", "for {} chars", password.len());
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn a_taken_username_is_refused_with_409() {
    let app = spawn_app().await;
    assert_eq!(
        app.sign_up("taken", "first password").await.status(),
        StatusCode::CREATED
    );

    let response = app.sign_up("taken", "second password").await;
    assert_error(response, StatusCode::CONFLICT, "username_taken").await;

    // The original account is untouched.
    assert_eq!(
        app.log_in("taken", "first password").await.status(),
        StatusCode::OK
    );
    assert_error(
        app.log_in("taken", "second password").await,
        StatusCode::UNAUTHORIZED,
        "bad_credentials",
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn login_returns_a_token_and_a_safe_session_cookie() {
    let app = spawn_app().await;
    app.sign_up("bob", "correct horse").await;

    let response = app.log_in("bob", "correct horse").await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("login sets a cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().expect("token is a string");
    assert!(!token.is_empty());

    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    // Secure by default (COOKIE_SECURE=true): browsers keep it over HTTPS
    // and on http://localhost and 127.0.0.1 (the browser tests sign in so).
    assert_eq!(attributes[0], format!("__Host-sightline_session={token}"));
    assert!(attributes.contains(&"Secure"), "{cookie}");
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
    assert!(attributes.contains(&"SameSite=Lax"), "{cookie}");
    assert!(attributes.contains(&"Path=/"), "{cookie}");

    // The token works as a bearer token.
    let response = app
        .http
        .get(app.url("/api/orders"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_401() {
    let app = spawn_app().await;
    app.sign_up("carol", "correct horse").await;

    let wrong_password = app.log_in("carol", "wrong horse!").await;
    assert!(!wrong_password.headers().contains_key("set-cookie"));
    assert_error(wrong_password, StatusCode::UNAUTHORIZED, "bad_credentials").await;

    let unknown_user = app.log_in("nobody", "correct horse").await;
    assert_error(unknown_user, StatusCode::UNAUTHORIZED, "bad_credentials").await;
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_with_429_and_retry_after() {
    let app = spawn_app().await;
    let bystander = app.new_user().await;
    app.sign_up("dave", "correct horse").await;

    let mut throttled = None;
    for attempt in 0..30 {
        let response = app.log_in("dave", "wrong horse!").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(attempt > 0, "throttled before any failure");
            throttled = Some(response);
            break;
        }
        assert_error(response, StatusCode::UNAUTHORIZED, "bad_credentials").await;
    }
    let response = throttled.expect("30 wrong passwords in a row were never throttled");
    let retry_after = |response: &reqwest::Response| -> u64 {
        response
            .headers()
            .get("retry-after")
            .expect("429 without Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After is a number of seconds")
    };
    assert!(retry_after(&response) >= 1);
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;

    // While throttled, even the right password opens no session.
    let sessions = app.count("SELECT count(*) FROM sessions").await;
    let response = app.log_in("dave", "correct horse").await;
    assert!(retry_after(&response) >= 1);
    assert!(!response.headers().contains_key("set-cookie"));
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, sessions);

    // Other users are not held up.
    let response = app.log_in(&bystander.username, &bystander.password).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn logging_out_ends_the_session() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other_session = {
        let response = app.log_in(&user.username, &user.password).await;
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    };

    let response = app.delete(&user, "/api/sessions").send().await.unwrap();
    assert!(
        response.status().is_success(),
        "logout answered {}",
        response.status()
    );

    let after = app.get(&user, "/api/orders").send().await.unwrap();
    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let post = app
        .place_order(
            &user,
            &json!({ "items": [{ "sku": "A", "quantity": 1, "unit_price_cents": 1 }] }),
        )
        .await;
    assert_error(post, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // Only that session ended: the user's other login still works.
    let other = TestUser {
        token: other_session,
        ..user
    };
    let response = app.get(&other, "/api/orders").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn logging_out_with_the_cookie_ends_the_session_and_clears_the_cookie() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let response = app
        .http
        .delete(app.url("/api/sessions"))
        .header("Cookie", TestApp::session_cookie(&user))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("__Host-sightline_session=;"),
        "{cleared}"
    );
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    let after = app
        .http
        .get(app.url("/api/orders"))
        .header("Cookie", TestApp::session_cookie(&user))
        .send()
        .await
        .unwrap();
    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_made_up_token_is_refused_with_401() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/api/orders"))
        .bearer_auth("not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let response = app
        .http
        .get(app.url("/api/orders"))
        .header("Cookie", "__Host-sightline_session=not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

fn one_item_order() -> Value {
    json!({ "items": [{ "sku": "COOKIE-1", "quantity": 1, "unit_price_cents": 100 }] })
}

#[tokio::test]
async fn the_session_cookie_authenticates_api_requests() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let cookie = TestApp::session_cookie(&user);

    // A same-origin browser request (as fetch() sends it) may write.
    let response = app
        .http
        .post(app.url("/api/orders"))
        .header("Cookie", &cookie)
        .header("Origin", &app.address)
        .header("Sec-Fetch-Site", "same-origin")
        .json(&one_item_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["username"], user.username.as_str());
    let id = order["id"].as_str().unwrap();

    // A request without Origin / Sec-Fetch-Site (a non-browser client) too.
    let response = app
        .http
        .post(app.url("/api/orders"))
        .header("Cookie", &cookie)
        .json(&one_item_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    for path in [
        "/api/orders".to_owned(),
        format!("/api/orders/{id}"),
        format!("/api/orders/{id}/visibility"),
    ] {
        let response = app
            .http
            .get(app.url(&path))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "GET {path} with the cookie"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 2);
}

#[tokio::test]
async fn a_cross_site_cookie_request_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let cookie = TestApp::session_cookie(&user);

    let cross_site = [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ];
    for (name, value) in cross_site {
        let response = app
            .http
            .post(app.url("/api/orders"))
            .header("Cookie", &cookie)
            .header(name, value)
            .json(&one_item_order())
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // Logging out is a state change too.
    let response = app
        .http
        .delete(app.url("/api/sessions"))
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;

    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    // The session survived the forged logout.
    let response = app.get(&user, "/api/orders").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bearer_request_is_not_refused_for_its_origin() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let response = app
        .post(&user, "/api/orders")
        .header("Origin", "https://evil.example")
        .header("Sec-Fetch-Site", "cross-site")
        .json(&one_item_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
}
