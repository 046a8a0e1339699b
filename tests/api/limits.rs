//! Holding up against abuse: connections, streams, polls, slow bodies,
//! `/status` and writes each have a limit that a client meets with a clear
//! answer, while everyone else goes on.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{
    SseStream, TestApp, TestUser, WAIT, assert_error, metric_value as metric, spawn_app,
    spawn_app_with, test_settings, visible_id,
};

/// One HTTP/1.1 response read off a raw connection: status, head, body.
async fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.expect("read a head line");
        assert!(n > 0, "connection closed before a whole response head");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head[9..12].parse().expect("a status code");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

async fn raw_get(reader: &mut BufReader<TcpStream>, path: &str) -> (u16, String, String) {
    reader
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: sightline\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(reader).await
}

async fn connect(app: &TestApp) -> BufReader<TcpStream> {
    BufReader::new(
        TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect"),
    )
}

#[tokio::test]
async fn a_connection_past_the_limit_is_refused_and_open_streams_go_on() {
    let mut settings = test_settings().await;
    settings.max_connections = Some(8);
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    // Fill the server with kept-alive connections, each answering one
    // request, until one is refused (the test client's own pooled
    // connections count too, so fewer than 7 may fit).
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() < 8,
            "8 connections besides the stream were accepted"
        );
        let mut connection = connect(&app).await;
        let (status, head, body) = raw_get(&mut connection, "/healthz").await;
        match status {
            200 => held.push(connection),
            503 => break (head, body, connection),
            other => panic!("unexpected {other}: {body}"),
        }
    };
    let (head, body, mut connection) = refused;
    assert!(head.to_lowercase().contains("retry-after: 1"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "too_many_connections");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, connection.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the refused connection was not closed cleanly: {closed:?}"
    );

    // Open connections go on: an order placed over one of them reaches the
    // open stream.
    let held_connection = held.first_mut().expect("one connection was accepted");
    let order = json!({ "items": [{ "sku": "CAP-1", "quantity": 1, "unit_price_cents": 100 }] })
        .to_string();
    held_connection
        .get_mut()
        .write_all(
            format!(
                "POST /api/orders HTTP/1.1\r\nHost: sightline\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{order}",
                user.token,
                order.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, _, body) = read_response(held_connection).await;
    assert_eq!(status, 201, "{body}");
    let placed: Value = serde_json::from_str(&body).unwrap();
    let frame = events.next_order_visible().await;
    assert_eq!(visible_id(&frame), placed["id"].as_str().unwrap());

    let (status, _, metrics) = raw_get(held_connection, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metric(
            &metrics,
            r#"sightline_connections_refused_total{scope="instance"}"#
        )
        .unwrap()
            >= 1.0
    );
    assert!(metrics.contains("sightline_http_connections_max"));
}

