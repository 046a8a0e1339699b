//! Liveness, readiness and metrics.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;
use sightline_core::config::BusKind;

/// The process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = crate::schemas::Health)),
    security(()),
)]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 while this instance can take writes (PostgreSQL answers). Elasticsearch
/// (or a distributed bus) being down makes it degraded, not unready: the write
/// path stays in rotation.
/// Projection lag never changes readiness either (see `monitoring`).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "PostgreSQL answers: `ready`, or `degraded` while Elasticsearch is down (writes still work).", body = crate::schemas::Readiness),
        (status = 503, description = "PostgreSQL does not answer, or a background task (named in `failed_task`) has stopped and the instance is about to exit: `unready`.", body = crate::schemas::Readiness, headers(
            ("Retry-After" = u64, description = "Seconds."),
        )),
    ),
    security(()),
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.db),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    // The same-database mode does not use Elasticsearch at all.
    let same_database =
        state.settings.read_store == sightline_core::config::ReadStoreKind::Postgres;
    let elasticsearch = same_database || state.search_index.ping().await;
    let word = |up: bool| if up { "up" } else { "down" };
    // A distributed bus down is like Elasticsearch down: writes go on, the
    // backlog waits (its last look, at most a couple of seconds old).
    let bus = match state.settings.bus {
        // Nothing is published in the same-database mode.
        _ if same_database => "not used",
        BusKind::Inprocess => "in-process",
        BusKind::Nats => match state.bus.latest() {
            None => "unknown",
            Some(look) => word(look.healthy()),
        },
    };
    // A dead background task (see `supervision`) makes the instance
    // unready whatever else answers: its notices or its backlog have stopped.
    let dead = state.task_health.dead();
    let (status, overall) = match (postgres && dead.is_none(), elasticsearch && bus != "down") {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unready"),
    };
    let mut body = json!({
        "status": overall,
        "postgres": word(postgres),
        "elasticsearch": if same_database { "not used" } else { word(elasticsearch) },
        "bus": bus,
    });
    if let Some(dead) = &dead {
        body["failed_task"] = json!({ "name": dead.name, "error": dead.error });
    }
    let mut response = (status, Json(body)).into_response();
    if !postgres {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    }
    response
}

/// Prometheus text. The database-derived gauges come from the lag monitor's
/// latest sample (taken every second), never from a query per scrape.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sightline_core::monitoring::render_metrics(&state.monitor, &state.metrics),
    )
}

/// Counts and times every request by its matched route (`/api/orders/{id}`,
/// never the raw path, so the label set stays small), method and status.
/// Unmatched paths share the route `unmatched`. The duration is until the
/// response head: a stream's lifetime is not a request's latency.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", response.status().as_str().to_owned()),
    ];
    metrics::counter!("sightline_http_requests_total", &labels).increment(1);
    metrics::histogram!("sightline_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Methods are a small fixed set; anything else is `other`, so a client
/// cannot invent label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

use sightline_core::metric_catalogue::{Listed, Metric};

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::counter("sightline_http_requests_total", "HTTP requests by matched route, method and status.").listed(Listed::OnFirstUse),
    Metric::seconds("sightline_http_request_duration_seconds", "HTTP request duration until the response head, by matched route, method and status.").listed(Listed::OnFirstUse),
];
