//! Traces across the process boundary (issue #27): with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, one order is one trace in Jaeger, with
//! spans from each process of the real binary it went through — the web's
//! HTTP request, the relay's hand-over, the bus's hop and the projector's
//! bulk write, refresh and notice (docs/OPERATIONS.md, Traces).
//!
//! Needs Jaeger (`scripts/services start jaeger`; scripts/test starts it):
//! its OTLP/HTTP receiver (`JAEGER_OTLP_URL`, default
//! `http://127.0.0.1:14318`) and its query API (`JAEGER_QUERY_URL`, default
//! `http://127.0.0.1:16686`). Without it these tests fail, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::binary::{Server, TestData};
use crate::helpers::nats::{TestStream, nats_settings};
use crate::helpers::{WAIT, test_settings, visible_id};

fn otlp_url() -> String {
    std::env::var("JAEGER_OTLP_URL").unwrap_or_else(|_| "http://127.0.0.1:14318".to_owned())
}

fn query_url() -> String {
    std::env::var("JAEGER_QUERY_URL").unwrap_or_else(|_| "http://127.0.0.1:16686".to_owned())
}

/// Fails the test at once, saying what to start, when Jaeger does not answer.
async fn require_jaeger() {
    let url = format!("{}/api/services", query_url());
    match reqwest::get(&url).await {
        Ok(r) if r.status() == StatusCode::OK => {}
        other => panic!(
            "Jaeger is not reachable at {url} ({:?}): start it with `scripts/services start jaeger` \
             (scripts/test does), or point JAEGER_QUERY_URL and JAEGER_OTLP_URL at one",
            other.map(|r| r.status())
        ),
    }
}

