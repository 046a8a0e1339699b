//! Accounts as ASVS levels 1–2 ask: common passwords refused (sign-up and
//! change), changing the password (it ends the user's other sessions, and a
//! wrong current password counts as a failed login), usernames unique
//! whatever their case (and the migration that makes them so refusing to
//! merge existing collisions), and the 12-hour idle timeout by default.

use std::process::Command;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

use crate::helpers::{
    TestApp, TestUser, assert_error, remove_test_data, spawn_app, spawn_app_with, test_settings,
};

const PASSWORD_PATH: &str = "/api/users/me/password";

/// The migration that makes usernames unique whatever their case.
const CASELESS_USERNAMES: i64 = 20261230000001;

async fn change_password(app: &TestApp, user: &TestUser, current: &str, new: &str) -> Response {
    app.http
        .post(app.url(PASSWORD_PATH))
        .bearer_auth(&user.token)
        .json(&json!({ "current_password": current, "new_password": new }))
        .send()
        .await
        .unwrap()
}

async fn another_session(app: &TestApp, user: &TestUser) -> TestUser {
    let response = app.log_in(&user.username, &user.password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    TestUser {
        token: body["token"].as_str().unwrap().to_owned(),
        ..user.clone()
    }
}

async fn status_of(app: &TestApp, user: &TestUser) -> StatusCode {
    app.get(user, "/api/orders").send().await.unwrap().status()
}

fn form_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_common_password_is_refused_at_sign_up_whatever_its_case() {
    let app = spawn_app().await;
    for password in ["password1", "iloveyou", "QwertyUIOP", "TRUSTNO1"] {
        let response = app.sign_up("ada", password).await;
        let body = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "common_password",
        )
        .await;
        assert_eq!(body["field"], "password", "for {password:?}");
        assert!(
            body["error"].as_str().unwrap().contains("too common"),
            "{body}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
    // A password of the same length that is on no list is fine.
    assert_eq!(
        app.sign_up("ada", "plum-kettle-9").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn the_sign_up_form_refuses_a_common_password_and_shows_why() {
    let app = spawn_app().await;
    let response = form_client()
        .post(app.url("/signup"))
        .form(&[("username", "grace"), ("password", "baseball")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(page.contains("too common"), "{page}");
    assert!(
        page.contains(r#"value="grace""#),
        "the name is kept: {page}"
    );
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session_and_keeps_this_one() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let laptop = another_session(&app, &user).await;
    let phone = another_session(&app, &user).await;
    let bystander = app.new_user().await;

    let response = change_password(&app, &user, &user.password, "a new plum kettle").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_eq!(status_of(&app, &user).await, StatusCode::OK);
    for other in [&laptop, &phone] {
        assert_eq!(status_of(&app, other).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(status_of(&app, &bystander).await, StatusCode::OK);
    assert_error(
        app.log_in(&user.username, &user.password).await,
        StatusCode::UNAUTHORIZED,
        "bad_credentials",
    )
    .await;
    assert_eq!(
        app.log_in(&user.username, "a new plum kettle")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_common_or_short_new_password_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = another_session(&app, &user).await;

    let response = change_password(&app, &user, &user.password, "Sunshine").await;
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "common_password",
    )
    .await;
    assert_eq!(body["field"], "new_password");
    let response = change_password(&app, &user, &user.password, "short").await;
    let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert_eq!(body["field"], "new_password");

    assert_eq!(status_of(&app, &other).await, StatusCode::OK);
    assert_eq!(
        app.log_in(&user.username, &user.password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_current_password_is_refused_and_counted_as_a_failed_login() {
    let mut settings = test_settings().await;
    // Three attempts per client address, and next to no refill: the fourth
    // counted attempt, change or login, is refused.
    settings.login_address_burst = 3;
    settings.login_address_per_hour = 1;
    let app = spawn_app_with(settings).await;
    // Its sign-up login succeeded, so it gave its attempt back.
    let user = app.new_user().await;
    let other = another_session(&app, &user).await;

    for _ in 0..3 {
        let response = change_password(&app, &user, "not my password", "a new plum kettle").await;
        let body = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "wrong_password").await;
        assert_eq!(body["field"], "current_password");
    }
    let response = change_password(&app, &user, &user.password, "a new plum kettle").await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
    assert_error(
        app.log_in(&user.username, &user.password).await,
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
    )
    .await;

    // Nothing changed: the other session lives, the old password is stored.
    assert_eq!(status_of(&app, &other).await, StatusCode::OK);
    let id = app.user_id(&user).await;
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 2);
}

#[tokio::test]
async fn changing_the_password_wants_a_session() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url(PASSWORD_PATH))
        .json(&json!({ "current_password": "whatever1", "new_password": "a new plum kettle" }))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn the_account_page_changes_the_password_without_javascript() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = another_session(&app, &user).await;
    let browser = form_client();
    let r = browser
        .post(app.url("/login"))
        .form(&[("username", &user.username), ("password", &user.password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let orders = browser.get(app.url("/orders")).send().await.unwrap();
    let orders = orders.text().await.unwrap();
    assert!(orders.contains(r#"href="/account""#), "no link to /account");
    let page = browser.get(app.url("/account")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"action="/account/password""#), "{page}");

    // A common new password: the form again, with the reason.
    let r = browser
        .post(app.url("/account/password"))
        .header("Origin", &app.address)
        .form(&[
            ("current_password", user.password.as_str()),
            ("new_password", "football1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("too common"));
    assert_eq!(status_of(&app, &other).await, StatusCode::OK);

    // Cross-site: refused before anything is checked.
    let r = browser
        .post(app.url("/account/password"))
        .header("Origin", "https://evil.example")
        .form(&[
            ("current_password", user.password.as_str()),
            ("new_password", "a new plum kettle"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&app, &other).await, StatusCode::OK);

    let r = browser
        .post(app.url("/account/password"))
        .header("Origin", &app.address)
        .form(&[
            ("current_password", user.password.as_str()),
            ("new_password", "a new plum kettle"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/account?changed=true");
    let page = browser.get(app.url("/account?changed=true")).send().await;
    let page = page.unwrap().text().await.unwrap();
    assert!(page.contains("Password changed"), "{page}");
    // This browser is still signed in; the other session is over.
    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(status_of(&app, &other).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn usernames_are_unique_whatever_their_case_and_keep_the_case_typed() {
    let app = spawn_app().await;
    assert_eq!(
        app.sign_up("Ada", "plum-kettle-9").await.status(),
        StatusCode::CREATED
    );
    for taken in ["ada", "ADA", "aDa"] {
        let response = app.sign_up(taken, "another kettle").await;
        assert_error(response, StatusCode::CONFLICT, "username_taken").await;
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);

    let response = app.log_in("ADA", "plum-kettle-9").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let user = TestUser {
        username: "Ada".to_owned(),
        password: "plum-kettle-9".to_owned(),
        token: body["token"].as_str().unwrap().to_owned(),
    };
    // The name is kept as it was typed at sign-up.
    let order = app.place_simple_order(&user, "KETTLE-1").await;
    assert_eq!(order["username"], "Ada");
    // One account, one throttle key: failures as `aDA` count for `Ada`.
    assert_error(
        app.log_in("aDA", "wrong kettle").await,
        StatusCode::UNAUTHORIZED,
        "bad_credentials",
    )
    .await;
}

/// A database migrated up to (not including) `version`, as a server of the
/// previous release left it.
async fn migrated_before(database_url: &str, version: i64) -> sqlx::PgPool {
    let all = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations"
    )))
    .await
    .unwrap();
    assert!(
        all.version_exists(version),
        "no migration {version} in migrations/"
    );
    // The earlier migrations, as files of their own: sqlx's public API
    // applies a directory, not a prefix of one.
    let dir = std::env::temp_dir().join(format!("sightline-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for migration in all.iter().filter(|m| m.version < version) {
        let name = format!(
            "{}_{}.sql",
            migration.version,
            migration.description.replace(' ', "_")
        );
        std::fs::write(dir.join(name), migration.sql.as_bytes()).unwrap();
    }
    let earlier = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    // One connection, as `sightline migrate` has: sqlx's migrator keeps its
    // advisory lock on a connection whose migration failed, and a second
    // connection would wait for it until the first is closed.
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap();
    earlier.run(&db).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    db
}

#[tokio::test]
async fn the_caseless_usernames_migration_refuses_to_run_over_names_that_collide() {
    let settings = test_settings().await;
    let db = migrated_before(&settings.database_url, CASELESS_USERNAMES).await;
    for name in ["ada", "Ada", "grace", "GRACE", "Grace", "linus"] {
        sqlx::query("INSERT INTO users (id, username, password_hash) VALUES ($1, $2, 'x')")
            .bind(uuid::Uuid::new_v4())
            .bind(name)
            .execute(&db)
            .await
            .unwrap();
    }

    let error = sightline::db::migrate(&db)
        .await
        .expect_err("the migration runs over colliding names");
    let message = format!("{error:#}");
    for name in ["ada", "Ada", "grace", "GRACE", "Grace"] {
        assert!(
            message.contains(&format!("\"{name}\"")),
            "{name} is not named: {message}"
        );
    }
    assert!(!message.contains("linus"), "{message}");
    // Nothing merged, nothing applied.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 6);
    let applied: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1)")
            .bind(CASELESS_USERNAMES)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(!applied);

    // What an operator does then: rename all but one of each group, run again.
    sqlx::query("UPDATE users SET username = username || '_2' WHERE username IN ('Ada', 'GRACE')")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET username = 'grace_3' WHERE username = 'Grace'")
        .execute(&db)
        .await
        .unwrap();
    sightline::db::migrate(&db)
        .await
        .expect("the migration runs once the names differ");
    let duplicate =
        sqlx::query("INSERT INTO users (id, username, password_hash) VALUES ($1, 'LINUS', 'x')")
            .bind(uuid::Uuid::new_v4())
            .execute(&db)
            .await;
    assert!(duplicate.is_err(), "LINUS beside linus");
    db.close().await;
    remove_test_data(&settings);
}

/// ASVS 3.3.2 (level 2): a session unused for 12 hours ends. The default,
/// as `serve --help` shows it and docs/CONFIGURATION.md lists it.
#[test]
fn sessions_end_after_12_hours_unused_by_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--help"])
        .env_remove("SESSION_IDLE_MINUTES")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let entry = help
        .split("--session-idle-minutes")
        .nth(1)
        .and_then(|rest| rest.split("--").next())
        .expect("serve --help lists --session-idle-minutes")
        .to_owned();
    assert!(entry.contains("[default: 720]"), "{entry}");

    let document = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/CONFIGURATION.md"
    ))
    .unwrap();
    let row = document
        .lines()
        .find(|l| l.starts_with("| `SESSION_IDLE_MINUTES` |"))
        .expect("docs/CONFIGURATION.md has a SESSION_IDLE_MINUTES row");
    assert!(row.contains("| `720` |"), "{row}");
}
