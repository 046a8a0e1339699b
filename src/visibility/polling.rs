//! The polling fallback: `GET /api/orders/{id}/visibility[?wait=N]`, answered
//! from the same notice log as the stream, waiting on the hub.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::notice_log::{self, Notice};
use crate::auth::CurrentUser;
use crate::error::{AppError, AppResult};
use crate::http::{ApiPath, ApiQuery};
use crate::state::AppState;
use crate::web::limits::PeerAddr;

pub const MAX_WAIT_SECS: u64 = 30;

#[derive(Deserialize)]
pub struct VisibilityParams {
    pub wait: Option<u64>,
}

#[derive(Serialize)]
pub struct Visibility {
    pub id: Uuid,
    /// True once search shows the order (its `order-visible` notice is recorded).
    pub visible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The newest version search shows, and its status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// True when the newest notice says the order could not be projected.
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[tracing::instrument(skip(state, user, peer, params), fields(user = %user.username))]
pub async fn visibility(
    State(state): State<AppState>,
    user: CurrentUser,
    peer: PeerAddr,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<VisibilityParams>,
) -> AppResult<Json<Visibility>> {
    let wait = params.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(AppError::bad_request(
            "bad_query",
            format!("wait must be 0 to {MAX_WAIT_SECS} seconds"),
        ));
    }
    // Subscribe before looking, so a notice recorded in between is not missed.
    let mut subscription = state.hub.subscribe(user.id);
    let answer = |latest: Option<Notice>, visible: Option<Notice>| {
        let failed = latest.filter(|n| n.kind == notice_log::ORDER_FAILED);
        Json(Visibility {
            id,
            visible: visible.is_some(),
            visible_at: visible.as_ref().map(|n| n.visible_at),
            version: visible.as_ref().map(|n| n.order_version),
            status: visible.map(|n| n.status),
            failed: failed.is_some(),
            error: failed.and_then(|n| n.error),
        })
    };
    // The hub's memory answers polls about recent orders without the
    // database; only orders it has not seen need the ownership check and the log.
    if let Some(known) = state.hub.known(id) {
        if known.latest.user_id != user.id {
            return Err(AppError::NotFound);
        }
        return Ok(answer(Some(known.latest), known.latest_visible));
    }
    if !crate::read_side::read_your_writes::owns_order(&state.db, user.id, id).await? {
        return Err(AppError::NotFound);
    }
    let latest = notice_log::latest_for_order(&state.db, id).await?;
    let visible = notice_log::latest_visible(&state.db, id).await?;
    // Answer at once when there is news (visible, or failed).
    if latest.is_some() || wait == 0 {
        return Ok(answer(latest, visible));
    }
    // Only a poll that waits holds anything: capped per user and per address.
    let _held = state.limits.polls.acquire(user.id, peer.0)?;
    let mut shutdown = state.shutdown.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(wait), async {
        loop {
            tokio::select! {
                _ = shutdown.recv() => return Ok::<_, sqlx::Error>(None),
                received = subscription.receiver.recv() => match received {
                    Ok(n) if n.order_id == id => return Ok(Some(n)),
                    Ok(_) => {}
                    // Missed some: the log knows.
                    Err(RecvError::Lagged(_)) => {
                        if let Some(n) = notice_log::latest_for_order(&state.db, id).await? {
                            return Ok(Some(n));
                        }
                    }
                    Err(RecvError::Closed) => return Ok(None),
                },
            }
        }
    })
    .await;
    let notice = match waited {
        Ok(result) => result.map_err(AppError::from)?,
        Err(_elapsed) => None,
    };
    let visible = notice
        .clone()
        .filter(|n| n.kind == notice_log::ORDER_VISIBLE);
    Ok(answer(notice, visible))
}
