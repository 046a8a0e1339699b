//! `/status`: the pipeline at a glance for a person — backlog, lag against
//! the SLO, the last batch, PostgreSQL and Elasticsearch, which failure
//! keeps the relay failing since when, the slowest journeys of the last
//! minutes (which stage dominated each) — with a live chart of lag fed by
//! `/status/stream` (one `event: sample` per monitor sample).
//!
//! Guarded with `/metrics` (see `ops_access`: open on loopback, else
//! `OPS_TOKEN` or `OPS_OPEN=true`): it shows counts and timings, never user
//! data. It reads the monitor's samples (one a second)
//! and never takes its own, so readers cost the databases nothing.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, stream};
use rand::Rng;
use tokio_stream::wrappers::WatchStream;

use crate::error::AppError;
use crate::state::AppState;
use sightline_core::bus::BusLook;
use sightline_core::config::{BusKind, Role};
use sightline_core::monitoring::{self, Sample};

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    /// Allows the page's own inline script and style, nothing else inline.
    nonce: String,
    overall: &'static str,
    overall_text: &'static str,
    lag: String,
    lag_state: &'static str,
    slo: String,
    slo_seconds: f64,
    backlog: String,
    dead_letters: String,
    last_batch: String,
    postgres: &'static str,
    elasticsearch: &'static str,
    /// `ok` or `failing`, and what the relay tile says.
    relay_state: &'static str,
    relay: String,
    /// `ok` or `failing`, and the bus between relay and projectors.
    bus_state: &'static str,
    bus: String,
    sampled_at: String,
    window_minutes: usize,
    /// The slowest journeys of the last [`SLOWEST_WITHIN`], slowest first.
    slowest: Vec<SlowJourney>,
    slowest_minutes: u64,
}

/// How far back `/status` looks for the slowest journeys, and how many.
const SLOWEST_WITHIN: Duration = Duration::from_secs(5 * 60);
const SLOWEST: i64 = 5;

/// A slow journey as the page lists it: the order (for `sightline journey`),
/// its total, the step that dominated, every step.
struct SlowJourney {
    order: String,
    version: i32,
    total: String,
    dominant: String,
    steps: String,
}

fn millis(d: chrono::Duration) -> String {
    format!(
        "{:.1} ms",
        d.num_microseconds().unwrap_or(0) as f64 / 1000.0
    )
}

impl SlowJourney {
    fn from(journey: &sightline_core::journey::Journey) -> Self {
        let steps = journey
            .stages
            .windows(2)
            .map(|w| format!("{} {}", w[1].stage.as_str(), millis(w[1].at - w[0].at)))
            .collect::<Vec<_>>()
            .join(" · ");
        Self {
            order: journey.id.to_string(),
            version: journey.version,
            total: journey.total().map_or_else(String::new, millis),
            dominant: journey
                .slowest_step()
                .map_or_else(String::new, |(stage, took)| {
                    format!("{} ({})", stage.as_str(), millis(took))
                }),
            steps,
        }
    }
}

/// One word and one phrase for the whole picture; the page's script uses
/// the same rules.
fn overall(sample: &Sample) -> (&'static str, &'static str) {
    if !sample.postgres {
        ("down", "PostgreSQL is down: writes are refused")
    } else if sample.same_database {
        ("ok", "Healthy (READ_STORE=postgres: visible at commit)")
    } else if !sample.elasticsearch {
        (
            "degraded",
            "Elasticsearch is down: orders are kept, search waits",
        )
    } else if sample.failure.is_some() {
        (
            "degraded",
            "The read store refuses writes: orders are kept and retried, notices wait",
        )
    } else if sample.slo_breached {
        ("lagging", "Lag is above the SLO")
    } else {
        ("ok", "Healthy")
    }
}

/// `0.2 s`, `42 s`, `3 min 5 s`.
fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{} s", s.round() as i64)
    } else {
        let whole = s.round() as i64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

fn up(ok: bool) -> &'static str {
    if ok { "up" } else { "down" }
}

