//! Tests that would fail if the promise broke, each forcing its race or
//! fault deterministically: Elasticsearch's refresh held by a proxy, a real
//! per-item 429 from Elasticsearch, the built binary's own metrics, and a
//! real SIGTERM.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::binary::{Server, TestData, metric};
use crate::es_proxy::{EsProxy, Hold};

use crate::helpers::{
    NOTICE_RECORD_LOCK, SseStream, TestApp, TestUser, WAIT, order_ids, spawn_app_with,
    test_settings, visible_id,
};

/// An app whose Elasticsearch is reached through an [`EsProxy`], with
/// scheduled refreshes off: only the projector's refresh makes an order
/// searchable. (The proxy is returned first so it outlives the app, whose
/// drop deletes the indices.)
async fn app_behind_es_proxy(concurrency: u16) -> (EsProxy, TestApp) {
    let mut settings = test_settings().await;
    let direct = settings.elasticsearch_url.clone();
    let proxy = EsProxy::start(&direct);
    settings.elasticsearch_url = proxy.url.clone();
    settings.index_refresh_interval = "-1".to_owned();
    settings.relay_concurrency = concurrency;
    let mut app = spawn_app_with(settings).await;
    // The test data is removed straight from Elasticsearch.
    app.settings.elasticsearch_url = direct;
    (proxy, app)
}

async fn notices_of(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notices WHERE order_id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn listed(app: &TestApp, user: &TestUser, id: &str) -> bool {
    let (source, list) = app.list(user, "/api/orders?limit=100").await;
    assert_eq!(source, "read-model");
    order_ids(&list).contains(&id.to_owned())
}

/// Nothing a client would dispatch arrives on `stream` for a moment.
async fn assert_quiet(stream: &mut SseStream, why: &str) {
    if let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), stream.next_event()).await {
        panic!("{why}, yet the stream sent {frame:?}");
    }
}

/// A long poll of the order's visibility, started now.
fn long_poll(app: &TestApp, user: &TestUser, id: &str) -> tokio::task::JoinHandle<Value> {
    let request = app.get(user, &format!("/api/orders/{id}/visibility?wait=30"));
    tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() })
}

/// The notice arrives, and a list made right then includes the order.
async fn assert_noticed_and_listed(
    app: &TestApp,
    user: &TestUser,
    stream: &mut SseStream,
    id: &str,
) {
    let frame = stream.next_order_visible().await;
    assert_eq!(visible_id(&frame), id);
    assert!(listed(app, user, id).await, "{id} noticed but not listed");
}

/// While `id`'s refresh is held: it is not listed, not noticed, not
/// `visible`, the stream says nothing and a long poll about it waits. Then
/// the held refresh is let through: the notice arrives, a list made right
/// then includes the order, and the long poll answers `visible`.
async fn assert_hidden_until_released(
    proxy: &EsProxy,
    app: &TestApp,
    user: &TestUser,
    stream: &mut SseStream,
    id: &str,
) {
    let poll = long_poll(app, user, id);
    assert!(
        !listed(app, user, id).await,
        "searchable before its refresh?"
    );
    assert_eq!(
        notices_of(app, id).await,
        0,
        "noticed before search sees it"
    );
    assert!(!app.visibility(user, id).await);
    assert_quiet(stream, "the refresh is held").await;
    assert!(
        !poll.is_finished(),
        "the long poll answered while the refresh is held"
    );

    proxy.release(1);
    assert_noticed_and_listed(app, user, stream, id).await;
    let answer = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    assert_eq!(answer["visible"], true, "{answer}");
}

// ---------------------------------------------------------------------------
// A notice never lies.

/// One batch at a time: while Elasticsearch's refresh of the batch is held,
/// the order is not searchable, and nothing — the notice log, the stream, a
/// long poll, `visibility` — says it is. The notice leaves once the refresh
/// has run, and a list made on receiving it includes the order.
#[tokio::test]
async fn no_notice_leaves_before_search_sees_the_order_one_batch_at_a_time_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let (proxy, app) = app_behind_es_proxy(1).await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    proxy.hold_refreshes(Hold::BeforeForwarding);
    let order = app.place_simple_order(&user, "HELD-REFRESH").await;
    let id = order["id"].as_str().unwrap().to_owned();
    // The batch is written and waits for its refresh.
    proxy
        .wait_until("the batch's refresh", |s| s.refreshes_arrived == 1)
        .await;
    assert_hidden_until_released(&proxy, &app, &user, &mut stream, &id).await;
}

