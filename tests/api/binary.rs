//! `sightline serve`, the built binary, as a child process: a process of its
//! own (so its metrics are this test's alone) that real signals reach.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::Settings;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{SseStream, WAIT, metric_value, remove_test_data};

/// Removes a test's database and indices at the end, however it ends.
pub struct TestData(pub Settings);

impl Drop for TestData {
    fn drop(&mut self) {
        remove_test_data(&self.0);
    }
}

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `sightline serve` on the database and index prefix of
    /// `settings`, Elasticsearch at `elasticsearch_url`, with `env` on top;
    /// returns once `/healthz` answers.
    pub async fn start(
        settings: &Settings,
        elasticsearch_url: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("serve-{}{port}.log", settings.index_prefix));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
        command
            .arg("serve")
            .env("DATABASE_URL", &settings.database_url)
            .env("ELASTICSEARCH_URL", elasticsearch_url)
            .env("INDEX_PREFIX", &settings.index_prefix)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RELAY_POLL_MS", "500")
            .env(
                "READ_STORE",
                match settings.read_store {
                    sightline::config::ReadStoreKind::Postgres => "postgres",
                    sightline::config::ReadStoreKind::Elasticsearch => "elasticsearch",
                },
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("cannot start the sightline binary");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = server.http.get(server.url("/healthz")).send().await
                && r.status() == StatusCode::OK
            {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "sightline serve exited with {status} (log in {:?})",
                    server.log
                );
            }
            assert!(Instant::now() < deadline, "sightline serve never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM, as an orchestrator stopping the process does.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(Result::unwrap)
    }

    /// Signs up and logs in a new user; returns the bearer token.
    pub async fn new_user(&self) -> String {
        let username = format!("b{}", &Uuid::new_v4().simple().to_string()[..12]);
        let credentials = json!({ "username": username, "password": "correct horse battery" });
        let response = self
            .http
            .post(self.url("/api/users"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let response = self
            .http
            .post(self.url("/api/sessions"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Places a one-item order; returns its id.
    pub async fn place(&self, token: &str, sku: &str) -> String {
        let response = self
            .http
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .json(&json!({ "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 100 }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Opens `GET /api/events` and reads its `ready` frame.
    pub async fn open_events(&self, token: &str) -> SseStream {
        let response = self
            .http
            .get(self.url("/api/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = SseStream::new(response);
        let ready = stream.next_event().await;
        assert_eq!(ready.event.as_deref(), Some("ready"), "{ready:?}");
        stream
    }

    /// `/metrics` once `name` reads `value` (counters the relay moves when it
    /// marks a batch, a moment after the batch's notices went out).
    pub async fn metrics_once(&self, name: &str, value: f64) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let metrics = self.metrics().await;
                if metric(&metrics, name) == value {
                    return metrics;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} never read {value}"))
    }

    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }
}

/// The value of an unlabelled series (`name value`); 0 when not listed yet
/// (a counter nothing has moved).
pub fn metric(metrics: &str, name: &str) -> f64 {
    metric_value(metrics, name).unwrap_or(0.0)
}

/// Runs the command `sightline <args>` to its end against the database and
/// indices of `settings`; returns whether it succeeded, its stdout and its
/// stderr.
pub async fn cli(settings: &Settings, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .env("DATABASE_URL", &settings.database_url)
        .env("ELASTICSEARCH_URL", &settings.elasticsearch_url)
        .env("INDEX_PREFIX", &settings.index_prefix)
        .output()
        .await
        .expect("failed to run the sightline binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
