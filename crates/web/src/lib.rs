//! The HTTP surface, and all of it: the JSON API (`api`), the pages, health,
//! status and who may see it (`ops_access`), CORS, the extractors, the limits and admission, the shared state,
//! the one error type, and the layers that apply to every route. No stage
//! below imports from here.

pub mod admission;
pub mod api;
pub mod cors;
pub mod error;
pub mod event_streams;
pub mod extract;
pub mod health;
pub mod limits;
pub mod openapi;
pub mod ops_access;
pub mod pages;
pub mod schemas;
pub mod serve;
pub mod state;
pub mod status;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::state::AppState;

pub use crate::limits::BODY_LIMIT;

/// Describes HTTP's metrics to the process's recorder (each table lives
/// beside the code that records them). Start-up calls it once.
pub fn describe_metrics() {
    sightline_core::metric_catalogue::describe(&[
        api::events::METRICS,
        serve::METRICS,
        admission::METRICS,
        status::METRICS,
        limits::METRICS,
        health::METRICS,
    ]);
}

/// Everything a `web` instance serves.
pub fn app(state: AppState) -> Router {
    with_layers(
        Router::new()
            .merge(api::router())
            .merge(pages::router())
            .merge(operations(&state))
            .route("/api/openapi.json", get(openapi::serve)),
        state,
    )
}

/// What a pipeline-only instance serves: health, metrics and `/status`
/// (with the stylesheet it links, which `pages` serves on web instances).
pub fn operations_app(state: AppState) -> Router {
    with_layers(
        operations(&state).route("/static/sightline.css", get(status::stylesheet)),
        state,
    )
}

fn operations(state: &AppState) -> Router<AppState> {
    // What shows the pipeline is guarded (see `ops_access`); load
    // balancers' probes and the sign-in form stay outside the guard.
    let guard = ops_access::OpsGuard::new(&state.settings);
    let sign_in = guard.clone();
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/status", get(status::page))
        .route("/status/stream", get(status::stream))
        .route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| ops_access::guard(guard.clone(), request, next),
        ))
        .route(
            "/status/login",
            post(move |headers, form| ops_access::sign_in(sign_in.clone(), headers, form)),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    routes
        .fallback(|| async { AppError::NotFound })
        // After every route: applies to the method routers registered so far.
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        // Innermost, inside the hang-up task: a write waits for its turn
        // there and holds it until its own code has finished.
        .layer(axum::middleware::from_fn({
            let admission = state.write_admission.clone();
            move |request: Request, next: Next| {
                crate::admission::admit_writes(admission.clone(), request, next)
            }
        }))
        // A client that hangs up does not cancel what its request started
        // (see `finish_after_hang_up`).
        .layer(axum::middleware::from_fn(finish_after_hang_up))
        // Inside the request count, so a 408 is counted like any answer.
        .layer(axum::middleware::from_fn({
            let timeout = state.settings.body_timeout();
            move |request: Request, next: Next| crate::limits::body_timeout(timeout, request, next)
        }))
        .layer(axum::middleware::from_fn(health::track_requests))
        // After a request that may have written (answered, so committed or
        // not), the relay is woken: one NOTIFY for many writes, outside
        // their transactions (see `outbox::wake`).
        .layer(axum::middleware::from_fn({
            let waker = state.relay_waker.clone();
            move |request: Request, next: Next| {
                let waker = waker.clone();
                async move {
                    let reads = request.method().is_safe();
                    let response = next.run(request).await;
                    if !reads {
                        waker.wake();
                    }
                    response
                }
            }
        }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id);
                // A caller's W3C `traceparent` is continued (only while
                // traces are exported: otherwise this returns at once).
                sightline_core::telemetry::traces::continue_from(
                    &span,
                    request
                        .headers()
                        .get(sightline_core::telemetry::traces::TRACEPARENT)
                        .and_then(|v| v.to_str().ok()),
                );
                span
            }),
        )
        // Inside the request-id layers: preflight answers carry X-Request-Id too.
        .layer(cors::layer(&state.settings))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        // Outermost: a client's id is vetted before anything logs it.
        .layer(axum::middleware::map_request(vet_request_id))
        .with_state(state)
}

/// The longest client-supplied `X-Request-Id` kept.
pub const REQUEST_ID_MAX: usize = 64;

/// A client's `X-Request-Id` goes into every log line of its request and back
/// in the response, so only a short one of a safe alphabet (`A-Z a-z 0-9 - _
/// . :`) is kept; any other is dropped, and `SetRequestIdLayer` makes a new one.
async fn vet_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let acceptable = |value: &axum::http::HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= REQUEST_ID_MAX
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let headers = request.headers_mut();
    let values: Vec<_> = headers.get_all("x-request-id").iter().collect();
    if values.len() > 1 || values.first().is_some_and(|v| !acceptable(v)) {
        headers.remove("x-request-id");
    }
    request
}

/// Runs the handler in a task of its own, so that a client hanging up (hyper
/// then drops the request's future) never stops it half-way: a transaction
/// is committed or rolled back by its own code, never abandoned mid-query
/// (an abandoned query's connection is closed under the pool's feet). A
/// write the client no longer waits for still commits; its retry with the
/// same id finds it. (Overload is `web::admission`'s concern.)
async fn finish_after_hang_up(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    match tokio::spawn(next.run(request).in_current_span()).await {
        Ok(response) => response,
        // A handler's panic stays a panic, as it was without the task.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => AppError::Unavailable("the server").into_response(),
    }
}
