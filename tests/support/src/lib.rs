//! Test support shared by both test binaries (`tests/api`, `tests/faults`):
//! `spawn_app()` runs the application on port 0 against the real PostgreSQL
//! and Elasticsearch, with a fresh database and a unique index prefix per
//! test; [`sse`] reads event streams as a client does; [`proxy`] cuts the
//! database off as a crash would.

pub mod nats;
pub mod proxy;
pub mod sse;

pub use proxy::{TcpProxy, settings_behind_proxy};
pub use sse::{SseFrame, SseStream, visible_id};

use std::sync::Once;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sightline::config::{ReadStoreKind, Settings};
use sightline::shutdown::ShutdownSignal;
use sightline::startup::Application;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    #[allow(dead_code)] // for tests that need the bare port
    pub port: u16,
    /// The test's own database, for assertions on what was committed.
    pub db: PgPool,
    pub settings: Settings,
    /// A client that keeps no cookies; tests pass bearer tokens explicitly.
    pub http: reqwest::Client,
    /// The instance's write admission: its line and its refusals, this
    /// instance's alone (`/metrics` is the whole test process's).
    pub write_admission: std::sync::Arc<sightline::web::admission::WriteAdmission>,
    shutdown: ShutdownSignal,
    /// Makes one of the instance's background tasks panic (`supervision`).
    pub task_faults: std::sync::Arc<sightline::supervision::TaskFaults>,
    /// The instance's `run_until_stopped`, until [`TestApp::stopped`] takes it.
    run: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), String>>>>,
    /// Whether dropping this app removes the database and index (false for
    /// a further instance over another app's data: [`spawn_instance`]).
    owns_data: bool,
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
            sightline::telemetry::init_tracing(None);
        }
    });
    let mut settings = Settings::from_env().expect("Failed to read settings");
    settings.bind_addr = "127.0.0.1:0".parse().unwrap();
    let suffix = Uuid::new_v4().simple().to_string();
    settings.index_prefix = format!("test-{suffix}-");
    settings.relay_poll_ms = 500;
    // Every test client is 127.0.0.1, and many tests sign up several users:
    // the sign-up limit per address has tests of its own (login_limits.rs).
    settings.signup_address_burst = 100_000;
    // Many tests place orders as fast as a script would: the per-user write
    // limit has tests of its own (limits.rs), which set it.
    settings.write_burst = 0;
    // Likewise reads: tests poll and list as fast as they can; the per-user
    // read limit has its own test (limits.rs).
    settings.read_burst = 0;
    settings.read_store = test_read_store();

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

/// The read store this run's tests use: `SIGHTLINE_TEST_READ_STORE`
/// (`elasticsearch`, the default, or `postgres`). `scripts/test` runs the
/// `api` binary once in each mode: one suite, two modes (not the app's own
/// `READ_STORE`, so a developer's `.env` does not switch the tests).
pub fn test_read_store() -> ReadStoreKind {
    match std::env::var("SIGHTLINE_TEST_READ_STORE").as_deref() {
        Ok("postgres") => ReadStoreKind::Postgres,
        Ok("elasticsearch") | Ok("") | Err(_) => ReadStoreKind::Elasticsearch,
        Ok(other) => panic!("SIGHTLINE_TEST_READ_STORE={other:?}: use elasticsearch or postgres"),
    }
}

/// What the name of every test that needs the Elasticsearch read store ends
/// with: `scripts/test` leaves them out of the same-database pass by it
/// (`--skip needs_elasticsearch`), and libtest reports them as filtered out.
pub const NEEDS_ELASTICSEARCH: &str = "needs_elasticsearch";

/// For a test about Elasticsearch itself (its faults, the relay and
/// projector feeding it, rebuilds); call it first. Such a test is never run
/// and passed without asserting: in a same-database run it fails, telling
/// that it should have been left out by name, and in any run its name must
/// carry [`NEEDS_ELASTICSEARCH`] so that it can be.
pub fn require_elasticsearch() {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    if let Some(name) = thread.name().filter(|name| *name != "main") {
        assert!(
            name.ends_with(NEEDS_ELASTICSEARCH),
            "test {name} needs Elasticsearch: its name must end with `{NEEDS_ELASTICSEARCH}`, \
             so that a same-database run leaves it out"
        );
    }
    assert!(
        test_read_store() == ReadStoreKind::Elasticsearch,
        "this test needs the Elasticsearch read store, and this run is \
         SIGHTLINE_TEST_READ_STORE=postgres: leave it out with `-- --skip {NEEDS_ELASTICSEARCH}` \
         (scripts/test does)"
    );
}

