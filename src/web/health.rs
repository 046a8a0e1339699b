//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 while this instance can take writes (PostgreSQL answers). Elasticsearch
/// being down makes it degraded, not unready: the write path stays in rotation.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.db),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let elasticsearch = state.read_store.ping().await;
    let word = |up: bool| if up { "up" } else { "down" };
    let (status, overall) = match (postgres, elasticsearch) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unready"),
    };
    let mut response = (
        status,
        Json(json!({
            "status": overall,
            "postgres": word(postgres),
            "elasticsearch": word(elasticsearch),
        })),
    )
        .into_response();
    if !postgres {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    }
    response
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(backlog) = crate::outbox::backlog(&state.db).await {
        metrics::gauge!("sightline_outbox_backlog").set(backlog as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
