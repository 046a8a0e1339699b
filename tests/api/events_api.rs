//! `GET /api/events`: the SSE stream of `order-visible` notices, its cursor,
//! resuming, resets, privacy — and the promise made when a notice arrives.

use std::collections::HashSet;

use reqwest::StatusCode;

use crate::helpers::{
    SseStream, TestApp, WAIT, assert_error, order_ids, spawn_app, spawn_app_with, test_settings,
    visible_id,
};

/// The cursor the log gives an order's notice (`<user position>-<chain>`).
async fn cursor_of(app: &TestApp, order_id: &str) -> String {
    sqlx::query_scalar("SELECT user_seq || '-' || chain FROM notices WHERE order_id = $1::uuid")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The position in a cursor (tests know its documented shape; clients do not
/// need to).
pub fn position(cursor: &str) -> i64 {
    cursor.split('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_stream_opens_with_ready_carrying_the_current_head_and_a_retry() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let response = app.get(&user, "/api/events").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut first_stream = SseStream::new(response);
    let ready = first_stream.next_event().await;
    assert_eq!(ready.event.as_deref(), Some("ready"));
    assert_eq!(
        ready.id.as_deref(),
        Some("0"),
        "an empty stream's head is 0"
    );
    assert!(ready.retry.is_some(), "ready carries retry: {ready:?}");

    // Once a notice is out, a new stream opens at it.
    let order = app.place_simple_order(&user, "HEAD").await;
    let notice = first_stream.next_order_visible().await;
    assert_eq!(visible_id(&notice), order["id"].as_str().unwrap());
    let (_, head) = app.open_events_ready(&user).await;
    assert_eq!(head, notice.id.unwrap());

    // Another user's stream opens at its own head: nothing of the first's.
    let other = app.new_user().await;
    let (_, other_head) = app.open_events_ready(&other).await;
    assert_eq!(other_head, "0");
}

#[tokio::test]
async fn an_order_placed_after_opening_arrives_as_order_visible() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut events, ready) = app.open_events_ready(&user).await;

    let order = app.place_simple_order(&user, "LIVE").await;
    let id = order["id"].as_str().unwrap();

    let frame = events.next_order_visible().await;
    let data = frame.json();
    assert_eq!(data["id"], id);
    let visible_at = data["visible_at"].as_str().expect("visible_at is a string");
    chrono::DateTime::parse_from_rfc3339(visible_at).expect("visible_at is RFC 3339");
    let cursor = frame.id.clone().unwrap();
    assert_eq!(
        cursor,
        cursor_of(&app, id).await,
        "the id is the notice cursor"
    );
    assert!(position(&cursor) > position(&ready));
}

/// When a client receives `order-visible` for X, a list made right then
/// includes X and `visibility` says true — no waiting, no retry.
#[tokio::test]
async fn when_order_visible_arrives_the_order_is_listed_and_visible() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    let mut placed = HashSet::new();
    for n in 0..6 {
        let order = app.place_simple_order(&user, &format!("PROMISE-{n}")).await;
        placed.insert(order["id"].as_str().unwrap().to_owned());
    }

    let mut seen = HashSet::new();
    while seen.len() < placed.len() {
        let id = visible_id(&events.next_order_visible().await);

        let (source, list) = app.list(&user, "/api/orders?limit=100").await;
        assert_eq!(source, "read-model");
        let listed = list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} announced but not listed"));
        assert_eq!(listed["visible"], true);
        assert!(
            app.visibility(&user, &id).await,
            "{id} announced, not visible"
        );
        let response = app
            .get(&user, &format!("/api/orders/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-read-source"], "read-model");
        let sku = listed["items"][0]["sku"].as_str().unwrap();
        let (_, found) = app.list(&user, &format!("/api/orders?q={sku}")).await;
        assert!(order_ids(&found).contains(&id), "{id} not found by its sku");

        assert!(placed.contains(&id), "announced an order never placed");
        assert!(seen.insert(id.clone()), "{id} announced twice");
    }
}