/// A tool the project installs into its own `.local/` (scripts/tools): the
/// path of `relative` under `.local/tools`, e.g. `python/bin/python`. Fails
/// with the command that installs it when it is missing.
pub fn local_tool(relative: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.local/tools")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: scripts/tools installs it",
        path.display()
    );
    path
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings().await).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let mut app = spawn_instance(settings).await;
    app.owns_data = true;
    app
}

/// Another instance over the data of an app spawned before (same database
/// and index prefix in `settings`); dropping it leaves that data alone, so
/// it may come and go — e.g. restart on the port of a stopped instance.
pub async fn spawn_instance(settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("Failed to build the application");
    let port = app.port();
    let shutdown = app.shutdown_signal();
    let write_admission = app.write_admission();
    let task_faults = app.task_faults();
    let run =
        tokio::spawn(async move { app.run_until_stopped().await.map_err(|e| format!("{e:#}")) });
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
        write_admission,
        shutdown,
        task_faults,
        run: tokio::sync::Mutex::new(Some(run)),
        owns_data: false,
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

    /// Waits (at most `within`) for the instance to stop, however it was
    /// stopped; returns what `run_until_stopped` returned (the error as
    /// `main` would print it). Panics if it is still running.
    pub async fn stopped(&self, within: Duration) -> Result<(), String> {
        let handle = self
            .run
            .lock()
            .await
            .take()
            .expect("stopped() is called once");
        tokio::time::timeout(within, handle)
            .await
            .expect("the instance did not stop in time")
            .expect("run_until_stopped panicked")
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

    /// `POST /api/orders/{id}/cancel` as `user`.
    pub async fn cancel_order(&self, user: &TestUser, id: &str) -> Response {
        self.post(user, &format!("/api/orders/{id}/cancel"))
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

/// The value of one series in `/metrics` text, named exactly as Prometheus
/// prints it (`name` or `name{label="…"}`); `None` while it is not listed.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a metric value is a number"))
    })
}

pub fn order_ids(list: &Value) -> Vec<String> {
    list["orders"]
        .as_array()
        .expect("orders is an array")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// Contract-test helpers.

/// How long any single wait for the pipeline may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Asserts an error response of the contract: the status, JSON
/// `{"error": "<non-empty>", "code": "<code>"}` and an `X-Request-Id`.
/// Returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(
        response.status(),
        status,
        "expected {status} ({code}) from {}",
        response.url()
    );
    assert!(
        response.headers().contains_key("x-request-id"),
        "error response without X-Request-Id"
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "error body is {content_type:?}, not JSON"
    );
    let body: Value = response.json().await.expect("error body is JSON");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error body without a message: {body}"
    );
    assert_eq!(body["code"], code, "unexpected code in {body}");
    body
}

/// The key of the advisory lock every notice recording takes shared
/// (`sightline::locks::NOTICE_RECORD`). Holding it exclusively from a test
/// lets the projector index a batch but not record its notices (and, with
/// `READ_STORE=postgres`, holds every write at its notice).
pub const NOTICE_RECORD_LOCK: i64 = sightline::locks::NOTICE_RECORD;

/// A held notice-recording lock; dropping it (or `release`) lets the pipeline go on.
pub struct NoticeHold {
    conn: PgConnection,
}

impl NoticeHold {
    pub async fn release(mut self) {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(NOTICE_RECORD_LOCK)
            .execute(&mut self.conn)
            .await
            .unwrap();
        self.conn.close().await.unwrap();
    }
}

