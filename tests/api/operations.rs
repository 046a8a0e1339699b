//! Operating Sightline: `/metrics`, the lag SLO monitor, `/status` and its
//! stream, and the compose file.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{SseStream, TestApp, WAIT, spawn_app};

async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The value of an unlabelled series (`name value`), if listed.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name).then(|| value.parse().expect("a metric value is a number"))
    })
}

#[tokio::test]
async fn metrics_expose_the_pipeline_once_an_order_is_visible() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let (mut events, _) = app.open_events_ready(&user).await;
    let order = app.place_simple_order(&user, "GAUGE-1").await;
    let frame = events.next_order_visible().await;
    assert_eq!(frame.json()["id"], order["id"]);

    // The database-derived gauges come from the monitor's first sample,
    // taken within a second of start.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = scrape(&app).await;
        if value(&metrics, "sightline_outbox_backlog").is_some() {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the monitor never sampled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (family, kind) in [
        ("sightline_outbox_backlog", "gauge"),
        ("sightline_outbox_oldest_pending_age_seconds", "gauge"),
        ("sightline_outbox_dead_letters", "gauge"),
        ("sightline_projection_lag_seconds", "gauge"),
        ("sightline_projection_lag_events", "gauge"),
        ("sightline_lag_slo_seconds", "gauge"),
        ("sightline_lag_slo_breached", "gauge"),
        ("sightline_sse_streams", "gauge"),
        ("sightline_commit_to_searchable_seconds", "histogram"),
        ("sightline_commit_to_notice_sent_seconds", "histogram"),
        ("sightline_es_bulk_seconds", "histogram"),
        ("sightline_duplicates_acknowledged_total", "counter"),
        ("sightline_dead_letters_total", "counter"),
        ("sightline_notices_sent_total", "counter"),
        ("sightline_notices_dropped_total", "counter"),
        ("sightline_http_requests_total", "counter"),
        ("sightline_http_request_duration_seconds", "histogram"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} {kind}\n")),
            "/metrics lacks the {kind} {family}:\n{metrics}"
        );
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "{family} has no help text"
        );
    }
    assert!(
        metrics.lines().any(|line| {
            line.starts_with("sightline_http_requests_total{")
                && line.contains(r#"route="/api/orders""#)
                && line.contains(r#"method="POST""#)
                && line.contains(r#"status="201""#)
        }),
        "no request count for POST /api/orders 201:\n{metrics}"
    );
    // Routes are labelled by their pattern, never the raw path.
    let id = order["id"].as_str().unwrap();
    app.get(&user, &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap();
    let metrics = scrape(&app).await;
    assert!(metrics.contains(r#"route="/api/orders/{id}""#), "{metrics}");
    assert!(!metrics.contains(id), "a raw path leaked into a label");
}

// Exact counts of this test's own notices, commit → searchable and
// duplicates: tests/api/proofs.rs, on the built binary (a process of its own).

#[tokio::test]
async fn status_page_shows_backlog_lag_and_health_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    // Two orders held back: the first in the projector's hands, the second
    // behind it.
    let hold = app.hold_notices().await;
    let first = app.place_simple_order(&user, "STATUS-1").await;
    app.wait_until_projector_blocked().await;
    let second = app.place_simple_order(&user, "STATUS-2").await;

    // The page shows the monitor's latest sample (one a second): wait for
    // the one taken after the second order.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (csp, page) = loop {
        let response = app.http.get(app.url("/status")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let page = response.text().await.unwrap();
        if page.contains(r#"<dd data-field="backlog">2</dd>"#) {
            break (csp, page);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog of two is not shown:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains(r#"data-field="lag""#), "no lag shown");
    let slo = format!("SLO {:.1} s", app.settings.lag_slo_ms as f64 / 1000.0);
    assert!(page.contains(&slo), "no {slo} shown");
    assert!(page.contains(r#"id="postgres-tile" data-health="up""#));
    assert!(page.contains(r#"id="elasticsearch-tile" data-health="up""#));
    assert!(page.contains(r#"<polyline id="lag-line""#), "no chart");
    // The inline script runs under a per-response nonce, nothing else inline.
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the CSP names a nonce");
    assert!(page.contains(&format!(r#"<script nonce="{nonce}">"#)));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );

    hold.release().await;
    app.wait_until_visible(&user, first["id"].as_str().unwrap())
        .await;
    app.wait_until_visible(&user, second["id"].as_str().unwrap())
        .await;
    // Visible comes a moment before the relay's commit marks it published.
    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        let page = app.text_of("/status").await;
        if page.contains(r#"<dd data-field="backlog">0</dd>"#) {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never showed 0:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.contains(" UTC (") && !page.contains("none since start"),
        "the last batch is not shown:\n{page}"
    );
}

#[tokio::test]
async fn status_stream_sends_samples() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/status/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = SseStream::new(response);
    let frame = stream.next_event().await;
    assert_eq!(frame.event.as_deref(), Some("sample"), "{frame:?}");
    let sample: Value = frame.json();
    assert!(sample["t"].as_i64().is_some_and(|t| t > 0), "{sample}");
    assert!(sample["lag_seconds"].as_f64().is_some(), "{sample}");
    assert!(sample["backlog"].as_i64().is_some(), "{sample}");
    assert_eq!(sample["postgres"], true, "{sample}");
    assert_eq!(
        sample["slo_seconds"],
        app.settings.lag_slo_ms as f64 / 1000.0,
        "{sample}"
    );
    // And the next one, later.
    let next = stream.next_event().await.json();
    assert!(next["t"].as_i64() > sample["t"].as_i64(), "{next}");
}

// The lag gauges and the SLO breach: tests/api/proofs.rs, on the built
// binary (the gauges are process-wide; every app's monitor here sets them).

/// Needs `docker-compose`: scripts/test installs it, and selects this test
/// out by name (a reported skip) where it cannot, outside CI.
#[test]
fn compose_file_is_valid() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config", "-q"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "docker-compose is needed: scripts/test installs it (apt-get install docker-compose): {e}"
            )
        });
    assert!(
        output.status.success(),
        "docker-compose config rejected compose.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