#[tokio::test]
async fn resuming_with_last_event_id_replays_exactly_the_missed_notices() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (events, ready) = app.open_events_ready(&user).await;
    drop(events);

    // Three orders become visible while no stream is open.
    let mut missed = vec![];
    for n in 0..3 {
        let order = app.place_simple_order(&user, &format!("MISSED-{n}")).await;
        let id = order["id"].as_str().unwrap().to_owned();
        app.wait_until_visible(&user, &id).await;
        missed.push(id);
    }

    let mut events = app.open_events(&user, Some(&ready)).await;
    let mut replayed = vec![];
    let mut cursors = vec![];
    while replayed.len() < 3 {
        let frame = events.next_event().await;
        match frame.event.as_deref() {
            Some("order-visible") => {
                cursors.push(frame.id.clone().unwrap());
                replayed.push(visible_id(&frame));
            }
            Some("ready") => {}
            other => panic!("unexpected {other:?} while resuming: {frame:?}"),
        }
    }
    assert_eq!(replayed, missed, "every missed notice, once, in order");
    assert!(
        cursors
            .windows(2)
            .all(|w| position(&w[0]) < position(&w[1])),
        "{cursors:?}"
    );
    assert!(position(&cursors[0]) > position(&ready));

    // Then live, and nothing replayed twice: the next event is the next order.
    let live = app.place_simple_order(&user, "LIVE").await;
    let live_id = live["id"].as_str().unwrap().to_owned();
    let frame = events.next_order_visible().await;
    assert_eq!(visible_id(&frame), live_id);

    // Resuming from a notice's own id replays only what came after it.
    let mut events = app.open_events(&user, Some(&cursors[1])).await;
    let mut after_second = vec![];
    while after_second.len() < 2 {
        let frame = events.next_event().await;
        match frame.event.as_deref() {
            Some("order-visible") => after_second.push(visible_id(&frame)),
            Some("ready") => {}
            other => panic!("unexpected {other:?} while resuming: {frame:?}"),
        }
    }
    assert_eq!(after_second, vec![missed[2].clone(), live_id]);
}

#[tokio::test]
async fn a_malformed_or_unknown_last_event_id_gets_reset_then_live_notices() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    // Something in the log, so the head is not 0.
    let first = app.place_simple_order(&user, "BEFORE").await;
    app.wait_until_visible(&user, first["id"].as_str().unwrap())
        .await;

    let mut streams = vec![];
    for last_event_id in ["garbage", "999999999999", "-5", ""] {
        let mut events = app.open_events(&user, Some(last_event_id)).await;
        let frame = events.next_event().await;
        assert_eq!(
            frame.event.as_deref(),
            Some("reset"),
            "Last-Event-ID {last_event_id:?}: {frame:?}"
        );
        assert!(
            frame.id.is_some(),
            "reset carries the cursor to resume from"
        );
        assert!(frame.retry.is_some());
        streams.push(events);
    }

    let order = app.place_simple_order(&user, "AFTER").await;
    for events in &mut streams {
        let frame = events.next_order_visible().await;
        assert_eq!(visible_id(&frame), order["id"].as_str().unwrap());
    }
}

#[tokio::test]
async fn a_stream_never_carries_another_users_notices() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let (mut alice_events, _) = app.open_events_ready(&alice).await;
    let (mut bob_events, _) = app.open_events_ready(&bob).await;

    let alices = app.place_simple_order(&alice, "ALICE").await;
    assert_eq!(
        visible_id(&alice_events.next_order_visible().await),
        alices["id"].as_str().unwrap()
    );

    let bobs = app.place_simple_order(&bob, "BOB").await;
    assert_eq!(
        visible_id(&bob_events.next_order_visible().await),
        bobs["id"].as_str().unwrap()
    );

    // Nor does replay: Bob resuming from 0 gets only his own notice.
    let mut bob_replay = app.open_events(&bob, Some("0")).await;
    let frame = loop {
        let frame = bob_replay.next_event().await;
        if frame.event.as_deref() != Some("ready") {
            break frame;
        }
    };
    assert_eq!(frame.event.as_deref(), Some("order-visible"));
    assert_eq!(visible_id(&frame), bobs["id"].as_str().unwrap());
}