fn last_batch(sample: &Sample, runs_pipeline: bool) -> String {
    match (sample.last_batch_at, sample.last_batch_size) {
        (Some(at), Some(size)) => {
            let ago = (sample.t - at).max(0) as f64 / 1000.0;
            let time = DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
            format!(
                "{size} event{} at {} UTC ({} ago)",
                if size == 1 { "" } else { "s" },
                time.format("%H:%M:%S"),
                seconds(ago)
            )
        }
        _ if runs_pipeline => "none since start".to_owned(),
        _ => "no pipeline on this instance".to_owned(),
    }
}

/// The relay tile: which failure keeps it failing and since when, or `ok`.
fn relay(sample: &Sample) -> (&'static str, String) {
    match &sample.failure {
        Some(f) => {
            let since = DateTime::<Utc>::from_timestamp_millis(f.since).unwrap_or_default();
            let lasted = (sample.t - f.since).max(0) as f64 / 1000.0;
            (
                "failing",
                format!(
                    "{} since {} UTC ({}, {} failed batch{})",
                    f.kind,
                    since.format("%H:%M:%S"),
                    seconds(lasted),
                    f.batches,
                    if f.batches == 1 { "" } else { "es" }
                ),
            )
        }
        None => ("ok", "ok".to_owned()),
    }
}

/// The bus tile: the in-process bus, or the distributed bus's last look —
/// nodes up, the stream, the projectors' consumer.
fn bus(kind: BusKind, look: Option<BusLook>) -> (&'static str, String) {
    let look = match (kind, look) {
        (BusKind::Inprocess, _) => return ("ok", "in-process".to_owned()),
        (BusKind::Nats, None) => return ("unknown", "NATS: not looked at yet".to_owned()),
        (BusKind::Nats, Some(look)) => look,
    };
    if let Some(error) = look.error {
        return ("failing", format!("unreachable: {error}"));
    }
    let up = look.nodes.iter().filter(|(_, up)| *up).count();
    let down: Vec<&str> = look
        .nodes
        .iter()
        .filter(|(_, up)| !*up)
        .map(|(name, _)| name.as_str())
        .collect();
    let state = if look.healthy() && down.is_empty() {
        "ok"
    } else {
        "failing"
    };
    let leader = look
        .leader
        .map(|l| format!(" (leader {l})"))
        .unwrap_or_default();
    let down = if down.is_empty() {
        String::new()
    } else {
        format!(", down: {}", down.join(", "))
    };
    let text = format!(
        "NATS: {up}/{} nodes up{leader}{down} · stream {} · pending {} · unacked {} · redelivered {}",
        look.nodes.len(),
        look.stream_messages,
        look.consumer_pending,
        look.consumer_ack_pending,
        look.redelivered
    );
    (state, text)
}