/// The environment of one process: its roles, exporting to Jaeger under
/// the default service name (`sightline-<roles>`: an `OTEL_SERVICE_NAME` of
/// the test's environment is overridden), spans sent every 100 ms instead of
/// every 5 s. Other runs' traces in the same Jaeger do not matter: each test
/// finds its order's trace by the order's id or by its own trace id.
fn traced_env<'a>(roles: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("ROLES", roles.to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url()),
        ("OTEL_SERVICE_NAME", String::new()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

async fn start(settings: &sightline::config::Settings, env: &[(&str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(settings, &settings.elasticsearch_url, &env).await
}

/// Places an order through the API, with `traceparent` if given, and waits
/// for its `order-visible` notice. Returns the order's id.
async fn place_and_see(web: &Server, traceparent: Option<&str>) -> String {
    let token = web.new_user().await;
    let mut events = web.open_events(&token).await;
    let mut request = web
        .http
        .post(web.url("/api/orders"))
        .bearer_auth(&token)
        .json(&json!({ "items": [{ "sku": "TRACED-1", "quantity": 1, "unit_price_cents": 100 }] }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let notice = tokio::time::timeout(WAIT, events.next_order_visible())
        .await
        .expect("the order was never announced");
    assert_eq!(visible_id(&notice), id);
    id
}

/// One trace as Jaeger's query API gives it: each span's operation and
/// process (service name), and whether its parents are all in the trace.
#[derive(Debug)]
struct Trace {
    id: String,
    /// (service, operation) of every span.
    spans: BTreeSet<(String, String)>,
    /// Spans whose parent is neither in the trace nor the caller's span.
    orphans: Vec<String>,
}

fn parse_trace(trace: &Value, outside_parent: Option<&str>) -> Trace {
    let processes: BTreeMap<String, String> = trace["processes"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(id, process)| {
                    (
                        id.clone(),
                        process["serviceName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    let mut orphans = Vec::new();
    for span in &spans {
        for reference in span["references"].as_array().into_iter().flatten() {
            let parent = reference["spanID"].as_str().unwrap_or_default();
            if reference["refType"] == "CHILD_OF"
                && !ids.contains(parent)
                && Some(parent) != outside_parent
            {
                orphans.push(format!("{} (parent {parent})", span["operationName"]));
            }
        }
    }
    Trace {
        id: trace["traceID"].as_str().unwrap_or_default().to_owned(),
        spans: spans
            .iter()
            .map(|span| {
                let process = span["processID"].as_str().unwrap_or_default();
                (
                    processes.get(process).cloned().unwrap_or_default(),
                    span["operationName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect(),
        orphans,
    }
}

/// Polls Jaeger (spans arrive in batches, from each process on its own)
/// until `find` returns traces of which one holds every `(service,
/// operation)` of `expected`; fails with what it did find after `WAIT`.
async fn trace_with(
    find: impl Fn() -> reqwest::RequestBuilder,
    outside_parent: Option<&str>,
    expected: &[(&str, &str)],
) -> Trace {
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(response) = find().send().await
            && response.status() == StatusCode::OK
            && let Ok(body) = response.json::<Value>().await
        {
            last = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| parse_trace(t, outside_parent))
                .collect();
            if let Some(i) = last.iter().position(|trace| {
                expected
                    .iter()
                    .all(|(s, o)| trace.spans.contains(&((*s).to_owned(), (*o).to_owned())))
            }) {
                return last.swap_remove(i);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trace in Jaeger with every one of {expected:?}; found {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The in-process bus runs the relay and the projector in one process (it
/// hands batches straight to the projector), so two processes: `--roles
/// web` and `--roles relay,projector`. The order's trace is found by its id
/// (the `order_id` attribute of the web's `place_order` span).
#[tokio::test]
async fn one_trace_spans_the_web_and_pipeline_processes_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    require_jaeger().await;
    let settings = test_settings().await;
    let _data = TestData(settings.clone());
    let web = start(&settings, &traced_env("web", &[])).await;
    let _pipeline = start(&settings, &traced_env("relay,projector", &[])).await;

    let order = place_and_see(&web, None).await;

    let http = reqwest::Client::new();
    let tags = json!({ "order_id": order }).to_string();
    let find = || {
        http.get(format!("{}/api/traces", query_url())).query(&[
            ("service", "sightline-web"),
            ("tags", tags.as_str()),
            ("lookback", "1h"),
            ("limit", "5"),
        ])
    };
    let (web_s, pipeline_s) = ("sightline-web", "sightline-relay-projector");
    let trace = trace_with(
        find,
        None,
        &[
            (web_s, "http"),
            (web_s, "place_order"),
            (pipeline_s, "relay.publish"),
            (pipeline_s, "projector.project"),
            (pipeline_s, "projector.bulk"),
            (pipeline_s, "projector.refresh"),
            (pipeline_s, "projector.notice"),
        ],
    )
    .await;
    assert!(
        trace.orphans.is_empty(),
        "trace {} has spans without their parent: {:?}",
        trace.id,
        trace.orphans
    );
}

/// `BUS=nats`: three processes, `--roles web`, `--roles relay`, `--roles
/// projector`; the request comes with a caller's `traceparent`, which the
/// web continues, so the order's trace is the caller's trace id.
#[tokio::test]
async fn one_trace_spans_web_relay_and_projector_processes_over_nats_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    require_jaeger().await;
    let settings = nats_settings(test_settings().await);
    let _data = TestData(settings.clone());
    let _stream = TestStream(settings.clone());
    let nats = [
        ("BUS", "nats"),
        ("NATS_URL", settings.nats_url.as_str()),
        ("NATS_STREAM", settings.nats_stream.as_str()),
        ("NATS_MAX_AGE_HOURS", "1"),
    ];
    let web = start(&settings, &traced_env("web", &nats)).await;
    let _relay = start(&settings, &traced_env("relay", &nats)).await;
    let _projector = start(&settings, &traced_env("projector", &nats)).await;

    // The caller's own span: the web's request span is its child.
    let trace_id = Uuid::new_v4().simple().to_string();
    let caller = &Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{trace_id}-{caller}-01");
    place_and_see(&web, Some(&traceparent)).await;

    let http = reqwest::Client::new();
    let find = || http.get(format!("{}/api/traces/{trace_id}", query_url()));
    let (web_s, relay_s, projector_s) = ("sightline-web", "sightline-relay", "sightline-projector");
    let trace = trace_with(
        find,
        Some(caller),
        &[
            (web_s, "http"),
            (web_s, "place_order"),
            (relay_s, "relay.publish"),
            (projector_s, "bus.deliver"),
            (projector_s, "projector.project"),
            (projector_s, "projector.bulk"),
            (projector_s, "projector.refresh"),
            (projector_s, "projector.notice"),
        ],
    )
    .await;
    assert_eq!(trace.id, trace_id, "the caller's trace is continued");
    assert!(
        trace.orphans.is_empty(),
        "trace {} has spans without their parent: {:?}",
        trace.id,
        trace.orphans
    );
}