#[tokio::test]
async fn exactly_one_notice_per_order() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    let mut placed = HashSet::new();
    for _ in 0..4 {
        // Pairs placed at once, so batches hold several events.
        let (a, b) = tokio::join!(
            app.place_simple_order(&user, "MANY"),
            app.place_simple_order(&user, "MANY")
        );
        placed.insert(a["id"].as_str().unwrap().to_owned());
        placed.insert(b["id"].as_str().unwrap().to_owned());
    }
    let mut seen = HashSet::new();
    while seen.len() < placed.len() {
        let id = visible_id(&events.next_order_visible().await);
        assert!(placed.contains(&id));
        assert!(seen.insert(id.clone()), "{id} announced twice");
    }

    assert_eq!(app.count("SELECT count(*) FROM notices").await, 8);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 8);
    assert_eq!(
        app.count("SELECT count(DISTINCT order_id) FROM notices")
            .await,
        8
    );
    // Nothing more is on its way: the next event is the next order's.
    let sentinel = app.place_simple_order(&user, "SENTINEL").await;
    assert_eq!(
        visible_id(&events.next_order_visible().await),
        sentinel["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn the_stream_needs_a_session_and_accepts_the_cookie() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/api/events")).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let user = app.new_user().await;
    let response = app
        .http
        .get(app.url("/api/events"))
        .header("Cookie", TestApp::session_cookie(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = SseStream::new(response);
    assert_eq!(events.next_event().await.event.as_deref(), Some("ready"));
}

#[tokio::test]
async fn an_idle_stream_gets_comment_heartbeats() {
    let mut settings = test_settings().await;
    settings.sse_heartbeat_secs = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    let heartbeat = tokio::time::timeout(WAIT, async {
        loop {
            let frame = events.next_frame().await.expect("stream ended");
            if !frame.is_dispatched() && !frame.comments.is_empty() {
                return frame;
            }
        }
    })
    .await
    .expect("no heartbeat arrived");
    assert!(heartbeat.event.is_none() && heartbeat.data.is_none());
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams_with_a_retry_hint() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    app.stop();
    let last = tokio::time::timeout(WAIT, async {
        let mut last = None;
        while let Some(frame) = events.next_frame().await {
            last = Some(frame);
        }
        last
    })
    .await
    .expect("the stream stayed open after the server stopped")
    .expect("the stream ended without a farewell");
    assert!(last.retry.is_some(), "{last:?}");
    assert!(!last.is_dispatched());
}

/// A client that falls further behind than its buffer is cut off with a
/// retry hint rather than holding memory or the others up, and resuming
/// with its last cursor loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_cut_off_with_a_retry_hint_and_resumes_without_loss_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    use crate::helpers::{spawn_app_with, test_settings};
    let mut settings = test_settings().await;
    settings.sse_buffer = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    // Hold the pipeline so the next orders reach the hub in one burst,
    // far more than a one-notice buffer holds.
    let hold = app.hold_notices().await;
    let mut placed = vec![app.place_simple_order(&user, "FIRST").await];
    app.wait_until_projector_blocked().await;
    for n in 0..20 {
        placed.push(app.place_simple_order(&user, &format!("BURST-{n}")).await);
    }
    let mut expected: Vec<String> = placed
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    hold.release().await;

    // Read until the server ends the stream; its last frame says when to retry.
    let mut seen = vec![];
    let mut last_id = None;
    let mut retry_hint = None;
    tokio::time::timeout(crate::helpers::WAIT, async {
        while let Some(frame) = stream.next_frame().await {
            if frame.event.as_deref() == Some("order-visible") {
                seen.push(visible_id(&frame));
                last_id = frame.id.clone();
            }
            if frame.retry.is_some() {
                retry_hint = frame.retry;
            }
        }
    })
    .await
    .expect("a client that fell behind was never cut off");
    assert!(
        retry_hint.is_some(),
        "the stream ended without a retry hint"
    );
    assert!(seen.len() < expected.len(), "nothing was dropped: {seen:?}");

    // Resuming from the last cursor it saw brings every other notice, once.
    let cursor = last_id.unwrap_or_else(|| "0".to_owned());
    let mut resumed = app.open_events(&user, Some(&cursor)).await;
    assert_eq!(resumed.next_event().await.event.as_deref(), Some("ready"));
    while seen.len() < expected.len() {
        seen.push(visible_id(&resumed.next_order_visible().await));
    }
    seen.sort();
    assert_eq!(seen, expected);
}

/// A client that stalls mid-request (here: a body that never arrives) cannot
/// hold the server's exit: open connections get a bounded drain, then the
/// server stops anyway.
#[tokio::test]
async fn a_stalled_connection_does_not_keep_the_server_from_stopping() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let settings = crate::helpers::test_settings().await;
    let app = sightline::startup::Application::build(settings.clone())
        .await
        .expect("Failed to build the application");
    let port = app.port();
    let signal = app.shutdown_signal();
    let server = tokio::spawn(app.run_until_stopped());

    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stalled
        .write_all(
            b"POST /api/users HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    // The request is in the server's hands before the stop: its handler
    // reads the body, so the server asks for it. (A connection whose head
    // the server had not read yet would be closed at once, and the stop
    // would prove nothing.)
    let mut asked = [0; 25];
    tokio::time::timeout(WAIT, stalled.read_exact(&mut asked))
        .await
        .expect("the server never asked for the body")
        .unwrap();
    assert_eq!(&asked, b"HTTP/1.1 100 Continue\r\n\r\n");
    stalled.write_all(b"{\"username\":").await.unwrap();

    signal.trigger();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), server)
        .await
        .expect("the server never stopped while a connection stalled");
    stopped.unwrap().unwrap();
    drop(stalled);
    crate::helpers::remove_test_data(&settings);
}
