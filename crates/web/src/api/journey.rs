//! `GET /api/orders/{id}/journey[?version=N]`: when each stage of the
//! pipeline took the order (its latest version, or version N), for its
//! owner only (`sightline_core::journey`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use sightline_core::auth::CurrentUser;
use sightline_core::config::ReadStoreKind;
use sightline_core::journey::{self, Journey, Reader};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JourneyParams {
    /// The version whose journey to show (an earlier one than the latest).
    #[param(minimum = 1)]
    pub version: Option<i32>,
}

/// The journey of an order version: `committed`, `claimed`, `published`,
/// `delivered_to_projector`, `indexed`, `searchable`, `noticed`, `sent` (and
/// `retrying` / `parked` with a `reason`; `sent` with `via`), each with when,
/// in the order they happened; the stages not reached yet are absent. With
/// `READ_STORE=postgres` it is `committed`, `searchable`, `noticed`, `sent`.
/// `sent` appears up to 100 ms after the notice was first sent (it is
/// written in batches). Journeys go with the notice log's retention.
#[utoipa::path(
    get,
    path = "/api/orders/{id}/journey",
    tag = "orders",
    operation_id = "getJourney",
    params(("id" = Uuid, Path, description = "The order's id."), JourneyParams),
    responses(
        (status = 200, description = "The version's journey.", body = Journey),
        (status = 400, description = "`bad_query`: `version` is not a whole number of 1 or more.", body = crate::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such order or version, another user's, or its journey is no longer kept.", body = crate::schemas::ErrorBody),
        (status = 429, description = "`rate_limited`: too many reads for this user (`READ_BURST`, `READ_RATE_PER_MIN`).", body = crate::schemas::ErrorBody),
    ),
)]
#[tracing::instrument(skip(state, user, params), fields(user = %user.username))]
pub async fn journey(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<JourneyParams>,
) -> AppResult<Json<Journey>> {
    state.limits.read(user.id)?;
    if params.version.is_some_and(|v| v < 1) {
        return Err(AppError::bad_request(
            "bad_query",
            "version must be 1 or more",
        ));
    }
    let same_database = state.settings.read_store == ReadStoreKind::Postgres;
    journey::read(
        &state.db,
        Reader::Owner(user.id),
        id,
        params.version,
        same_database,
    )
    .await?
    .map(Json)
    .ok_or(AppError::NotFound)
}
