//! Where the notice leaves: `GET /api/events`, the user's notices as
//! Server-Sent Events — replayed from the log after `Last-Event-ID`, then live
//! from the hub.
//!
//! The ids are the user's own cursors ([`Cursor`]), never the global `seq`.
//! On every connection they strictly increase, and none is sent before the
//! client has everything up to it: an SSE client adopts an event's id as its
//! resume point the moment the event is dispatched, so an id ahead of an
//! undelivered notice would let a dropped connection skip it for good.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use crate::error::AppResult;
use crate::extract::client_addr::{ClientAddr, limit_key};
use crate::state::AppState;
use sightline_core::auth::CurrentUser;
use sightline_core::auth::session_watch::Ended;
use sightline_core::visibility::deliveries::{Deliveries, Via};
use sightline_core::visibility::notice_log::{self, Cursor, CursorCheck, Notice, Snapshot};
use sightline_core::visibility::sse_data;

/// Where the event stream is served (the accept loop serves it without
/// hyper's per-connection buffers: `web::event_streams`).
pub const EVENTS_PATH: &str = "/api/events";

/// How long a client waits before reconnecting.
const RETRY: Duration = Duration::from_millis(1000);

/// Notices read from the log per replay query: a stream holds at most one
/// page, however far behind its client is.
const REPLAY_PAGE: i64 = 500;

/// A heartbeat: one comment line and no blank line after it. A blank line
/// asks the client to dispatch whatever it has buffered, and some clients
/// (`httpx-sse`, for one) then surface an empty `message` event once any id
/// was seen; a lone comment line is ignored by every parser that follows the
/// spec, and the next real event's blank line dispatches only that event.
const HEARTBEAT: &[u8] = b": heartbeat\n";

/// One SSE event: `event:`, `id:`, `retry:` and a single-line `data:` (our
/// data is compact JSON), ended by the blank line that dispatches it.
fn frame(event: &str, id: Option<&Cursor>, retry: Option<Duration>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 64);
    if let Some(retry) = retry {
        out.push_str(&format!("retry: {}\n", retry.as_millis()));
    }
    out.push_str(&format!("event: {event}\n"));
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("data: {data}\n\n"));
    Bytes::from(out)
}

/// `order-visible` (or `order-failed`) as an SSE event; its id is the
/// user's cursor after it.
pub fn notice_event(notice: &Notice) -> Bytes {
    frame(
        &notice.kind,
        Some(&notice.cursor()),
        None,
        &sse_data::notice_data(notice),
    )
}

/// `session-ended`: the stream's session ended (signed out, or past its
/// end); the stream closes after it and a reconnect gets 401.
fn session_ended_event(why: Ended) -> Bytes {
    frame(
        "session-ended",
        None,
        None,
        &serde_json::to_string(&sse_data::SessionEndedData {
            reason: why.as_str(),
        })
        .expect("a static string serialises"),
    )
}

/// `ready` or `reset`, carrying the cursor the stream continues from.
fn cursor_event(kind: &str, cursor: &Cursor, reason: Option<&'static str>) -> Bytes {
    let data = match reason {
        None => serde_json::to_string(&sse_data::ReadyData::new(cursor)),
        Some(reason) => serde_json::to_string(&sse_data::ResetData {
            cursor: cursor.to_string(),
            reason,
        }),
    };
    frame(
        kind,
        Some(cursor),
        Some(RETRY),
        &data.expect("event data serialises"),
    )
}

