//! The polling fallback: `GET /api/orders/{id}/visibility[?wait=N&version=V]`,
//! answered from the same notice log as the stream, waiting on the hub. A
//! long poll waits for what it asks about: a notice of version `V` or newer,
//! or with no version, any notice of the order.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::extract::client_addr::{ClientAddr, limit_key};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use sightline_core::auth::CurrentUser;
use sightline_core::visibility::deliveries::Via;
use sightline_core::visibility::notice_log::{self, Notice};

pub const MAX_WAIT_SECS: u64 = 30;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VisibilityParams {
    /// Seconds to wait for news (0–30): answered as soon as a notice of the
    /// order (of `version` or newer, when given) is recorded, or after that
    /// long with the state then.
    #[param(minimum = 0, maximum = 30, default = 0)]
    pub wait: Option<u64>,
    /// The version the caller is asking about (e.g. the one its cancel
    /// returned): a long poll waits until a notice of this version or a newer
    /// one is recorded. Without it, any notice of the order answers.
    #[param(minimum = 1)]
    pub version: Option<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
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

#[tracing::instrument(skip(state, user, client, params), fields(user = %user.username))]
/// Whether search shows the order: `visible` is true exactly when an
/// `order-visible` notice of it is recorded. The long-polling fallback of
/// `GET /api/events`.
#[utoipa::path(
    get,
    path = "/api/orders/{id}/visibility",
    tag = "events",
    operation_id = "getVisibility",
    params(("id" = Uuid, Path, description = "The order's id."), VisibilityParams),
    responses(
        (status = 200, description = "The order's visibility now.", body = Visibility),
        (status = 404, description = "`not_found`: unknown, or another user's.", body = crate::schemas::ErrorBody),
        (status = 429, description = "`too_many_polls`: too many waiting polls for this user or address (`wait` > 0 only); `rate_limited`: too many reads for this user (`READ_BURST`, `READ_RATE_PER_MIN`; every poll is one).", body = crate::schemas::ErrorBody),
    ),
)]
pub async fn visibility(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientAddr(client): ClientAddr,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<VisibilityParams>,
) -> AppResult<Json<Visibility>> {
    // Every poll is a read, the waiting ones too: a `wait=1` on a visible
    // order answers at once, and must not be a way around the limit.
    state.limits.read(user.id)?;
    let wait = params.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(AppError::bad_request(
            "bad_query",
            format!("wait must be 0 to {MAX_WAIT_SECS} seconds"),
        ));
    }
    if params.version.is_some_and(|v| v < 1) {
        return Err(AppError::bad_request(
            "bad_query",
            "version must be 1 or more",
        ));
    }
    // What the caller waits for: a notice of the version it asks about (or
    // newer), or any notice when it names none. Answered at once when the
    // order is already there, or when the caller does not wait.
    let enough = |latest: Option<&Notice>| {
        latest.is_some_and(|n| params.version.is_none_or(|v| n.order_version >= v))
    };
    // Subscribe before looking, so a notice recorded in between is not missed.
    let mut subscription = state.hub.subscribe(user.id);
    let now = current(&state, user.id, id).await?;
    if enough(now.latest.as_ref()) || wait == 0 {
        return Ok(answer(&state, id, now));
    }
    // Only a poll that waits holds anything: capped per user and per address.
    let _held = state
        .limits
        .polls
        .acquire(user.id, Some(limit_key(client)))?;
    let mut shutdown = state.shutdown.subscribe();
    // A poll ends with its session, as a stream does (see `session_watch`).
    let mut session = state.sessions.watch(&user.session_key);
    let mut session_ended = false;
    let waited = tokio::time::timeout(Duration::from_secs(wait), async {
        loop {
            tokio::select! {
                _ = shutdown.recv() => return Ok::<_, sqlx::Error>(()),
                _ = session.ended() => {
                    session_ended = true;
                    return Ok(());
                }
                received = subscription.receiver.recv() => match received {
                    Ok(n) if n.order_id == id && enough(Some(&n)) => return Ok(()),
                    Ok(_) => {}
                    // Missed some: the log knows.
                    Err(RecvError::Lagged(_)) => {
                        if enough(notice_log::latest_for_order(&state.db, id).await?.as_ref()) {
                            return Ok(());
                        }
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
            }
        }
    })
    .await;
    if let Ok(result) = waited {
        result.map_err(AppError::from)?;
    }
    if session_ended {
        return Err(AppError::Unauthorized);
    }
    // Whatever ended the wait (the notice, the timeout, a shutdown), the
    // answer is the order's state now: an earlier version that is visible
    // stays visible in it.
    Ok(answer(&state, id, current(&state, user.id, id).await?))
}

/// What is known of an order's visibility.
struct Current {
    /// Its latest notice (for an order whose notices were pruned: a stand-in
    /// for the settled version, see [`current`]).
    latest: Option<Notice>,
    /// Its latest `order-visible` notice.
    visible: Option<Notice>,
    /// True for the stand-in: the notices are gone, and with them when the
    /// order became visible.
    pruned: bool,
}

/// The order's latest notice and its latest `order-visible`. The hub's
/// memory answers for recent orders without the database; only orders it has
/// not seen need the ownership check and the log.
///
/// An order whose notices were all pruned (`sightline prune`) was visible
/// once none of its events is pending or parked; it is answered as visible
/// at its current version, without `visible_at`.
async fn current(state: &AppState, user_id: Uuid, id: Uuid) -> AppResult<Current> {
    use sightline_core::read_side::read_your_writes;
    if let Some(known) = state.hub.known(id) {
        if known.latest.user_id != user_id {
            return Err(AppError::NotFound);
        }
        return Ok(Current {
            latest: Some(known.latest),
            visible: known.latest_visible,
            pruned: false,
        });
    }
    if !read_your_writes::owns_order(&state.db, user_id, id).await? {
        return Err(AppError::NotFound);
    }
    let latest = notice_log::latest_for_order(&state.db, id).await?;
    let visible = notice_log::latest_visible(&state.db, id).await?;
    if latest.is_none()
        && let Some((version, status)) = read_your_writes::settled_version(
            &state.db,
            id,
            state.settings.read_store == sightline_core::config::ReadStoreKind::Postgres,
        )
        .await?
    {
        let stand_in = Notice {
            seq: 0,
            user_id,
            user_seq: 0,
            chain: String::new(),
            order_id: id,
            order_version: version,
            kind: notice_log::ORDER_VISIBLE.to_owned(),
            status,
            error: None,
            visible_at: chrono::Utc::now(),
            committed_at: None,
        };
        return Ok(Current {
            latest: Some(stand_in.clone()),
            visible: Some(stand_in),
            pruned: true,
        });
    }
    Ok(Current {
        latest,
        visible,
        pruned: false,
    })
}

fn answer(state: &AppState, id: Uuid, now: Current) -> Json<Visibility> {
    let Current {
        latest,
        visible,
        pruned,
    } = now;
    // The poll that answers with a notice delivers it (the journey's `sent`;
    // the stand-in of a pruned notice has no position and is not noted).
    if let Some(notice) = visible.as_ref().or(latest.as_ref()) {
        state.deliveries.sent(notice.seq, Via::Poll);
    }
    let failed = latest.filter(|n| n.kind == notice_log::ORDER_FAILED);
    Json(Visibility {
        id,
        visible: visible.is_some(),
        visible_at: visible.as_ref().filter(|_| !pruned).map(|n| n.visible_at),
        version: visible.as_ref().map(|n| n.order_version),
        status: visible.map(|n| n.status),
        failed: failed.is_some(),
        error: failed.and_then(|n| n.error),
    })
}
