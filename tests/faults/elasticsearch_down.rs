//! Elasticsearch stops while the app runs: writes go on, the backlog grows,
//! open streams stay open, and when it is back everything catches up — each
//! notice exactly once.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{order_ids, spawn_app_with, test_settings, visible_id};
use crate::services::{self, Service};

/// Bound on the catch-up after Elasticsearch is back (the relay may be in
/// its longest backoff, 5 s, when it returns; the rest is a busy machine).
const CATCH_UP: Duration = Duration::from_secs(180);
const ORDERS_DURING_OUTAGE: usize = 6;

#[tokio::test]
async fn with_elasticsearch_down_writes_go_on_and_everything_catches_up_once_it_is_back() {
    let _serial = services::serial().await;
    let mut settings = test_settings().await;
    settings.sse_heartbeat_secs = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;

    // The pipeline works before the outage.
    let before = app.place_simple_order(&user, "BEFORE-OUTAGE").await;
    let before_id = before["id"].as_str().unwrap().to_owned();
    assert_eq!(visible_id(&events.next_order_visible().await), before_id);

    let stopping = Instant::now();
    let outage = services::stop(Service::Elasticsearch).await;

    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "Elasticsearch down is degraded, not unready"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["elasticsearch"], "down", "{body}");
    assert_eq!(body["postgres"], "up", "{body}");
    assert_eq!(body["status"], "degraded", "{body}");

    // Writes keep answering 201, and the backlog grows with them.
    let mut placed = Vec::new();
    for round in 0..2 {
        for i in 0..ORDERS_DURING_OUTAGE / 2 {
            let order = app
                .place_simple_order(&user, &format!("DURING-OUTAGE-{round}-{i}"))
                .await;
            placed.push(order["id"].as_str().unwrap().to_owned());
        }
        let status = sightline::outbox::status(&app.db).await.unwrap();
        assert_eq!(status.backlog, placed.len() as i64, "{status:?}");
        assert_eq!(
            status.dead_letters, 0,
            "an outage must not dead-letter events"
        );
    }

    // The stream opened before the outage stays open: heartbeats, no notices.
    let mut heartbeats = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while heartbeats < 2 {
            let frame = events
                .next_frame()
                .await
                .expect("the stream ended during the outage");
            assert!(
                !frame.is_dispatched(),
                "an event during the outage: {frame:?}"
            );
            if !frame.comments.is_empty() {
                heartbeats += 1;
            }
        }
    })
    .await
    .expect("no heartbeats on the open stream during the outage");

    outage.end().await;
    let back = Instant::now();

    // Every order's notice arrives on the same stream, exactly once.
    let expected: HashSet<String> = placed.iter().cloned().collect();
    let mut seen = HashSet::new();
    let deadline = back + CATCH_UP;
    while seen.len() < expected.len() {
        let frame = tokio::time::timeout_at(deadline, events.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} orders became visible after Elasticsearch returned",
                    seen.len(),
                    expected.len()
                )
            });
        assert_eq!(frame.event.as_deref(), Some("order-visible"), "{frame:?}");
        let id = visible_id(&frame);
        assert!(expected.contains(&id), "unexpected notice for {id}");
        assert!(seen.insert(id.clone()), "{id} announced twice");
    }
    let caught_up = back.elapsed();
    eprintln!(
        "faults: {} orders placed during the Elasticsearch outage were all visible {:.1} s after it \
         answered again (outage: {:.1} s from `stop` to answering again)",
        expected.len(),
        caught_up.as_secs_f64(),
        (back - stopping).as_secs_f64()
    );

    // Each is listed, once.
    let (source, list) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(source, "read-model");
    let listed = order_ids(&list);
    let distinct: HashSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        listed.len(),
        "an order is listed twice: {listed:?}"
    );
    let mut all = expected.clone();
    all.insert(before_id);
    assert_eq!(distinct, all);

    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");

    // Nothing more is on its way: the next notice is the next order's.
    let sentinel = app.place_simple_order(&user, "AFTER-OUTAGE").await;
    assert_eq!(
        visible_id(&events.next_order_visible().await),
        sentinel["id"].as_str().unwrap()
    );
    assert_eq!(
        app.count("SELECT count(*) FROM notices").await,
        all.len() as i64 + 1
    );
}