/// The user's notices as Server-Sent Events. Each event's `data` is JSON:
/// `ready` ([`sse_data::ReadyData`]), `reset` ([`sse_data::ResetData`]),
/// `order-visible` ([`sse_data::OrderVisibleData`]), `order-failed`
/// ([`sse_data::OrderFailedData`]); `: heartbeat` comment lines keep an idle
/// stream open. Resume with `Last-Event-ID` (see docs/ARCHITECTURE.md, *Resuming the
/// event stream*).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    operation_id = "streamEvents",
    params(("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The `id` of the last event received (opaque): every notice after it is replayed first.")),
    responses(
        (status = 200, description = "An endless `text/event-stream`; see `x-sse-events` for each event's `data` schema.", content_type = "text/event-stream", body = String),
        (status = 429, description = "`too_many_streams`: too many open streams for this user or address.", body = crate::schemas::ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn events(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> AppResult<Response> {
    // Capped per user and per address (429 past it); held until the stream ends.
    let held = state
        .limits
        .streams
        .acquire(user.id, Some(limit_key(client)))?;
    // Subscribe before reading the log, so nothing falls between the two:
    // the subscription carries every notice the hub's snapshot `hub_head`
    // does not see, the replay reads the log as that snapshot sees it.
    let subscription = state.hub.subscribe(user.id);
    let hub_head = subscription.head;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(Cursor::parse));

    // `from`: the client has every notice of its stream up to here. Live
    // notices must be past it; the replay brings those in between.
    let (opening, from, replay) = match last_event_id {
        // A new client: it starts at its head and fetches its list.
        None => {
            let head = notice_log::stream_head(&state.db, user.id).await?;
            (cursor_event("ready", &head, None), head, false)
        }
        Some(Some(cursor)) => {
            let check = notice_log::check_cursor(
                &state.db,
                user.id,
                &cursor,
                state.settings.notice_retention(),
            )
            .await?;
            if check == CursorCheck::Resumable {
                // `ready` repeats the client's own cursor: the replayed
                // notices advance it, one by one.
                (cursor_event("ready", &cursor, None), cursor, true)
            } else {
                reset(&state, user.id, check.as_str()).await?
            }
        }
        // Malformed (or a plain number from an older server).
        Some(None) => reset(&state, user.id, "malformed").await?,
    };

    // The client's position in its stream: what it had, then what the
    // replay sent. Live notices at or below it are dropped: the client has
    // them (its cursor may be ahead of this instance's hub), or the replay
    // sent them (the hub was mid-read when the stream subscribed).
    let sent = Arc::new(AtomicI64::new(from.position));
    let replayed = if replay {
        replay_pages(
            state.db.clone(),
            state.deliveries.clone(),
            user.id,
            from.position,
            hub_head,
            sent.clone(),
        )
        .boxed()
    } else {
        stream::empty().boxed()
    };
    let user_id = user.id;
    let deliveries = state.deliveries.clone();
    let live = subscription
        .receiver
        .into_stream()
        // A lagging client is cut off; it resumes from the log on reconnect.
        .inspect(|item| {
            if let Err(BroadcastStreamRecvError::Lagged(missed)) = item {
                metrics::counter!("sightline_notices_dropped_total").increment(*missed);
            }
        })
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(move |item| {
            std::future::ready(match item {
                // The hub sends a user's notices in stream order, after the
                // replay has ended (the two are chained).
                Ok(n) if n.user_id == user_id && n.user_seq > sent.load(Ordering::Relaxed) => {
                    sent.store(n.user_seq, Ordering::Relaxed);
                    count_live(&n);
                    deliveries.sent(n.seq, Via::Stream);
                    Some(n.event(notice_event))
                }
                _ => None,
            })
        });
    let mut shutdown = state.shutdown.subscribe();
    // The stream ends with its session (sign-out on any instance, or its
    // end): see `session_watch`. Which of the two stopped it decides the
    // last words.
    let mut session = state.sessions.watch(&user.session_key);
    let ended = Arc::new(std::sync::OnceLock::new());
    let stopped = {
        let ended = ended.clone();
        async move {
            tokio::select! {
                _ = shutdown.recv() => {}
                why = session.ended() => { let _ = ended.set(why); }
            }
        }
    };
    let farewell = stream::once(async move {
        match ended.get() {
            // The session is over: reconnecting would only get 401.
            Some(why) => session_ended_event(*why),
            // A hint and a comment, no blank line: nothing for a client to
            // dispatch.
            None => Bytes::from(format!(
                "retry: {}\n: stream closed; reconnect with Last-Event-ID\n",
                RETRY.as_millis()
            )),
        }
    });

    metrics::gauge!("sightline_sse_streams").increment(1.0);
    let guard = (StreamGauge, held);
    let events = stream::once(async move { opening })
        .chain(replayed.chain(live).take_until(stopped))
        .chain(farewell)
        .map(move |event| {
            let _ = &guard;
            event
        });
    let body = with_heartbeats(events, state.settings.sse_heartbeat());
    let mut response = Body::from_stream(body.map(Ok::<_, Infallible>)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `reset`: the client must refetch what it shows; it continues from its head.
async fn reset(
    state: &AppState,
    user_id: Uuid,
    reason: &'static str,
) -> AppResult<(Bytes, Cursor, bool)> {
    let head = notice_log::stream_head(&state.db, user_id).await?;
    metrics::counter!("sightline_sse_resets_total", "reason" => reason.to_owned()).increment(1);
    Ok((cursor_event("reset", &head, Some(reason)), head, false))
}

/// The user's notices after position `after` that the hub's snapshot at
/// subscription sees, a page at a time (recording in `sent` how far it got), so a stream never holds more than one
/// page however much it replays. A failing read ends the stream: the client
/// reconnects from the last notice it got and loses nothing.
fn replay_pages(
    db: sqlx::PgPool,
    deliveries: Arc<Deliveries>,
    user_id: Uuid,
    after: i64,
    seen: Snapshot,
    sent: Arc<AtomicI64>,
) -> impl Stream<Item = Bytes> {
    stream::unfold(Some(after), move |after| {
        let (db, seen, sent, deliveries) =
            (db.clone(), seen.clone(), sent.clone(), deliveries.clone());
        async move {
            let after = after?;
            let page =
                match notice_log::page_for_user(&db, user_id, after, &seen, REPLAY_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "replay read failed; ending the stream");
                        return None;
                    }
                };
            let last = page.last()?.user_seq;
            sent.store(last, Ordering::Relaxed);
            let next = (page.len() as i64 == REPLAY_PAGE).then_some(last);
            metrics::counter!("sightline_notices_sent_total").increment(page.len() as u64);
            for notice in &page {
                deliveries.sent(notice.seq, Via::Stream);
            }
            let events: Vec<Bytes> = page.iter().map(notice_event).collect();
            Some((stream::iter(events), next))
        }
    })
    .flatten()
}

/// Passes `events` through and sends [`HEARTBEAT`] whenever nothing was sent
/// for `every`. Ends when `events` ends.
fn with_heartbeats(
    events: impl Stream<Item = Bytes> + Send + 'static,
    every: Duration,
) -> impl Stream<Item = Bytes> {
    let every = every.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stream::unfold(
        (events.boxed(), ticker),
        |(mut events, mut ticker)| async move {
            tokio::select! {
                next = events.next() => {
                    let event = next?;
                    ticker.reset();
                    Some((event, (events, ticker)))
                }
                _ = ticker.tick() => Some((Bytes::from_static(HEARTBEAT), (events, ticker))),
            }
        },
    )
}

/// Counts a live notice as sent and, for `order-visible`, how long it took
/// from its event's commit (the outbox row's `created_at`) to here.
fn count_live(notice: &Notice) {
    metrics::counter!("sightline_notices_sent_total").increment(1);
    if notice.kind == notice_log::ORDER_VISIBLE
        && let Some(committed_at) = notice.committed_at
    {
        let lag = (chrono::Utc::now() - committed_at)
            .num_milliseconds()
            .max(0);
        metrics::histogram!("sightline_commit_to_notice_sent_seconds").record(lag as f64 / 1000.0);
    }
}

/// Decrements the open-streams gauge when the stream is dropped.
struct StreamGauge;

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("sightline_sse_streams").decrement(1.0);
    }
}

use metrics::Unit;
use sightline_core::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::gauge("sightline_sse_streams", Unit::Count, "Open notice streams (GET /api/events) on this instance."),
    Metric::counter("sightline_notices_sent_total", "Notices written to SSE streams (replayed and live)."),
    Metric::counter("sightline_notices_dropped_total", "Live notices a lagging SSE client missed when it was cut off (it resumes from the log)."),
    Metric::counter("sightline_sse_resets_total", "Streams opened with a Last-Event-ID the log could not vouch for, answered with event: reset (reason: malformed, too_old, unknown)."),
    Metric::seconds("sightline_commit_to_notice_sent_seconds", "From an event's commit to its order-visible notice being sent on a live stream."),
];
