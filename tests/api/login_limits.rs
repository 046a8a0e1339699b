//! Abuse of logins and sign-ups: parallel guessing, password spraying, a
//! stranger trying to lock a user out, a storm of logins that would exhaust
//! memory with argon2 hashes, sign-up floods — each against the real server.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{
    SseStream, TestApp, assert_error, metric_value, spawn_app_with, test_settings, visible_id,
};

/// `POST /api/sessions` as if from `client` (an `X-Forwarded-For` hop, which
/// counts only where the test trusts 127.0.0.1 as a proxy).
async fn log_in_from(app: &TestApp, username: &str, password: &str, client: &str) -> Response {
    app.http
        .post(app.url("/api/sessions"))
        .header("X-Forwarded-For", client)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

/// `TRUSTED_PROXIES=127.0.0.1`: the test client plays the proxy.
fn trust_loopback() -> Vec<ipnet::IpNet> {
    vec![sightline::web::extract::client_addr::parse_trusted_proxy("127.0.0.1").unwrap()]
}

fn retry_after(response: &Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{} without Retry-After", response.status()))
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds")
}

/// A counter of `/metrics`, e.g. `sightline_auth_rejections_total{limit="login_user"}`.
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    metric_value(&app.metrics_text().await, series)
        .unwrap_or_else(|| panic!("{series} is not in /metrics"))
}

fn rejections(limit: &str) -> String {
    format!("sightline_auth_rejections_total{{limit=\"{limit}\"}}")
}

fn random_address(n: u32) -> String {
    // 10.x.y.z: one distinct client per request.
    let [_, a, b, c] = n.to_be_bytes();
    format!("10.{a}.{b}.{c}")
}

#[tokio::test]
async fn parallel_wrong_logins_for_one_user_get_at_most_the_burst_of_verifications() {
    let mut settings = test_settings().await;
    // Hashing has room for all of them: only the throttle may hold them back.
    settings.hash_concurrency = 64;
    let burst = settings.login_free_failures as usize;
    let app = spawn_app_with(settings).await;
    app.sign_up("dora", "correct horse").await;
    let before = metric(&app, &rejections("login_user_address")).await;

    let responses = join_all((0..64).map(|_| app.log_in("dora", "wrong horse!"))).await;

    let mut answered = 0;
    for response in responses {
        match response.status() {
            StatusCode::UNAUTHORIZED => answered += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry_after(&response) >= 1);
                assert_error(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
            }
            other => panic!("a parallel wrong login answered {other}"),
        }
    }
    assert!(
        answered <= burst,
        "{answered} of 64 parallel guesses had their password checked; the burst is {burst}"
    );
    assert_eq!(answered, burst, "the burst itself is answered");
    let after = metric(&app, &rejections("login_user_address")).await;
    assert!(
        after - before >= 59.0,
        "rejections counted: {before} → {after}"
    );
}