/// Four batches in flight: a batch whose write returned while a refresh was
/// already running waits for the next refresh, not that one. Here the first
/// batch's refresh has run in Elasticsearch (its answer held) before the
/// second batch writes; the second batch's own refresh is then held before
/// it reaches Elasticsearch — so its order is not searchable, and must not
/// be noticed, until that refresh runs.
#[tokio::test]
async fn no_notice_leaves_before_search_sees_the_order_with_batches_in_flight_needs_elasticsearch()
{
    crate::helpers::require_elasticsearch();
    let (proxy, app) = app_behind_es_proxy(4).await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    proxy.hold_refreshes(Hold::AfterForwarding);
    let first = app.place_simple_order(&user, "FIRST").await;
    let first = first["id"].as_str().unwrap().to_owned();
    proxy
        .wait_until("the first refresh", |s| s.refreshes_done == 1)
        .await;
    // Refreshed in Elasticsearch, but the projector has not heard back.
    assert_eq!(
        notices_of(&app, &first).await,
        0,
        "noticed before its refresh returned"
    );

    let second = app.place_simple_order(&user, "SECOND").await;
    let second = second["id"].as_str().unwrap().to_owned();
    // The second batch (another one in flight) has written its order.
    proxy
        .wait_until("the second batch's write", |s| s.bulks_done == 2)
        .await;
    proxy.hold_refreshes(Hold::BeforeForwarding);

    // The first refresh returns: the first order's notice goes out...
    proxy.release(1);
    assert_noticed_and_listed(&app, &user, &mut stream, &first).await;
    // ...while the second batch waits for a refresh of its own, held.
    tokio::time::timeout(WAIT, async {
        while proxy.seen().refreshes_arrived < 2 {
            // Not waiting for a refresh of its own, it would be noticed now.
            assert_eq!(
                notices_of(&app, &second).await,
                0,
                "noticed without a refresh that started after its write"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the second batch never asked for a refresh");
    assert_hidden_until_released(&proxy, &app, &user, &mut stream, &second).await;
}

// ---------------------------------------------------------------------------
// Passing failures are retried, not parked.

/// Elasticsearch answers a bulk item 429 when the index is blocked for
/// writes (as at the disk flood-stage watermark): the relay keeps the event,
/// tries again after a backoff, parks nothing and sends nothing; once the
/// block is lifted the order becomes visible, noticed and counted once.
#[tokio::test]
async fn an_item_elasticsearch_turns_away_with_429_is_retried_not_parked_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let (proxy, app) = app_behind_es_proxy(1).await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;
    let es = reqwest::Client::new();
    let settings_url = format!(
        "{}/{}orders/_settings",
        app.settings.elasticsearch_url.trim_end_matches('/'),
        app.settings.index_prefix
    );
    let block = |on: bool| {
        es.put(&settings_url)
            .json(&json!({ "index.blocks.read_only_allow_delete": if on { json!(true) } else { Value::Null } }))
            .send()
    };
    assert!(block(true).await.unwrap().status().is_success());

    let order = app.place_simple_order(&user, "TURNED-AWAY").await;
    let id = order["id"].as_str().unwrap().to_owned();
    // The first attempt and two retries, each answered 429 for the order.
    proxy
        .wait_until("three bulk attempts", |s| s.bulks_done >= 3)
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM dead_letters").await,
        0,
        "parked"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked")
            .await,
        1,
        "the event left the relay's way"
    );
    assert_eq!(notices_of(&app, &id).await, 0);

    assert!(block(false).await.unwrap().status().is_success());
    assert_noticed_and_listed(&app, &user, &mut stream, &id).await;
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(notices_of(&app, &id).await, 1);
    let summary: Value = app.user_json(&user, "/api/summary").await;
    assert_eq!(
        summary["orders_placed"], 1,
        "counted once over the retries: {summary}"
    );
}

// ---------------------------------------------------------------------------
// Metrics: the built binary, so every number is this test's own.

/// Delivering every event again acknowledges each one as a duplicate —
/// exactly as many as were delivered again — and records and sends nothing new.
#[tokio::test]
async fn a_redelivery_counts_each_event_as_an_acknowledged_duplicate_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let settings = test_settings().await;
    let _data = TestData(settings.clone());
    let server = Server::start(&settings, &settings.elasticsearch_url, &[]).await;
    let db = sqlx::PgPool::connect(&settings.database_url).await.unwrap();
    let token = server.new_user().await;
    let mut stream = server.open_events(&token).await;
    for n in 0..3 {
        server.place(&token, &format!("DUP-{n}")).await;
    }
    for _ in 0..3 {
        stream.next_order_visible().await;
    }
    let before = server
        .metrics_once("sightline_events_published_total", 3.0)
        .await;
    assert_eq!(
        metric(&before, "sightline_duplicates_acknowledged_total"),
        0.0
    );
    assert_eq!(metric(&before, "sightline_notices_recorded_total"), 3.0);

    // As after a crash between projecting and marking: all of it again.
    sqlx::query("UPDATE outbox SET published_at = NULL")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('sightline_outbox', '')")
        .execute(&db)
        .await
        .unwrap();
    let after = server
        .metrics_once("sightline_events_published_total", 6.0)
        .await;
    assert_eq!(
        metric(&after, "sightline_duplicates_acknowledged_total"),
        3.0,
        "{after}"
    );
    assert_eq!(metric(&after, "sightline_notices_recorded_total"), 3.0);
    assert_eq!(metric(&after, "sightline_notices_sent_total"), 3.0);
    // Each event became searchable once: a redelivery is no new observation.
    assert_eq!(
        metric(&after, "sightline_commit_to_searchable_seconds_count"),
        3.0,
        "{after}"
    );
    db.close().await;
}

/// One order, in a process of its own: commit → searchable and commit →
/// notice sent are each observed once, for it, within the time the test saw
/// pass from before its POST to the notice's arrival.
#[tokio::test]
async fn commit_to_searchable_and_to_notice_sent_are_observed_for_this_order_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let settings = test_settings().await;
    let _data = TestData(settings.clone());
    let server = Server::start(&settings, &settings.elasticsearch_url, &[]).await;
    let token = server.new_user().await;
    let mut stream = server.open_events(&token).await;
    let before = server.metrics().await;
    for name in [
        "sightline_commit_to_searchable_seconds_count",
        "sightline_commit_to_notice_sent_seconds_count",
        "sightline_notices_sent_total",
    ] {
        assert_eq!(metric(&before, name), 0.0, "{name} before any order");
    }

    let started = std::time::Instant::now();
    let id = server.place(&token, "TIMED").await;
    assert_eq!(visible_id(&stream.next_order_visible().await), id);
    let elapsed = started.elapsed().as_secs_f64();

    let after = server
        .metrics_once("sightline_events_published_total", 1.0)
        .await;
    assert_eq!(
        metric(&after, "sightline_commit_to_searchable_seconds_count"),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "sightline_commit_to_notice_sent_seconds_count"),
        1.0,
        "{after}"
    );
    assert_eq!(metric(&after, "sightline_notices_sent_total"), 1.0);
    let searchable = metric(&after, "sightline_commit_to_searchable_seconds_sum");
    let sent = metric(&after, "sightline_commit_to_notice_sent_seconds_sum");
    // Commit is the transaction's time on the same host's clock, after
    // `started`; both were taken before the notice reached the test.
    // (Millisecond resolution: a hair of slack.)
    assert!(
        searchable >= 0.0 && searchable <= elapsed + 0.002,
        "commit → searchable {searchable} s, the test saw {elapsed} s"
    );
    assert!(
        sent + 0.002 >= searchable && sent <= elapsed + 0.002,
        "commit → sent {sent} s, searchable {searchable} s, the test saw {elapsed} s"
    );
}

