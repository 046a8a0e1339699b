//! Sessions and cookies: the `__Host-` cookie over HTTPS, the idle timeout
//! beside the absolute lifetime, "sign out everywhere", and what reaches the
//! logs (request ids, connection credentials).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, TestUser, assert_error, spawn_app, spawn_app_with, test_settings};

async fn session_count(app: &TestApp, user: &TestUser) -> i64 {
    let id = app.user_id(user).await;
    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn second_token(app: &TestApp, user: &TestUser) -> TestUser {
    let response = app.log_in(&user.username, &user.password).await;
    let body: Value = response.json().await.unwrap();
    TestUser {
        token: body["token"].as_str().unwrap().to_owned(),
        ..user.clone()
    }
}

async fn status_of(app: &TestApp, user: &TestUser) -> StatusCode {
    app.get(user, "/api/orders").send().await.unwrap().status()
}

#[tokio::test]
async fn over_https_the_session_cookie_is_host_prefixed_secure_and_http_only() {
    let mut settings = test_settings().await;
    settings.cookie_secure = true;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;

    let response = app.log_in(&user.username, &user.password).await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(attributes[0], format!("__Host-sightline_session={token}"));
    for wanted in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted} missing: {cookie}");
    }
    assert!(!cookie.to_lowercase().contains("domain="), "{cookie}");

    // The browser sends it back under that name, and only that name counts:
    // a plain cookie (which a sibling subdomain could plant) is not read.
    let with = |name: &str| {
        app.http
            .get(app.url("/api/orders"))
            .header("Cookie", format!("{name}={token}"))
            .send()
    };
    assert_eq!(
        with("__Host-sightline_session").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        with("sightline_session").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // Signing out clears the same cookie.
    let response = app
        .http
        .delete(app.url("/api/sessions"))
        .header("Cookie", format!("__Host-sightline_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("__Host-sightline_session=;"),
        "{cleared}"
    );
    assert!(cleared.contains("Secure"), "{cleared}");
}

/// The default is the secure cookie (above); plain HTTP on another host is
/// an explicit choice, and then the cookie is a plain one.
#[tokio::test]
async fn with_cookie_secure_off_the_cookie_is_plain_and_not_secure() {
    let mut settings = test_settings().await;
    settings.cookie_secure = false;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let response = app.log_in(&user.username, &user.password).await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("sightline_session="), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[test]
fn the_session_cookie_is_secure_unless_turned_off() {
    use clap::Parser;
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        settings: sightline::config::Settings,
    }
    let parsed = Serve::try_parse_from(["serve"]).unwrap();
    assert!(
        parsed.settings.cookie_secure,
        "COOKIE_SECURE must default to true"
    );
    let parsed = Serve::try_parse_from(["serve", "--cookie-secure", "false"]).unwrap();
    assert!(!parsed.settings.cookie_secure);
}

#[tokio::test]
async fn an_idle_session_ends_and_counts_as_expired_while_use_keeps_it_alive() {
    let mut settings = test_settings().await;
    settings.session_idle_minutes = 60;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let stored = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_as::<_, (f64, f64)>(
                "SELECT extract(epoch FROM expires_at - now())::float8,
                        extract(epoch FROM absolute_expires_at - now())::float8 FROM sessions",
            )
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let (idle_left, absolute_left) = stored(&app).await;
    assert!(
        (3500.0..=3600.0).contains(&idle_left),
        "ends in {idle_left} s"
    );
    assert!(
        absolute_left > 13.0 * 24.0 * 3600.0,
        "lifetime {absolute_left} s"
    );

    // 50 minutes pass unused; a request then moves the idle end forward.
    sqlx::query("UPDATE sessions SET expires_at = expires_at - interval '50 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(status_of(&app, &user).await, StatusCode::OK);
    let (idle_left, _) = stored(&app).await;
    assert!(
        idle_left > 3500.0,
        "use did not keep the session: {idle_left} s left"
    );

    // 61 minutes pass unused: the session is over, and is an expired row
    // (what the retention job's `expires_at < now()` deletes).
    sqlx::query("UPDATE sessions SET expires_at = expires_at - interval '61 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    let response = app.get(&user, "/api/orders").send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE expires_at < now()")
            .await,
        1
    );
}

#[tokio::test]
async fn use_never_carries_a_session_past_its_absolute_lifetime() {
    let mut settings = test_settings().await;
    settings.session_idle_minutes = 60;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    // Its lifetime ends in 10 minutes; it is in use.
    sqlx::query("UPDATE sessions SET absolute_expires_at = now() + interval '10 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(status_of(&app, &user).await, StatusCode::OK);
    let left: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM expires_at - now())::float8 FROM sessions")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(left <= 600.0, "the idle end passed the lifetime: {left} s");
    sqlx::query("UPDATE sessions SET absolute_expires_at = now() - interval '1 second', expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(status_of(&app, &user).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_the_user_only() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let laptop = second_token(&app, &user).await;
    let phone = second_token(&app, &user).await;
    let bystander = app.new_user().await;
    assert_eq!(session_count(&app, &user).await, 3);

    let response = app
        .delete(&phone, "/api/sessions?all=true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    for session in [&user, &laptop, &phone] {
        assert_eq!(status_of(&app, session).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(session_count(&app, &user).await, 0);
    assert_eq!(status_of(&app, &bystander).await, StatusCode::OK);
}

#[tokio::test]
async fn the_orders_page_has_a_sign_out_everywhere_button_that_works() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = second_token(&app, &user).await;
    let cookie = TestApp::session_cookie(&user);

    let page = app
        .http
        .get(app.url("/orders"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"action="/logout?all=true""#) && page.contains("Sign out everywhere"),
        "no sign-out-everywhere form on /orders"
    );

    let response = app
        .http
        .post(app.url("/logout?all=true"))
        .header("Cookie", &cookie)
        .header("Origin", &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/login");
    assert_eq!(status_of(&app, &other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(session_count(&app, &user).await, 0);
}

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_short_and_of_a_safe_alphabet() {
    let app = spawn_app().await;
    let echoed = |id: String| {
        let request = app.http.get(app.url("/healthz")).header("X-Request-Id", id);
        async move {
            let response = request.send().await.unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(echoed("req-42_a.b:c".to_owned()).await, "req-42_a.b:c");
    for bad in [
        "x".repeat(65),
        "a b".to_owned(),
        "<script>alert(1)</script>".to_owned(),
        "id\"with\"quotes".to_owned(),
        "ümlaut".to_owned(),
    ] {
        let id = echoed(bad.clone()).await;
        assert_ne!(id, bad);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{bad:?} was replaced by {id:?}, not a fresh id"
        );
    }
}

/// Runs the real binary with passwords in both connection URLs and reads its
/// log until it listens: neither password may appear, though the URLs are
/// named (Elasticsearch is unreachable, so its warning prints its URL).
#[tokio::test]
async fn connection_passwords_never_reach_the_log() {
    let settings = test_settings().await;
    let mut database_url = url::Url::parse(&settings.database_url).unwrap();
    database_url.set_password(Some("pg-s3cret-pw")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("serve")
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", database_url.as_str())
        .env(
            "ELASTICSEARCH_URL",
            "http://elastic:es-hunter2-pw@127.0.0.1:9",
        )
        .env("INDEX_PREFIX", &settings.index_prefix)
        .env("RUST_LOG", "debug")
        .env_remove("LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sightline binary runs");
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.lock().unwrap().contains("listening") && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few seconds of running too: the relay and the monitor try
    // Elasticsearch and log why they cannot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();

    assert!(
        log.contains("listening"),
        "the server did not start:\n{log}"
    );
    assert!(
        log.contains("Elasticsearch is not usable at http://elastic:***@127.0.0.1:9"),
        "the warning names the URL, masked:\n{log}"
    );
    assert!(
        !log.contains("pg-s3cret-pw"),
        "DATABASE_URL's password in the log:\n{log}"
    );
    assert!(
        !log.contains("es-hunter2-pw"),
        "ELASTICSEARCH_URL's password in the log:\n{log}"
    );

    // The same for a database that cannot be reached: the binary's last words.
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://app:pg-s3cret-pw@127.0.0.1:9/nowhere",
        )
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        text.contains("PostgreSQL is not reachable at 127.0.0.1:9"),
        "{text}"
    );
    assert!(!text.contains("pg-s3cret-pw"), "{text}");
    crate::helpers::remove_test_data(&settings);
}