/// `GET /status`: the monitor's latest sample, rendered. Never a sample of
/// its own: a crowd of readers costs the databases nothing more. The one
/// read it makes is the slowest journeys, bounded (the newest notices
/// only) and skipped when it fails.
pub async fn page(State(state): State<AppState>) -> Response {
    let Some(sample) = state
        .monitor
        .latest_within(monitoring::SAMPLE_EVERY * 3)
        .await
    else {
        return AppError::Unavailable("the pipeline monitor").into_response();
    };
    let (overall, overall_text) = overall(&sample);
    let (relay_state, relay) = relay(&sample);
    let (bus_state, bus) = bus(state.settings.bus, state.bus.latest());
    let unknown = || "unknown".to_owned();
    let slowest =
        sightline_core::journey::slowest(&state.db, SLOWEST_WITHIN, SLOWEST, sample.same_database)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the slowest journeys");
                Vec::new()
            });
    let page = StatusPage {
        nonce: nonce(),
        overall,
        overall_text,
        lag: sample.lag_seconds.map_or_else(unknown, seconds),
        lag_state: match sample.lag_seconds {
            None => "unknown",
            Some(_) if sample.slo_breached => "breached",
            Some(_) => "ok",
        },
        slo: seconds(sample.slo_seconds),
        slo_seconds: sample.slo_seconds,
        backlog: match sample.backlog {
            None => unknown(),
            Some(b) if sample.same_database => format!(
                "none: READ_STORE=postgres shows orders at commit ({b} event{} kept unpublished for a later move, not lag)",
                if b == 1 { "" } else { "s" }
            ),
            Some(b) => b.to_string(),
        },
        dead_letters: sample.dead_letters.map_or_else(unknown, |d| d.to_string()),
        last_batch: last_batch(&sample, state.settings.runs(Role::Relay)),
        postgres: up(sample.postgres),
        elasticsearch: if sample.same_database {
            "not used"
        } else {
            up(sample.elasticsearch)
        },
        relay_state,
        relay,
        bus_state,
        bus,
        sampled_at: sample.time().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        window_minutes: monitoring::HISTORY * monitoring::SAMPLE_EVERY.as_secs() as usize / 60,
        slowest: slowest.iter().map(SlowJourney::from).collect(),
        slowest_minutes: SLOWEST_WITHIN.as_secs() / 60,
    };
    match page.render() {
        Ok(body) => {
            let csp = format!(
                "default-src 'self'; script-src 'nonce-{n}'; style-src 'self' 'nonce-{n}'; \
                 img-src 'self' data:; object-src 'none'; base-uri 'none'; \
                 form-action 'self'; frame-ancestors 'none'",
                n = page.nonce
            );
            (
                StatusCode::OK,
                [
                    (header::CONTENT_SECURITY_POLICY, csp),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                    (header::REFERRER_POLICY, "same-origin".to_owned()),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                Html(body),
            )
                .into_response()
        }
        Err(e) => AppError::Internal(anyhow::Error::new(e).context("Failed to render /status"))
            .into_response(),
    }
}

fn nonce() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 16]>())
}

/// How long the status page waits before reconnecting its stream.
const RETRY: Duration = Duration::from_secs(2);

/// `GET /status/stream`: the kept history, then every new sample, each as
/// `event: sample` with the sample's JSON. Ends on shutdown.
pub async fn stream(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    // Capped: each stream costs a connection and a task, not a sample.
    let permit = state.limits.status_stream()?;
    metrics::gauge!("sightline_status_streams").increment(1.0);
    let permit = (permit, StatusStreamGauge);
    // Subscribe before reading the history so nothing falls between; a
    // sample in both is sent twice, and the page skips a repeated `t`.
    let mut receiver = state.monitor.subscribe();
    receiver.mark_unchanged();
    let history = state.monitor.history();
    let live = WatchStream::from_changes(receiver).filter_map(std::future::ready);
    let mut shutdown = state.shutdown.subscribe();
    let stopped = async move { shutdown.recv().await };
    let hello = Event::default()
        .retry(RETRY)
        .comment("pipeline samples, one a second");
    let samples = stream::iter(history)
        .chain(live)
        .map(|sample| sample_event(&sample));
    let events = stream::once(async { hello })
        .chain(samples)
        .take_until(stopped)
        .map(move |event| {
            let _ = &permit;
            Ok(event)
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.settings.sse_heartbeat())))
}

/// Decrements the open status streams gauge when the stream is dropped.
struct StatusStreamGauge;

impl Drop for StatusStreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("sightline_status_streams").decrement(1.0);
    }
}

fn sample_event(sample: &Sample) -> Event {
    Event::default()
        .event("sample")
        .data(serde_json::to_string(sample).unwrap_or_else(|_| "{}".to_owned()))
}

/// The stylesheet, for instances that serve no pages (`--roles
/// relay,projector`) but still serve `/status`.
pub async fn stylesheet(headers: axum::http::HeaderMap) -> axum::response::Response {
    super::pages::STYLESHEET.respond(&headers)
}

use metrics::Unit;
use sightline_core::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::gauge("sightline_status_streams", Unit::Count, "Open /status/stream streams on this instance."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(seconds(0.0), "0.0 s");
        assert_eq!(seconds(0.31), "0.3 s");
        assert_eq!(seconds(42.4), "42 s");
        assert_eq!(seconds(185.0), "3 min 5 s");
    }
}