/// Lag breaches the SLO while the pipeline is held, and comes back, without
/// readiness changing — read from a process of its own: the gauges are
/// process-wide, and every app's monitor in this test binary sets them.
#[tokio::test]
async fn a_lagging_pipeline_breaches_the_slo_without_touching_readiness_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let settings = test_settings().await;
    let _data = TestData(settings.clone());
    let server = Server::start(
        &settings,
        &settings.elasticsearch_url,
        &[("LAG_SLO_MS", "200")],
    )
    .await;
    let token = server.new_user().await;
    // Gauges as the monitor samples them, with /readyz 200 on every round.
    let gauges_once = |condition: fn(&str) -> bool| {
        let server = &server;
        async move {
            tokio::time::timeout(WAIT, async {
                loop {
                    let ready = server.http.get(server.url("/readyz")).send().await.unwrap();
                    assert_eq!(
                        ready.status(),
                        reqwest::StatusCode::OK,
                        "/readyz changed with lag"
                    );
                    let metrics = server.metrics().await;
                    if condition(&metrics) {
                        return metrics;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .expect("the gauges never read as expected")
        }
    };
    // Sampled once at least (an unsampled gauge is not listed).
    gauges_once(|m| {
        m.contains("\nsightline_lag_slo_breached ")
            && metric(m, "sightline_lag_slo_breached") == 0.0
    })
    .await;

    // Hold the pipeline: the first order's batch blocks before recording its
    // notices, the second waits behind it.
    let mut hold = sqlx::PgConnection::connect(&settings.database_url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(NOTICE_RECORD_LOCK)
        .execute(&mut hold)
        .await
        .unwrap();
    server.place(&token, "SLOW-1").await;
    let db = sqlx::PgPool::connect(&settings.database_url).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the projector never reached the held lock");
    server.place(&token, "SLOW-2").await;

    let metrics = gauges_once(|m| {
        metric(m, "sightline_lag_slo_breached") == 1.0
            && metric(m, "sightline_projection_lag_events") == 2.0
    })
    .await;
    assert_eq!(metric(&metrics, "sightline_lag_slo_seconds"), 0.2);
    assert!(
        metric(&metrics, "sightline_projection_lag_seconds") > 0.2,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "sightline_outbox_backlog"), 2.0);

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(NOTICE_RECORD_LOCK)
        .execute(&mut hold)
        .await
        .unwrap();
    let metrics = gauges_once(|m| {
        metric(m, "sightline_lag_slo_breached") == 0.0
            && metric(m, "sightline_projection_lag_events") == 0.0
    })
    .await;
    assert_eq!(metric(&metrics, "sightline_projection_lag_seconds"), 0.0);
    hold.close().await.unwrap();
    db.close().await;
}

// ---------------------------------------------------------------------------
// A real SIGTERM.

/// SIGTERM to the built binary while a batch is in hand (written, its
/// refresh held): open streams end at once with a retry hint, the process
/// stays to finish the batch — once the refresh runs, the order is
/// published, searchable and noticed — and exits cleanly, in time.
#[tokio::test]
async fn sigterm_finishes_the_batch_in_hand_hints_streams_and_exits_in_time_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let mut settings = test_settings().await;
    settings.index_refresh_interval = "-1".to_owned();
    let _data = TestData(settings.clone());
    let proxy = EsProxy::start(&settings.elasticsearch_url);
    let mut server =
        Server::start(&settings, &proxy.url, &[("INDEX_REFRESH_INTERVAL", "-1")]).await;
    let db = sqlx::PgPool::connect(&settings.database_url).await.unwrap();
    let token = server.new_user().await;
    let mut stream = server.open_events(&token).await;

    proxy.hold_refreshes(Hold::BeforeForwarding);
    let id = server.place(&token, "IN-HAND").await;
    proxy
        .wait_until("the batch's refresh", |s| s.refreshes_arrived == 1)
        .await;

    let signalled = std::time::Instant::now();
    server.terminate();
    // The stream ends with a retry hint (and without the held notice).
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = None;
        while let Some(frame) = stream.next_frame().await {
            assert!(
                !frame.is_dispatched(),
                "after SIGTERM the stream sent {frame:?}"
            );
            last = Some(frame);
        }
        last
    })
    .await
    .expect("the stream stayed open after SIGTERM")
    .expect("the stream ended without a farewell");
    assert!(last.retry.is_some(), "no retry hint: {last:?}");
    // The batch in hand is still waiting for its refresh: the process waits too.
    assert!(
        server.running(),
        "exited with a batch in hand (log in {:?})",
        server.log
    );
    let unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(unpublished).await, 1);

    proxy.release(1);
    let status = server
        .exited(Duration::from_secs(10).saturating_sub(signalled.elapsed()))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM (log in {:?})", server.log));
    assert!(
        status.success(),
        "exited with {status} (log in {:?})",
        server.log
    );

    // The batch finished: published, noticed, searchable.
    assert_eq!(
        count(unpublished).await,
        0,
        "the batch in hand was not finished"
    );
    let noticed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notices WHERE order_id = $1::uuid AND kind = 'order-visible'",
    )
    .bind(&id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(noticed, 1, "the batch in hand recorded no notice");
    let found: Value = reqwest::Client::new()
        .post(format!(
            "{}/{}orders/_search",
            settings.elasticsearch_url.trim_end_matches('/'),
            settings.index_prefix
        ))
        .json(&json!({ "query": { "ids": { "values": [id] } } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["hits"]["total"]["value"], 1, "{found}");
    db.close().await;
}
