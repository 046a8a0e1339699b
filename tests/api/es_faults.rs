//! Operational faults of the read store are passing failures, never poison.
//!
//! Mid-burst, the test's own orders index is closed, write-blocked, or loses
//! its alias, on the real Elasticsearch. Throughout: every write answers 201,
//! no event is dead-lettered, nobody hears `order-failed`, and no notice
//! announces an order that a list made right then does not return. While the
//! fault lasts, the backlog grows and `/status` and `/metrics` name it; once
//! it is fixed (or, for the alias, the app has put it back), every order is
//! visible exactly once. (Each test has its own index prefix, so this
//! disturbs no other test.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::RefreshMode;
use tokio::sync::oneshot;

use crate::helpers::{
    SseStream, TestApp, WAIT, metric_value, order_ids, spawn_app_with, test_settings,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// `POST <index>/_close`, later `_open`.
    Closed,
    /// `PUT <index>/_block/write`, later lifted.
    WriteBlocked,
    /// `DELETE <index>/_alias/<alias>`; the app restores it.
    AliasDeleted,
    /// The same for the summaries' alias.
    SummariesAliasDeleted,
}

const BATCH_FAILURES: &str = "sightline_relay_batch_failures_total";

/// Orders in the burst, and how many are placed before the fault.
const BURST: usize = 30;
const BEFORE_FAULT: usize = 10;

