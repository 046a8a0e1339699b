//! Abuse of logins and sign-ups: parallel guessing, password spraying, a
//! stranger trying to lock a user out, a storm of logins that would exhaust
//! memory with argon2 hashes, sign-up floods — each against the real server.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, spawn_app_with, test_settings, visible_id};

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
    vec![sightline::web::client_addr::parse_trusted_proxy("127.0.0.1").unwrap()]
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
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
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

/// Resident memory of this process (the server runs in it), in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test]
async fn a_storm_of_logins_with_random_usernames_cannot_exhaust_memory() {
    let mut settings = test_settings().await;
    // Each request from its own address: no per-address limit helps here,
    // only the bound on hashes at once (HASH_CONCURRENCY, default).
    settings.trusted_proxies = trust_loopback();
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;
    let storm_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let busy_before = metric(&app, &rejections("hashing_busy")).await;

    let baseline = resident_kib();
    let (peak_tx, peak_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut peak = resident_kib();
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(Duration::from_millis(10)) => peak = peak.max(resident_kib()),
            }
        }
        let _ = peak_tx.send(peak);
    });

    let storm = join_all((0..300u32).map(|n| {
        let client = storm_client.clone();
        let url = app.url("/api/sessions");
        async move {
            let response = client
                .post(url)
                .header("X-Forwarded-For", random_address(n))
                .json(
                    &json!({ "username": format!("nobody{n:04}x"), "password": "hunter2hunter2" }),
                )
                .send()
                .await
                .expect("the server answers every login of the storm");
            let status = response.status();
            let retry = response.headers().contains_key("retry-after");
            (status, retry)
        }
    }));
    let meanwhile = async {
        // While the storm runs: the server stays live, and a notice still arrives.
        for _ in 0..5 {
            let health = app.http.get(app.url("/healthz")).send().await.unwrap();
            assert_eq!(health.status(), StatusCode::OK);
        }
        let order = app.place_simple_order(&user, "STORM-1").await;
        let frame = events.next_order_visible().await;
        assert_eq!(visible_id(&frame), order["id"].as_str().unwrap());
    };
    let (results, ()) = tokio::join!(storm, meanwhile);
    let _ = stop_tx.send(());
    let peak = peak_rx.await.unwrap();

    let growth_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        growth_mib < 300,
        "300 parallel logins grew resident memory by {growth_mib} MiB"
    );
    let busy = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
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
    eprintln!(
        "login storm: {busy} of 300 answered 503 busy, peak resident growth {growth_mib} MiB"
    );
    assert!(metric(&app, &rejections("hashing_busy")).await - busy_before >= busy as f64);

    // Afterwards the user logs in as ever.
    let response = app.log_in(&user.username, &user.password).await;
    assert_eq!(response.status(), StatusCode::OK);
}