#[tokio::test]
async fn a_request_body_that_trickles_is_answered_408_and_closed() {
    let mut settings = test_settings().await;
    settings.body_timeout_secs = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;

    let mut connection = connect(&app).await;
    connection
        .get_mut()
        .write_all(
            format!(
                "POST /api/orders HTTP/1.1\r\nHost: sightline\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n{{",
                user.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // One more byte every 3 s (the timeout is 1 s), until the server hangs up.
    let (mut reader, mut writer) = connection.into_inner().into_split();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer))
        .await
        .expect("no answer and no close within 15 s: the body has no read timeout");
    trickle.abort();
    read.expect("the connection ends with a close, not a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    // Nothing was placed.
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

/// A client whose connections come from `source` (another loopback address).
fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .build()
        .unwrap()
}

async fn open_from(client: &reqwest::Client, app: &TestApp, user: &TestUser) -> reqwest::Response {
    client
        .get(app.url("/api/events"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn event_streams_are_capped_per_user_and_per_address() {
    let mut settings = test_settings().await;
    settings.max_streams_per_user = 2;
    settings.max_streams_per_address = 3;
    settings.sse_heartbeat_secs = 1;
    let app = spawn_app_with(settings).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);

    let (first, _) = app.open_events_ready(&alice).await;
    let (_second, _) = app.open_events_ready(&alice).await;
    let third = app.get(&alice, "/api/events").send().await.unwrap();
    let retry_after = third.headers().get("retry-after").cloned();
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    assert!(retry_after.is_some(), "429 without Retry-After");

    // Bob is not Alice: his first stream opens, and fills the address.
    let (_bob_first, _) = app.open_events_ready(&bob).await;
    let from_here = app.get(&bob, "/api/events").send().await.unwrap();
    let body = assert_error(from_here, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    assert!(
        body["error"].as_str().unwrap().contains("address"),
        "{body}"
    );
    // From another address he may.
    let elsewhere = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let response = open_from(&elsewhere, &app, &bob).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut other = SseStream::new(response);
    assert_eq!(other.next_event().await.event.as_deref(), Some("ready"));

    // A closed stream gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = app.get(&alice, "/api/events").send().await.unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"sightline_limit_rejections_total{kind="stream",scope="user"}"#),
        "rejections are not counted in /metrics"
    );
}

#[tokio::test]
async fn waiting_long_polls_are_capped_per_user_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let mut settings = test_settings().await;
    settings.max_polls_per_user = 2;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    // Notices are held, so polls about this order wait.
    let hold = app.hold_notices().await;
    let order = app.place_simple_order(&user, "POLL-1").await;
    let path = format!("/api/orders/{}/visibility", order["id"].as_str().unwrap());

    // Long polls one after another: while notices are held a poll that is
    // let in waits its 30 s, so the first one answered at once is refused.
    let mut waiting = Vec::new();
    let refused = loop {
        assert!(waiting.len() < 3, "a third waiting poll was let in");
        let request = app.get(&user, &format!("{path}?wait=30"));
        let mut poll = tokio::spawn(async move { request.send().await.unwrap() });
        match tokio::time::timeout(Duration::from_secs(5), &mut poll).await {
            Ok(answered) => break answered.unwrap(),
            Err(_waiting) => waiting.push(poll),
        }
    };
    assert_eq!(waiting.len(), 2, "fewer polls waited than the cap allows");
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_polls").await;
    // A poll that does not wait is still answered.
    let answered = app
        .get(&user, &format!("{path}?wait=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);

    // The waiting polls still hear the news.
    hold.release().await;
    for poll in waiting {
        let body: Value = poll.await.unwrap().json().await.unwrap();
        assert_eq!(body["visible"], true, "{body}");
    }
}

#[tokio::test]
async fn writes_are_rate_limited_per_user_with_retry_after() {
    let mut settings = test_settings().await;
    settings.write_burst = 3;
    settings.write_rate_per_min = 60;
    let app = spawn_app_with(settings).await;
    let (script, person) = (app.new_user().await, app.new_user().await);

    let mut ids = Vec::new();
    for n in 0..3 {
        let order = app.place_simple_order(&script, &format!("RATE-{n}")).await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let fourth = app
        .place_order(
            &script,
            &json!({ "items": [{ "sku": "RATE-X", "quantity": 1, "unit_price_cents": 1 }] }),
        )
        .await;
    let retry_after: u64 = fourth
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_error(fourth, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let cancel = app.cancel_order(&script, &ids[0]).await;
    assert_error(cancel, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Nothing of the refused writes was committed.
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'cancelled'")
            .await,
        0
    );

    // Someone else writes as usual.
    app.place_simple_order(&person, "RATE-P").await;
    // After the wait it says, the script may write again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = app.cancel_order(&script, &ids[0]).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn status_readers_share_one_sample_per_interval() {
    let app = spawn_app().await;
    let samples = |app: &TestApp| {
        let request = app.http.get(app.url("/metrics"));
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            metric(&text, "sightline_status_samples_total").expect("samples are counted")
        }
    };
    // The first sample exists once /status answers.
    assert_eq!(
        app.http
            .get(app.url("/status"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let before = samples(&app).await;
    let started = Instant::now();
    const READERS: usize = 40;
    let pages = futures::future::join_all((0..READERS).map(|_| {
        let request = app.http.get(app.url("/status"));
        async move { request.send().await.unwrap().status() }
    }))
    .await;
    assert!(pages.iter().all(|s| *s == StatusCode::OK), "{pages:?}");
    let taken = samples(&app).await - before;
    // The monitor's own: one a second (and one in flight).
    let interval = started.elapsed().as_secs_f64().ceil() + 1.0;
    assert!(
        taken <= interval && taken < READERS as f64,
        "{READERS} readers took {taken} samples in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn status_streams_are_capped() {
    let mut settings = test_settings().await;
    settings.max_status_streams = 1;
    let app = spawn_app_with(settings).await;
    let first = app
        .http
        .get(app.url("/status/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = app
        .http
        .get(app.url("/status/stream"))
        .send()
        .await
        .unwrap();
    assert_error(second, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    drop(first);
}

#[tokio::test]
async fn an_ops_token_guards_status_and_metrics_but_not_health() {
    let mut settings = test_settings().await;
    settings.ops_token = Some("operator-only-0123".to_owned());
    let app = spawn_app_with(settings).await;
    for path in ["/metrics", "/status", "/status/stream"] {
        let anonymous = app.http.get(app.url(path)).send().await.unwrap();
        assert_error(anonymous, StatusCode::UNAUTHORIZED, "ops_token_required").await;
        let wrong = app
            .http
            .get(app.url(path))
            .bearer_auth("operator-only-012Y")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let bearer = app
            .http
            .get(app.url(path))
            .bearer_auth("operator-only-0123")
            .send()
            .await
            .unwrap();
        assert_eq!(bearer.status(), StatusCode::OK, "{path} with the token");
    }
    // Never in the URL (ops_access.rs has the sign-in cookie).
    let page = app
        .http
        .get(app.url("/status?token=operator-only-0123"))
        .send()
        .await
        .unwrap();
    assert_error(page, StatusCode::UNAUTHORIZED, "ops_token_in_url").await;
    for path in ["/healthz", "/readyz"] {
        let open = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(open.status(), StatusCode::OK, "{path}");
    }
}

/// A connection that asked for `/healthz` and was answered 200, kept open.
async fn accepted(app: &TestApp) -> Option<BufReader<TcpStream>> {
    let mut connection = connect(app).await;
    let (status, head, body) = raw_get(&mut connection, "/healthz").await;
    match status {
        200 => Some(connection),
        503 => {
            assert!(head.to_lowercase().contains("retry-after: 1"), "{head}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["code"], "too_many_connections", "{body}");
            assert!(
                body["error"].as_str().unwrap().contains("this address"),
                "{body}"
            );
            None
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

/// `accepted`, retried while the server has not yet seen a closed
/// connection of this address end.
async fn accepted_soon(app: &TestApp) -> BufReader<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(connection) = accepted(app).await {
            return connection;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_the_connections_and_gives_them_back() {
    let mut settings = test_settings().await;
    settings.max_connections = Some(64);
    settings.max_connections_per_address = Some(3);
    let app = spawn_app_with(settings).await;

    // Three idle kept-alive connections from 127.0.0.1 fill its share…
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(accepted(&app).await.expect("within the address's share"));
    }
    // …and the fourth is refused, with 61 places of the instance free.
    assert!(
        accepted(&app).await.is_none(),
        "a fourth connection from one address was accepted"
    );
    let (_, _, metrics) = raw_get(&mut held[0], "/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"sightline_connections_refused_total{scope="address"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "the refusal is counted with its scope"
    );

    // A closed connection gives its place back.
    drop(held.pop());
    held.push(accepted_soon(&app).await);

    // So does one served as an event stream (`event_streams`, not hyper):
    // one place is free, and five in a row each take it and give it back.
    drop(held.pop());
    for _ in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut connection = loop {
            let mut connection = connect(&app).await;
            connection
                .get_mut()
                .write_all(b"GET /api/events HTTP/1.1\r\nHost: sightline\r\n\r\n")
                .await
                .unwrap();
            let (status, _, body) = read_response(&mut connection).await;
            match status {
                401 => break connection,
                503 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => panic!("unexpected {other}: {body}"),
            }
        };
        let mut rest = Vec::new();
        connection.read_to_end(&mut rest).await.unwrap();
    }
    held.push(accepted_soon(&app).await);
}

#[tokio::test]
async fn reads_past_the_per_user_burst_are_refused_with_a_wait() {
    let mut settings = test_settings().await;
    settings.read_burst = 6;
    settings.read_rate_per_min = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "READ-1").await;
    let id = order["id"].as_str().unwrap();

    for path in [
        "/api/orders".to_owned(),
        "/api/orders?q=read".to_owned(),
        format!("/api/orders/{id}"),
        format!("/api/orders/{id}/visibility"),
        "/api/summary".to_owned(),
    ] {
        let read = app.get(&user, &path).send().await.unwrap();
        assert_eq!(read.status(), StatusCode::OK, "{path}");
    }
    let page = app
        .http
        .get(app.url("/orders"))
        .header(reqwest::header::COOKIE, TestApp::session_cookie(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);

    // The burst is spent: the next read waits about a minute.
    let refused = app.get(&user, "/api/orders").send().await.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let page = app
        .http
        .get(app.url("/orders"))
        .header(reqwest::header::COOKIE, TestApp::session_cookie(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(page.headers().contains_key("retry-after"));

    // Someone else reads on.
    let other = app.new_user().await;
    let read = app.get(&other, "/api/orders").send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let metrics = app.metrics_text().await;
    assert!(
        metric(
            &metrics,
            r#"sightline_limit_rejections_total{kind="read",scope="user"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "read refusals are counted"
    );
}