#[tokio::test]
async fn spraying_one_password_over_many_usernames_is_limited_per_address() {
    let mut settings = test_settings().await;
    settings.login_address_burst = 10;
    settings.hash_concurrency = 64;
    let app = spawn_app_with(settings).await;
    let before = metric(&app, &rejections("login_address")).await;

    let mut statuses = Vec::new();
    for n in 0..25 {
        // Without trusted proxies the header is the client's own claim and
        // changes nothing: every attempt comes from 127.0.0.1.
        let response = log_in_from(
            &app,
            &format!("victim{n}"),
            "Summer2026!",
            &random_address(n),
        )
        .await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry_after(&response) >= 1);
        }
        statuses.push(response.status());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, 10, "{statuses:?}");
    assert!(
        statuses[10..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let after = metric(&app, &rejections("login_address")).await;
    assert!(after - before >= 15.0, "{before} → {after}");
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let mut settings = test_settings().await;
    settings.login_address_burst = 3;
    settings.hash_concurrency = 64;
    settings.trusted_proxies = trust_loopback();
    let app = spawn_app_with(settings).await;

    // Behind a trusted proxy each forwarded client has its own count...
    for n in 0..10 {
        let response = log_in_from(
            &app,
            &format!("victim{n}"),
            "Summer2026!",
            &random_address(n),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "client {n}");
    }
    // ...and one forwarded client is held to it, whatever it prepends.
    let mut last = StatusCode::OK;
    for n in 0..4 {
        let forged = format!("{}, 192.0.2.77", random_address(1000 + n));
        last = log_in_from(&app, &format!("other{n}"), "Summer2026!", &forged)
            .await
            .status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_strangers_failed_logins_do_not_keep_the_user_out() {
    let mut settings = test_settings().await;
    settings.hash_concurrency = 64;
    settings.trusted_proxies = trust_loopback();
    let user_burst = settings.login_user_burst;
    let app = spawn_app_with(settings).await;
    app.sign_up("erin", "correct horse").await;
    // Erin has logged in from her address before.
    let home = "198.51.100.10";
    let response = log_in_from(&app, "erin", "correct horse", home).await;
    assert_eq!(response.status(), StatusCode::OK);

    // A stranger guesses, first from one address (growing delays hold it),
    // then from many (the username's softer limit holds them).
    let mut refused = 0;
    for _ in 0..20 {
        let response = log_in_from(&app, "erin", "guess!guess", "203.0.113.5").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused >= 15, "one address guessed {} times", 20 - refused);
    let mut statuses = Vec::new();
    for n in 0..(user_burst + 10) {
        let response = log_in_from(&app, "erin", "guess!guess", &random_address(n)).await;
        statuses.push(response.status());
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "guessing from many addresses is limited too: {statuses:?}"
    );
    assert!(metric(&app, &rejections("login_user")).await >= 1.0);

    // Erin still gets in from her own address, at once and repeatedly.
    for _ in 0..3 {
        let response = log_in_from(&app, "erin", "correct horse", home).await;
        assert_eq!(response.status(), StatusCode::OK, "erin was locked out");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["token"].is_string());
    }
    // A typo of hers is just a failure, not a lockout.
    let response = log_in_from(&app, "erin", "correct hrose", home).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = log_in_from(&app, "erin", "correct horse", home).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn sign_ups_are_limited_per_address() {
    let mut settings = test_settings().await;
    settings.signup_address_burst = 3;
    let app = spawn_app_with(settings).await;
    let before = metric(&app, &rejections("signup_address")).await;

    for n in 0..3 {
        let response = app.sign_up(&format!("newbie{n}"), "correct horse").await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let response = app.sign_up("newbie3", "correct horse").await;
    assert!(retry_after(&response) >= 1);
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "throttled").await;
    // The sign-up page says so in words, and creates nothing either.
    let page = app
        .http
        .post(app.url("/signup"))
        .form(&[("username", "newbie4"), ("password", "correct horse")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(page.text().await.unwrap().contains("Too many attempts"));

    assert_eq!(app.count("SELECT count(*) FROM users").await, 3);
    assert!(metric(&app, &rejections("signup_address")).await - before >= 2.0);
}

/// Resident memory of process `pid`, in KiB. Fails the test when it cannot
/// be read: a 0 would make any growth look like none.
fn resident_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .filter(|kib| *kib > 0)
        .unwrap_or_else(|| panic!("no resident memory in {path}:\n{status}"))
}

/// The real binary, serving on a free port with `settings`' database and
/// index prefix: its memory is its own, not shared with the tests around it.
struct ServerProcess {
    child: std::process::Child,
    address: String,
    settings: sightline::config::Settings,
}

impl ServerProcess {
    async fn start(settings: sightline::config::Settings, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"));
        command
            .arg("serve")
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &settings.database_url)
            .env("INDEX_PREFIX", &settings.index_prefix)
            .env("RELAY_POLL_MS", "500")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the sightline binary runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the log to the end (a full pipe would stall the server).
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if entry["fields"]["message"] == "listening"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(entry["fields"]["addr"].as_str().unwrap().to_owned());
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server did not listen within 60 s")
            .expect("the server exited before listening");
        ServerProcess {
            child,
            address: format!("http://{addr}"),
            settings,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::helpers::remove_test_data(&self.settings);
    }
}

#[tokio::test]
async fn a_storm_of_logins_with_random_usernames_cannot_exhaust_memory() {
    // Each request from its own address (127.0.0.1 plays a trusted proxy):
    // no per-address limit helps, only the bound on hashes at once
    // (HASH_CONCURRENCY, at its default).
    let server =
        ServerProcess::start(test_settings().await, &[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    let pid = server.child.id();
    let http = reqwest::Client::new();
    let credentials = json!({ "username": "stormy", "password": "correct horse" });
    let response = http
        .post(server.url("/api/users"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let login: serde_json::Value = http
        .post(server.url("/api/sessions"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let response = http
        .get(server.url("/api/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = SseStream::new(response);
    assert_eq!(events.next_event().await.event.as_deref(), Some("ready"));

    let baseline = resident_kib(pid);
    let (peak_tx, peak_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut peak = resident_kib(pid);
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(Duration::from_millis(10)) => peak = peak.max(resident_kib(pid)),
            }
        }
        let _ = peak_tx.send(peak);
    });

    let storm = join_all((0..300u32).map(|n| {
        let http = http.clone();
        let url = server.url("/api/sessions");
        async move {
            let response = http
                .post(url)
                .header("X-Forwarded-For", random_address(n))
                .json(
                    &json!({ "username": format!("nobody{n:04}x"), "password": "hunter2hunter2" }),
                )
                .send()
                .await
                .expect("the server answers every login of the storm");
            let retry = response.headers().contains_key("retry-after");
            (response.status(), retry)
        }
    }));
    // While the storm runs: the server stays live, and a notice still
    // arrives. (Checked after the memory, which is what the bound is for.)
    let meanwhile = async {
        let mut health = Vec::new();
        for _ in 0..5 {
            let response = http.get(server.url("/healthz")).send().await.unwrap();
            health.push(response.status());
        }
        let response = http
            .post(server.url("/api/orders"))
            .bearer_auth(&token)
            .json(
                &json!({ "items": [{ "sku": "STORM-1", "quantity": 1, "unit_price_cents": 100 }] }),
            )
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::CREATED {
            return (health, Err(response.status()));
        }
        let order: serde_json::Value = response.json().await.unwrap();
        let frame = events.next_order_visible().await;
        let noticed = visible_id(&frame) == order["id"].as_str().unwrap();
        (health, Ok(noticed))
    };
    let (results, (health, notice)) = tokio::join!(storm, meanwhile);
    let _ = stop_tx.send(());
    let peak = peak_rx
        .await
        .expect("the memory sampler failed (its panic is above)");

    let growth_mib = peak.saturating_sub(baseline) / 1024;
    let busy = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    eprintln!(
        "login storm: {busy} of 300 answered 503 busy; the server's resident memory grew by {growth_mib} MiB (from {} MiB)",
        baseline / 1024
    );
    assert!(
        growth_mib < 300,
        "300 parallel logins grew the server's resident memory by {growth_mib} MiB"
    );
    assert!(
        health.iter().all(|s| *s == StatusCode::OK),
        "/healthz during the storm: {health:?}"
    );
    assert_eq!(
        notice,
        Ok(true),
        "the order placed during the storm and its notice"
    );
    for (status, retry) in &results {
        assert!(
            matches!(
                *status,
                StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
            ),
            "a storm login answered {status}"
        );
        if *status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry, "503 without Retry-After");
        }
    }
    assert!(busy > 0, "no login of 300 found hashing busy");
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(rejections("hashing_busy").as_str())?
                .trim()
                .parse()
                .ok()
        })
        .expect("hashing_busy in /metrics");
    assert_eq!(counted, busy as f64);

    // Afterwards the user logs in as ever.
    let response = http
        .post(server.url("/api/sessions"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