/// Calls the test's Elasticsearch; asserts a 2xx answer.
async fn es(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let url = format!(
        "{}/{path}",
        app.settings.elasticsearch_url.trim_end_matches('/')
    );
    let mut request = reqwest::Client::new().request(method.clone(), &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

fn orders_alias(app: &TestApp) -> String {
    format!("{}orders", app.settings.index_prefix)
}

fn orders_index(app: &TestApp) -> String {
    format!("{}orders_v1", app.settings.index_prefix)
}

async fn apply(app: &TestApp, fault: Fault) {
    let index = orders_index(app);
    match fault {
        Fault::Closed => es(app, reqwest::Method::POST, &format!("{index}/_close"), None).await,
        Fault::WriteBlocked => {
            es(
                app,
                reqwest::Method::PUT,
                &format!("{index}/_block/write"),
                None,
            )
            .await
        }
        Fault::AliasDeleted => {
            let alias = orders_alias(app);
            es(
                app,
                reqwest::Method::DELETE,
                &format!("{index}/_alias/{alias}"),
                None,
            )
            .await
        }
        Fault::SummariesAliasDeleted => {
            let alias = format!("{}summaries", app.settings.index_prefix);
            es(
                app,
                reqwest::Method::DELETE,
                &format!("{alias}_v1/_alias/{alias}"),
                None,
            )
            .await
        }
    };
}

async fn fix(app: &TestApp, fault: Fault) {
    let index = orders_index(app);
    match fault {
        Fault::Closed => {
            es(app, reqwest::Method::POST, &format!("{index}/_open"), None).await;
        }
        Fault::WriteBlocked => {
            es(
                app,
                reqwest::Method::PUT,
                &format!("{index}/_settings"),
                Some(json!({ "index.blocks.write": false })),
            )
            .await;
        }
        // Nothing: the app puts the alias back itself.
        Fault::AliasDeleted | Fault::SummariesAliasDeleted => {}
    }
}

/// The error type Elasticsearch answers each fault's writes with.
fn kind_of(fault: Fault) -> &'static str {
    match fault {
        Fault::Closed => "index_closed_exception",
        Fault::WriteBlocked => "cluster_block_exception",
        Fault::AliasDeleted | Fault::SummariesAliasDeleted => "index_not_found_exception",
    }
}

/// Reads the user's notices until every one of `expected` ids has its
/// `order-visible`. At each notice, lists the user's orders from the read
/// model and fails unless the order is there (a notice never lies). Any
/// `order-failed`, or a second notice for an order, fails the test.
async fn check_notices(
    mut events: SseStream,
    http: reqwest::Client,
    list_url: String,
    token: String,
    expected: usize,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < expected {
        let frame = events.next_event().await;
        let data = frame.json();
        let id = data["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            frame.event.as_deref(),
            Some("order-visible"),
            "a passing fault reached a user: {frame:?}"
        );
        // A notice recorded just before the fault may be read here after
        // it landed, when no list can be made (a closed index answers every
        // search with an error): then the first list that works must have it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let body = loop {
            let response = http
                .get(&list_url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let source = response
                .headers()
                .get("x-read-source")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == StatusCode::OK {
                assert_eq!(source.as_deref(), Some("read-model"));
                break body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order-visible for {id}, but the list keeps failing: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            order_ids(&body).contains(&id),
            "order-visible for {id}, but the list made right then does not return it: {body}"
        );
        assert!(!seen.contains(&id), "a second order-visible for {id}");
        seen.push(id);
    }
    seen
}

/// The newest sample on `/status/stream` for which `condition` holds.
async fn wait_for_sample(app: &TestApp, condition: impl Fn(&Value) -> bool) -> Value {
    let response = app
        .http
        .get(app.url("/status/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut samples = SseStream::new(response);
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = samples.next_event().await;
            if frame.event.as_deref() == Some("sample") {
                let sample = frame.json();
                if condition(&sample) {
                    return sample;
                }
            }
        }
    })
    .await
    .expect("/status/stream never showed the expected state")
}

async fn burst_through(fault: Fault, refresh: RefreshMode) {
    let mut settings = test_settings().await;
    settings.refresh_mode = refresh;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (events, _) = app.open_events_ready(&user).await;
    let mut checker = Some(tokio::spawn(check_notices(
        events,
        app.http.clone(),
        app.url("/api/orders?limit=100"),
        user.token.clone(),
        BURST,
    )));

    // The burst: every write answers 201 whatever Elasticsearch does; the
    // fault lands after the first few.
    let (fault_now, at_fault) = oneshot::channel::<()>();
    let (fault_applied, applied) = oneshot::channel::<()>();
    let (http, url, token) = (app.http.clone(), app.url("/api/orders"), user.token.clone());
    let burst = tokio::spawn(async move {
        let mut fault_now = Some(fault_now);
        let mut applied = Some(applied);
        let mut ids = Vec::with_capacity(BURST);
        for n in 0..BURST {
            if n == BEFORE_FAULT {
                fault_now.take().unwrap().send(()).unwrap();
                applied.take().unwrap().await.unwrap();
            }
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({ "items": [{ "sku": format!("BURST-{n}"), "quantity": 1, "unit_price_cents": 100 }] }))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::CREATED,
                "order {n} of the burst"
            );
            let body: Value = response.json().await.unwrap();
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        ids
    });

    at_fault.await.unwrap();
    apply(&app, fault).await;
    fault_applied.send(()).unwrap();
    let placed = burst.await.unwrap();
    let kind = kind_of(fault);
    let mut checker_done = None;
    let failing = format!("sightline_pipeline_failing{{kind=\"{kind}\"}}");

    if matches!(fault, Fault::AliasDeleted | Fault::SummariesAliasDeleted) {
        // Nothing to fix by hand: every order becomes visible, and no notice
        // comes for an order the list cannot return (as it would with an
        // index auto-created under the alias's name).
        let mut seen = tokio::time::timeout(Duration::from_secs(120), checker.take().unwrap())
            .await
            .expect("not every order became visible after the alias was deleted")
            .unwrap();
        seen.sort();
        checker_done = Some(seen);
        // The app met the missing alias and put it back (nothing else
        // would); the counter names the failure it met. (Another test of
        // this binary may count the same kind: this only checks the name.)
        let name = if fault == Fault::AliasDeleted {
            "orders"
        } else {
            "summaries"
        };
        let alias = format!("{}{name}", app.settings.index_prefix);
        let url = format!(
            "{}/_alias/{alias}",
            app.settings.elasticsearch_url.trim_end_matches('/')
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        while !reqwest::get(&url).await.unwrap().status().is_success() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the alias {alias} was never restored"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let m = app.metrics_text().await;
        assert!(
            metric_value(&m, &format!("{BATCH_FAILURES}{{kind=\"{kind}\"}}"))
                .is_some_and(|n| n >= 1.0),
            "{m}"
        );
    } else {
        // Retried, not parked: the failure shows on /status with its kind
        // and start, batch after batch, while the backlog holds the orders.
        let sample = wait_for_sample(&app, |s| {
            assert_eq!(
                s["dead_letters"], 0,
                "an operational fault dead-lettered events: {s}"
            );
            s["failure"]["kind"] == kind
                && s["failure"]["batches"].as_u64().unwrap_or(0) >= 2
                && s["backlog"].as_i64().unwrap_or(0) > 0
        })
        .await;
        assert!(sample["failure"]["since"].as_i64().unwrap() <= sample["t"].as_i64().unwrap());
        let page = app.text_of("/status").await;
        assert!(page.contains(&format!("{kind} since")), "{page}");
        let m = app.metrics_text().await;
        assert_eq!(metric_value(&m, &failing), Some(1.0), "{m}");
        let since = metric_value(&m, "sightline_pipeline_failing_since_timestamp_seconds");
        assert!(since.is_some_and(|s| s > 0.0), "{m}");
        assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
        fix(&app, fault).await;
    }

    // Retried (not an alias the app restores by itself at once).
    let waited_out = checker_done.is_none();
    let seen = match checker_done {
        Some(seen) => seen,
        None => {
            let mut seen = tokio::time::timeout(Duration::from_secs(120), checker.take().unwrap())
                .await
                .expect("not every order became visible after the fix")
                .unwrap();
            seen.sort();
            seen
        }
    };
    let mut placed = placed;
    placed.sort();
    assert_eq!(seen, placed, "one order-visible per order");

    // Every order exactly once in the list, nothing parked, nobody told of
    // a failure, and the pipeline healthy again.
    let (source, list) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(source, "read-model");
    if waited_out {
        // Their journeys say where they waited: retried for the fault's
        // kind, then indexed; every journey's stages in time order.
        let mut retried = 0;
        for id in &placed {
            let journey = app
                .user_json(&user, &format!("/api/orders/{id}/journey"))
                .await;
            let stages = journey["stages"].as_array().unwrap();
            let ats: Vec<&str> = stages.iter().map(|s| s["at"].as_str().unwrap()).collect();
            assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{journey}");
            let position = |name: &str| stages.iter().position(|s| s["stage"] == name);
            if let Some(at) = position("retrying") {
                retried += 1;
                assert_eq!(stages[at]["reason"], kind, "{journey}");
                assert!(position("indexed").is_some_and(|i| i > at), "{journey}");
            }
        }
        assert!(
            retried > 0,
            "no journey shows the retries of the {kind} fault"
        );
    }
    let mut listed = order_ids(&list);
    listed.sort();
    assert_eq!(listed, placed, "every order exactly once");
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM notices WHERE kind = 'order-failed'")
            .await,
        0
    );
    // (The stream starts with the kept history: only a sample from now on counts.)
    let now = chrono::Utc::now().timestamp_millis();
    wait_for_sample(&app, |s| {
        s["t"].as_i64().unwrap_or(0) > now && s["failure"].is_null() && s["backlog"] == 0
    })
    .await;
    let m = app.metrics_text().await;
    // (A failure the monitor never sampled has no series at all.)
    assert_ne!(metric_value(&m, &failing), Some(1.0), "{m}");
    assert_eq!(
        metric_value(&m, "sightline_pipeline_failing_since_timestamp_seconds"),
        Some(0.0),
        "{m}"
    );

    // The aliases are back on the indices they were on, and no index took
    // their names.
    for name in ["orders", "summaries"] {
        let alias = format!("{}{name}", app.settings.index_prefix);
        let aliases = es(&app, reqwest::Method::GET, &format!("_alias/{alias}"), None).await;
        assert_eq!(
            aliases.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec![&format!("{alias}_v1")],
            "{aliases}"
        );
    }
    // And the summary counted every order once.
    let summary: Value = app.user_json(&user, "/api/summary").await;
    assert_eq!(summary["orders_placed"], BURST, "{summary}");
}

#[tokio::test]
async fn a_closed_orders_index_holds_orders_back_and_parks_none_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    burst_through(Fault::Closed, RefreshMode::Explicit).await;
}

#[tokio::test]
async fn a_closed_orders_index_parks_none_with_wait_for_refreshes_either_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    burst_through(Fault::Closed, RefreshMode::WaitFor).await;
}

#[tokio::test]
async fn a_write_block_on_the_orders_index_holds_orders_back_and_parks_none_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    burst_through(Fault::WriteBlocked, RefreshMode::Explicit).await;
}

#[tokio::test]
async fn a_deleted_summaries_alias_is_restored_too_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    burst_through(Fault::SummariesAliasDeleted, RefreshMode::Explicit).await;
}

#[tokio::test]
async fn a_deleted_alias_is_restored_and_no_index_is_auto_created_in_its_place_needs_elasticsearch()
{
    crate::helpers::require_elasticsearch();
    burst_through(Fault::AliasDeleted, RefreshMode::Explicit).await;
}
