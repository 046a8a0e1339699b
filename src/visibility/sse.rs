//! Where the notice leaves: `GET /api/events`, the user's notices as
//! Server-Sent Events — replayed from the log after `Last-Event-ID`, then live
//! from the hub.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use serde_json::json;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::notice_log::{self, Notice};
use crate::auth::CurrentUser;
use crate::error::AppResult;
use crate::state::AppState;
use crate::web::limits::PeerAddr;

/// How long a client waits before reconnecting.
const RETRY: Duration = Duration::from_millis(1000);

/// `order-visible` (or `order-failed`) as an SSE event; its id is the cursor.
pub fn notice_event(notice: &Notice) -> Event {
    let mut data = json!({
        "id": notice.order_id,
        "version": notice.order_version,
        "status": notice.status,
        "visible_at": notice.visible_at,
    });
    if let Some(error) = &notice.error {
        data["error"] = json!(error);
        data["failed_at"] = data["visible_at"].take();
        data.as_object_mut().map(|d| d.remove("visible_at"));
    }
    Event::default()
        .event(notice.kind.as_str())
        .id(notice.seq.to_string())
        .data(data.to_string())
}

fn cursor_event(kind: &'static str, head: i64) -> Event {
    Event::default()
        .event(kind)
        .id(head.to_string())
        .retry(RETRY)
        .data(json!({ "cursor": head.to_string() }).to_string())
}

#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn events(
    State(state): State<AppState>,
    user: CurrentUser,
    peer: PeerAddr,
    headers: HeaderMap,
) -> AppResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Capped per user and per address (429 past it); held until the stream ends.
    let held = state.limits.streams.acquire(user.id, peer.0)?;
    // Subscribe before reading the log, so nothing falls between the two.
    let subscription = state.hub.subscribe(user.id);
    let head = subscription.head;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()));

    let mut opening = Vec::new();
    // Live notices must have a cursor above `floor`; older ones were replayed.
    let mut floor = head;
    match last_event_id {
        None => opening.push(cursor_event("ready", head)),
        Some(Some(last)) if (0..=head).contains(&last) => {
            opening.push(cursor_event("ready", head));
            let missed = notice_log::for_user_between(&state.db, user.id, last, head).await?;
            opening.extend(missed.iter().map(notice_event));
            metrics::counter!("sightline_notices_sent_total").increment(missed.len() as u64);
        }
        // Ahead of this instance's hub but known to the log: another instance
        // served it. Continue from there.
        Some(Some(last)) if last > head && last <= notice_log::head(&state.db).await? => {
            opening.push(cursor_event("ready", last));
            floor = last;
        }
        // Malformed or unknown: the client must refetch its list.
        Some(_) => opening.push(cursor_event("reset", head)),
    }

    let user_id = user.id;
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
                Ok(n) if n.seq > floor && n.user_id == user_id => {
                    count_live(&n);
                    Some(notice_event(&n))
                }
                _ => None,
            })
        });
    let mut shutdown = state.shutdown.subscribe();
    let stopped = async move { shutdown.recv().await };
    let farewell = stream::once(async {
        Event::default()
            .retry(RETRY)
            .comment("stream closed; reconnect with Last-Event-ID")
    });

    metrics::gauge!("sightline_sse_streams").increment(1.0);
    let guard = (StreamGauge, held);
    let stream = stream::iter(opening)
        .chain(live.take_until(stopped))
        .chain(farewell)
        .map(move |event| {
            let _ = &guard;
            Ok(event)
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.settings.sse_heartbeat())))
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
