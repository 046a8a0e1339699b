//! The system under test: the release `sightline serve` binary as a child
//! process, each scenario with its own fresh database (`bench<pid>_<n>`), index
//! prefix (`bench<pid>-<n>-`) and free port, removed again afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Settings of the app that a scenario may set; every other scenario runs
/// with none of them in the environment, i.e. with the app's defaults.
pub const KNOBS: &[&str] = &[
    "READ_STORE",
    "RELAY_BATCH_SIZE",
    "RELAY_CONCURRENCY",
    "RELAY_POLL_MS",
    "RELAY_WAKE",
    "REFRESH_MODE",
    "INDEX_REFRESH_INTERVAL",
    "SSE_BUFFER",
    "SSE_HEARTBEAT_SECS",
    "DATABASE_MAX_CONNECTIONS",
    "PIPELINE_DATABASE_MAX_CONNECTIONS",
    "ROLES",
    "LOG_FORMAT",
    "MAX_CONNECTIONS",
    "BODY_TIMEOUT_SECS",
    "MAX_STREAMS_PER_USER",
    "MAX_STREAMS_PER_ADDRESS",
    "MAX_POLLS_PER_USER",
    "MAX_POLLS_PER_ADDRESS",
    "MAX_STATUS_STREAMS",
    "OPS_TOKEN",
    "WRITE_BURST",
    "WRITE_RATE_PER_MIN",
    "BUS",
    "NATS_STREAM",
    "NATS_MAX_AGE_HOURS",
    "PROJECTOR_CONCURRENCY",
];

/// Every server of the benchmark runs without the per-user write limit: its
/// users write far faster than a person (up to 80 orders/s each), and the
/// benchmark measures the pipeline, not the limiter.
const WRITE_LIMIT_OFF: (&str, &str) = ("WRITE_BURST", "0");

pub struct Bench {
    /// Connected to the `postgres` maintenance database.
    pub admin: PgPool,
    database_url: url::Url,
    pub es_url: String,
    /// Shared, pooled HTTP client for everything the benchmark sends.
    pub http: reqwest::Client,
    sightline: PathBuf,
    /// `target/bench`: results, server logs, scratch files.
    pub out_dir: PathBuf,
    /// Where servers run: a directory with no `.env` above it.
    work_dir: PathBuf,
    next: AtomicU32,
    /// `--server-env`: settings every server of this run gets, over the
    /// scenario's own (for trying a knob).
    pub server_env: Vec<(String, String)>,
    /// The maximum-rate search's offered rates, lowest first (`--rates`).
    pub rate_steps: Vec<u32>,
}

/// The server's default idle timeout (`SESSION_IDLE_MINUTES`), which seeded
/// sessions start with, as a sign-in's do.
const SESSION_IDLE_MINUTES: i32 = 12 * 60;

impl Bench {
    /// The Elasticsearch process, for its CPU during a step (`None` when it
    /// runs elsewhere or does not say).
    pub async fn elasticsearch_pid(&self) -> Option<u32> {
        let nodes: serde_json::Value = self
            .http
            .get(format!(
                "{}/_nodes/_local/process?filter_path=nodes.*.process.id",
                self.es_url
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let pid = nodes["nodes"].as_object()?.values().next()?["process"]["id"].as_u64()?;
        std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            .then_some(pid as u32)
    }
}

pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    pub base: String,
    /// This scenario's write database, for seeding users and sessions.
    pub db: PgPool,
    pub pid: u32,
    prefix: String,
    child: Child,
    pub log: PathBuf,
    /// The settings it was started with, for its helpers.
    knobs: Vec<(String, String)>,
    /// More instances on the same database and index prefix (two projectors,
    /// eight web instances), stopped before it.
    pub helpers: Vec<Helper>,
}

/// Another `sightline serve` of a scenario, with roles of its own.
pub struct Helper {
    pub roles: String,
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
}

impl Server {
    /// Every process of the scenario: the server, then its helpers.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.pid)
            .chain(self.helpers.iter().map(|h| h.pid))
            .collect()
    }

