//! `spawn_app()`: the application on port 0 against the real PostgreSQL and
//! Elasticsearch, with a fresh database and a unique index prefix per test.

use std::sync::Once;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sightline::config::Settings;
use sightline::shutdown::ShutdownSignal;
use sightline::startup::Application;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub port: u16,
    /// The test's own database, for assertions on what was committed.
    pub db: PgPool,
    pub settings: Settings,
    /// A client that keeps no cookies; tests pass bearer tokens explicitly.
    pub http: reqwest::Client,
    shutdown: ShutdownSignal,
}

/// A signed-up, logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub username: String,
    pub password: String,
    pub token: String,
}

static TRACING: Once = Once::new();

/// Settings for a test: a fresh database, a unique index prefix, port 0.
pub async fn test_settings() -> Settings {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            sightline::telemetry::init_tracing();
        }
    });
    let mut settings = Settings::from_env().expect("Failed to read settings");
    settings.bind_addr = "127.0.0.1:0".parse().unwrap();
    let suffix = Uuid::new_v4().simple().to_string();
    settings.index_prefix = format!("test-{suffix}-");
    settings.relay_poll_ms = 500;

    let mut url = url::Url::parse(&settings.database_url).expect("DATABASE_URL is a URL");
    let db_name = format!("test_{suffix}");
    let mut admin = PgConnection::connect(url.as_str())
        .await
        .expect("PostgreSQL must be running: scripts/services start postgres");
    sqlx::query(&format!(r#"CREATE DATABASE "{db_name}""#))
        .execute(&mut admin)
        .await
        .expect("Failed to create the test database");
    url.set_path(&db_name);
    settings.database_url = url.to_string();
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings().await).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("Failed to build the application");
    let port = app.port();
    let shutdown = app.shutdown_signal();
    tokio::spawn(app.run_until_stopped());
    let db = PgPoolOptions::new()
        .max_connections(5)
        .connect(&settings.database_url)
        .await
        .expect("Failed to connect to the test database");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db,
        settings,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Stops the application gracefully (as SIGTERM would).
    pub fn stop(&self) {
        self.shutdown.trigger();
    }

    pub async fn sign_up(&self, username: &str, password: &str) -> Response {
        self.http
            .post(self.url("/api/users"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn log_in(&self, username: &str, password: &str) -> Response {
        self.http
            .post(self.url("/api/sessions"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Signs up and logs in a new user with a unique name.
    pub async fn new_user(&self) -> TestUser {
        let username = format!("u{}", &Uuid::new_v4().simple().to_string()[..12]);
        let password = "correct horse battery".to_owned();
        assert_eq!(
            self.sign_up(&username, &password).await.status(),
            StatusCode::CREATED
        );
        let response = self.log_in(&username, &password).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        TestUser {
            username,
            password,
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    pub fn get(&self, user: &TestUser, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&user.token)
    }

    pub fn post(&self, user: &TestUser, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&user.token)
    }

    pub async fn place_order(&self, user: &TestUser, body: &Value) -> Response {
        self.post(user, "/api/orders")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Places a one-item order and returns the 201 body.
    pub async fn place_simple_order(&self, user: &TestUser, sku: &str) -> Value {
        let response = self
            .place_order(
                user,
                &json!({ "items": [{ "sku": sku, "quantity": 2, "unit_price_cents": 150 }] }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Long-polls visibility until the order is visible (generous timeout).
    pub async fn wait_until_visible(&self, user: &TestUser, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let body: Value = self
                .get(user, &format!("/api/orders/{id}/visibility?wait=10"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["visible"] == true {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {id} never became visible"
            );
        }
    }
}

pub fn order_ids(list: &Value) -> Vec<String> {
    list["orders"]
        .as_array()
        .expect("orders is an array")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}