impl TestApp {
    pub fn delete(&self, user: &TestUser, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&user.token)
    }

    /// A cookie header that carries the user's session, as a browser sends it.
    pub fn session_cookie(user: &TestUser) -> String {
        // The default name: COOKIE_SECURE is on unless a test turns it off.
        format!(
            "{}={}",
            sightline::web::extract::session::SECURE_COOKIE_NAME,
            user.token
        )
    }

    /// Opens `GET /api/events` (optionally resuming from `last_event_id`).
    pub async fn open_events(&self, user: &TestUser, last_event_id: Option<&str>) -> SseStream {
        let mut request = self.get(user, "/api/events");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        SseStream::new(response)
    }

    /// Opens the event stream and returns it with the cursor of its `ready` frame.
    pub async fn open_events_ready(&self, user: &TestUser) -> (SseStream, String) {
        let mut stream = self.open_events(user, None).await;
        let ready = stream.next_event().await;
        assert_eq!(ready.event.as_deref(), Some("ready"), "{ready:?}");
        let id = ready.id.expect("ready carries an id");
        (stream, id)
    }

    /// `count(*)` of a query against the test database.
    /// The `/metrics` text of this app.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    /// Holds `user`'s row locked until the transaction ends: that user's
    /// next write (which takes the row first) waits inside its transaction,
    /// holding its connection (and its admission turn).
    pub async fn hold_user_row(
        &self,
        user: &TestUser,
    ) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let user_id = self.user_id(user).await;
        let mut held = self.db.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .execute(&mut *held)
            .await
            .unwrap();
        held
    }

    /// Waits (up to 10 s, else panics) until some session of this test's
    /// database waits on a lock — a write has reached a held row.
    pub async fn until_a_session_waits_on_a_lock(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = self
                .count(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .await;
            if waiting > 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no write ever reached the held lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn user_id(&self, user: &TestUser) -> Uuid {
        sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(&user.username)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Lists the user's orders (`path_and_query` starts with `/api/orders`);
    /// asserts 200 and returns the `X-Read-Source` header with the body.
    /// The body of `GET path` without a session (pages, /status, /metrics).
    pub async fn text_of(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// The JSON of `GET path` without a session (/readyz, /healthz).
    pub async fn json_of(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// The JSON of `GET path` as `user`.
    pub async fn user_json(&self, user: &TestUser, path: &str) -> Value {
        let response = self.get(user, path).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn list(&self, user: &TestUser, path_and_query: &str) -> (String, Value) {
        let response = self.get(user, path_and_query).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path_and_query}");
        let source = response
            .headers()
            .get("x-read-source")
            .expect("list responses carry X-Read-Source")
            .to_str()
            .unwrap()
            .to_owned();
        (source, response.json().await.unwrap())
    }

    pub async fn visibility(&self, user: &TestUser, id: &str) -> bool {
        let response = self
            .get(user, &format!("/api/orders/{id}/visibility"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], id);
        body["visible"].as_bool().expect("visible is a boolean")
    }

    /// Holds the notice-recording lock (see [`NOTICE_RECORD_LOCK`]).
    pub async fn hold_notices(&self) -> NoticeHold {
        let mut conn = PgConnection::connect(&self.settings.database_url)
            .await
            .unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(NOTICE_RECORD_LOCK)
            .execute(&mut conn)
            .await
            .unwrap();
        NoticeHold { conn }
    }

    /// Waits until the projector is blocked on a held notice lock: the batch
    /// it holds is searchable, and nothing committed later gets projected.
    pub async fn wait_until_projector_blocked(&self) {
        tokio::time::timeout(WAIT, async {
            loop {
                let waiting = self
                    .count(
                        "SELECT count(*) FROM pg_locks
                         WHERE locktype = 'advisory' AND NOT granted
                           AND database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database())",
                    )
                    .await;
                if waiting > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the projector never reached the held notice lock");
    }
}

/// Each test's database and index are removed when its app goes away, so
/// repeated runs do not pile up databases or run into Elasticsearch's shard
/// limit. `KEEP_TEST_DATA=1` keeps them for a post-mortem.
impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if self.owns_data {
            remove_test_data(&self.settings);
        }
    }
}

/// Drops the test database and the Elasticsearch indices of `settings` (made
/// by [`test_settings`]), unless `KEEP_TEST_DATA` is set. Blocks; callable
/// from `Drop`, also on a current-thread runtime.
pub fn remove_test_data(settings: &Settings) {
    if std::env::var("KEEP_TEST_DATA").is_ok() {
        return;
    }
    let database_url = settings.database_url.clone();
    let elasticsearch_url = settings.elasticsearch_url.clone();
    let prefix = settings.index_prefix.clone();
    // A thread of its own: Drop cannot await, and the test's runtime may
    // be a current-thread one that is busy running this very drop.
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(15), async {
                drop_test_index(&elasticsearch_url, &prefix).await;
                drop_test_database(&database_url).await;
            })
            .await;
        });
    });
    let _ = cleanup.join();
}

async fn drop_test_index(elasticsearch_url: &str, prefix: &str) {
    let base = elasticsearch_url.trim_end_matches('/');
    let http = reqwest::Client::new();
    // Concrete names: wildcard deletes are refused by default.
    let Ok(response) = http
        .get(format!("{base}/{prefix}*?expand_wildcards=all"))
        .send()
        .await
    else {
        return;
    };
    let Ok(indices) = response.json::<serde_json::Map<String, Value>>().await else {
        return;
    };
    let names: Vec<&str> = indices
        .keys()
        .map(String::as_str)
        .filter(|name| name.starts_with(prefix))
        .collect();
    if !names.is_empty() {
        let _ = http
            .delete(format!("{base}/{}", names.join(",")))
            .send()
            .await;
    }
}

async fn drop_test_database(database_url: &str) {
    let Ok(url) = url::Url::parse(database_url) else {
        return;
    };
    let name = url.path().trim_start_matches('/').to_owned();
    if !name.starts_with("test_") {
        return;
    }
    let Ok(settings) = Settings::from_env() else {
        return;
    };
    let Ok(mut admin) = PgConnection::connect(&settings.database_url).await else {
        return;
    };
    let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
}