    /// Where clients can open streams: the server unless it runs no web
    /// role (`ROLES` among its knobs), and every web helper.
    pub fn web_addrs(&self) -> Vec<SocketAddr> {
        let web = |roles: &str| roles.split(',').any(|r| r.trim() == "web");
        let own = self
            .knobs
            .iter()
            .find(|(k, _)| k == "ROLES")
            .is_none_or(|(_, roles)| web(roles));
        own.then_some(self.addr)
            .into_iter()
            .chain(
                self.helpers
                    .iter()
                    .filter(|h| web(&h.roles))
                    .map(|h| h.addr),
            )
            .collect()
    }

    /// The base URL of every process (for `/metrics`).
    pub fn bases(&self) -> Vec<String> {
        std::iter::once(self.base.clone())
            .chain(self.helpers.iter().map(|h| format!("http://{}", h.addr)))
            .collect()
    }
}

impl Bench {
    pub async fn new() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("Failed to locate the bench binary")?;
        let exe_dir = exe.parent().context("bench binary has no directory")?;
        let sightline = exe_dir.join("sightline");
        if !sightline.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release` (scripts/bench does)",
                sightline.display()
            );
        }
        let target = exe_dir
            .parent()
            .context("bench binary is not under target/")?;
        let out_dir = target.join("bench");
        // Logs and metrics of this run only.
        let _ = std::fs::remove_dir_all(out_dir.join("logs"));
        std::fs::create_dir_all(out_dir.join("logs"))?;
        let work_dir = std::env::temp_dir().join(format!("sightline-bench-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)?;

        let database_url: url::Url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://sightline@127.0.0.1:5433/sightline".into())
            .parse()
            .context("Failed to parse DATABASE_URL")?;
        let es_url = std::env::var("ELASTICSEARCH_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:9200".into())
            .trim_end_matches('/')
            .to_owned();
        let mut admin_url = database_url.clone();
        admin_url.set_path("/postgres");
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(admin_url.as_str())
            .await
            .with_context(|| {
                let shown = sightline_core::config::redact_url(database_url.as_str());
                format!("PostgreSQL is not reachable at {shown} — start it with `scripts/services start postgres`")
            })?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let bench = Self {
            admin,
            database_url,
            es_url,
            http,
            sightline,
            out_dir,
            work_dir,
            next: AtomicU32::new(1),
            server_env: Vec::new(),
            rate_steps: crate::run::RATE_STEPS.to_vec(),
        };
        bench
            .http
            .get(format!("{}/_cluster/health", bench.es_url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            // The error would quote the URL, credentials and all.
            .map_err(reqwest::Error::without_url)
            .with_context(|| {
                format!(
                    "Elasticsearch is not reachable at {} — start it with `scripts/services start elasticsearch`",
                    sightline_core::config::redact_url(&bench.es_url)
                )
            })?;
        Ok(bench)
    }

    /// A fresh scenario number: database `bench<pid>_<n>`, indices
    /// `bench<pid>-<n>-*`.
    pub fn next_number(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Scenario `n`'s database. The bench's own process id is part of the
    /// name, so benchmarks run at once on one PostgreSQL (several worktrees
    /// on a shared machine) never take each other's data for leftovers.
    pub fn database_name(&self, n: u32) -> String {
        format!("bench{}_{n}", std::process::id())
    }

    /// Scenario `n`'s index prefix (see [`Bench::database_name`]).
    pub fn index_prefix(&self, n: u32) -> String {
        format!("bench{}-{n}-", std::process::id())
    }

    pub fn database_url(&self, name: &str) -> String {
        let mut url = self.database_url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    pub async fn create_database(&self, name: &str) -> anyhow::Result<PgPool> {
        self.drop_database(name).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&self.admin)
            .await
            .with_context(|| format!("Failed to create database {name}"))?;
        Ok(PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.database_url(name))
            .await?)
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("Failed to drop database {name}"))?;
        Ok(())
    }

    /// Deletes every index (hidden and closed ones too) matching `pattern`.
    pub async fn delete_indices(&self, pattern: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!(
                "{}/{pattern}?expand_wildcards=all&ignore_unavailable=true",
                self.es_url
            ))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Removes what interrupted runs left behind: the databases and
    /// indices of bench processes that no longer run (a run still going,
    /// from another worktree say, keeps its own).
    pub async fn remove_leftovers(&self) -> anyhow::Result<()> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname ~ '^bench[0-9]+_'")
                .fetch_all(&self.admin)
                .await?;
        let mut dead = std::collections::BTreeSet::new();
        for name in names {
            let pid = name["bench".len()..].split('_').next().unwrap_or_default();
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.drop_database(&name).await?;
                dead.insert(pid.to_owned());
            }
        }
        for pid in dead {
            self.delete_indices(&format!("bench{pid}-*")).await?;
        }
        Ok(())
    }

    /// Starts `sightline serve` on a fresh database and index prefix with
    /// the given settings (all others at their defaults) and waits until it
    /// is ready with Elasticsearch up.
    pub async fn start_server(
        &self,
        label: &str,
        knobs: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let n = self.next_number();
        let name = self.database_name(n);
        let prefix = self.index_prefix(n);
        self.create_database(&name).await?.close().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = self.out_dir.join("logs").join(format!("{n}-{label}.log"));
        let knobs: Vec<(String, String)> = knobs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut child = self.spawn(addr, &name, &prefix, &log, &knobs)?;
        let pid = child.id().context("server exited at once")?;
        let base = format!("http://{addr}");

        self.wait_ready(&mut child, &base, &log).await?;
        let db = PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.database_url(&name))
            .await?;
        Ok(Server {
            name,
            addr,
            base,
            db,
            pid,
            prefix,
            child,
            log,
            knobs,
            helpers: Vec::new(),
        })
    }

    /// Starts another instance beside `server` (same database, index
    /// prefix and settings) with `roles`, and waits until it is ready.
    pub async fn start_helper(&self, server: &mut Server, roles: &str) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = server.log.with_extension(format!(
            "{}.{}.log",
            server.helpers.len() + 1,
            roles.replace(',', "-")
        ));
        let mut knobs = server.knobs.clone();
        knobs.retain(|(k, _)| k != "ROLES");
        knobs.push(("ROLES".to_owned(), roles.to_owned()));
        let mut child = self.spawn(addr, &server.name, &server.prefix, &log, &knobs)?;
        let pid = child.id().context("a helper exited at once")?;
        self.wait_ready(&mut child, &format!("http://{addr}"), &log)
            .await?;
        server.helpers.push(Helper {
            roles: roles.to_owned(),
            addr,
            pid,
            child,
        });
        Ok(())
    }

    fn spawn(
        &self,
        addr: SocketAddr,
        database: &str,
        prefix: &str,
        log: &std::path::Path,
        knobs: &[(String, String)],
    ) -> anyhow::Result<Child> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(&self.sightline);
        command
            .arg("serve")
            .current_dir(&self.work_dir)
            .env("BIND_ADDR", addr.to_string())
            .env("DATABASE_URL", self.database_url(database))
            .env("ELASTICSEARCH_URL", &self.es_url)
            .env("INDEX_PREFIX", prefix)
            // Request logs would cost the server time under load.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        for knob in KNOBS {
            command.env_remove(knob);
        }
        command.env(WRITE_LIMIT_OFF.0, WRITE_LIMIT_OFF.1);
        for (key, value) in knobs {
            command.env(key, value);
        }
        for (key, value) in &self.server_env {
            command.env(key, value);
        }
        command
            .spawn()
            .with_context(|| format!("Failed to start {}", self.sightline.display()))
    }

    /// Waits until `base` answers `/readyz` with Elasticsearch up (90 s at most).
    async fn wait_ready(
        &self,
        child: &mut Child,
        base: &str,
        log: &std::path::Path,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited ({status}) while starting; see {}:\n{}",
                    log.display(),
                    tail(log)
                );
            }
            let ready = self
                .http
                .get(format!("{base}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = ready
                && response.status().is_success()
                && response
                    .text()
                    .await
                    // "not used" with READ_STORE=postgres.
                    .is_ok_and(|body| !body.contains("\"elasticsearch\":\"down\""))
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!(
                    "the server did not get ready in 90 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Creates `n` users: the first through `POST /api/users` (one argon2
    /// hash), the rest as copies of its row with the same password hash.
    pub async fn seed_users(&self, server: &Server, n: usize) -> anyhow::Result<Vec<Uuid>> {
        let first = "bench_user_0";
        let response = self
            .http
            .post(format!("{}/api/users", server.base))
            .header("content-type", "application/json")
            .body(serde_json::json!({"username": first, "password": "bench-password"}).to_string())
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::CREATED {
            bail!(
                "POST /api/users answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let (id, hash): (Uuid, String) =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE username = $1")
                .bind(first)
                .fetch_one(&server.db)
                .await?;
        let ids: Vec<Uuid> = (1..n).map(|_| Uuid::new_v4()).collect();
        let names: Vec<String> = (1..n).map(|i| format!("bench_user_{i}")).collect();
        sqlx::query(
            "INSERT INTO users (id, username, password_hash)
             SELECT u, name, $3 FROM UNNEST($1::uuid[], $2::text[]) AS t(u, name)",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&hash)
        .execute(&server.db)
        .await
        .context("Failed to copy users")?;
        Ok(std::iter::once(id).chain(ids).collect())
    }

    /// One session per entry of `owners`, inserted directly (the token is
    /// random, the row holds its SHA-256, as `auth::session` does), with the
    /// ends a sign-in gives: idle end `SESSION_IDLE_MINUTES` ahead, absolute
    /// end 14 days. (An idle end further ahead than the setting makes the
    /// first request of each session move it: a write per stream opened,
    /// which a real session does not pay.) Returns the tokens in the same
    /// order.
    pub async fn seed_sessions(
        &self,
        server: &Server,
        owners: &[Uuid],
    ) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(owners.len());
        let mut hashes = Vec::with_capacity(owners.len());
        for _ in owners {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = URL_SAFE_NO_PAD.encode(bytes);
            hashes.push(Sha256::digest(token.as_bytes()).to_vec());
            tokens.push(token);
        }
        for (owners, hashes) in owners.chunks(5000).zip(hashes.chunks(5000)) {
            sqlx::query(
                "INSERT INTO sessions (token_hash, user_id, expires_at, absolute_expires_at)
                 SELECT h, u, now() + make_interval(mins => $3::int), now() + interval '14 days'
                 FROM UNNEST($1::bytea[], $2::uuid[]) AS t(h, u)",
            )
            .bind(hashes)
            .bind(owners)
            .bind(SESSION_IDLE_MINUTES)
            .execute(&server.db)
            .await
            .context("Failed to insert sessions")?;
        }
        Ok(tokens)
    }
}

impl Server {
    /// Stops the server (SIGTERM, then SIGKILL after 15 s) and removes its
    /// database and indices.
    pub async fn stop(mut self, bench: &Bench) -> anyhow::Result<()> {
        self.db.close().await;
        for mut helper in std::mem::take(&mut self.helpers) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &helper.pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(15), helper.child.wait())
                .await
                .is_err()
            {
                helper.child.kill().await?;
            }
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    eprintln!(
                        "  warning: {} exited with {status}; see {}",
                        self.name,
                        self.log.display()
                    );
                }
            }
            Err(_) => {
                eprintln!("  warning: {} did not stop in 15 s; killing it", self.name);
                self.child.kill().await?;
            }
        }
        bench.drop_database(&self.name).await?;
        bench.delete_indices(&format!("{}*", self.prefix)).await?;
        Ok(())
    }
}

pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}
