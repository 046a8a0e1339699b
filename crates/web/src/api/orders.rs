//! `/api/orders` and `/api/summary`: placing and cancelling through the
//! orders service (`write_side::orders`), reading through the read side
//! (`read_side`), with read-your-writes when a consistency token is given.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use sightline_core::auth::CurrentUser;
use sightline_core::consistency::ConsistencyToken;
use sightline_core::order::OrderView;
use sightline_core::read_side::document::SummaryDocument;
use sightline_core::read_side::index::SortKey;
use sightline_core::read_side::read_your_writes::{self, ReadSource};
use sightline_core::read_side::{self, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use sightline_core::write_side::orders::Written;
use sightline_core::write_side::validation::PlaceOrderRequest;

pub fn router() -> Router<AppState> {
    let writes = Router::new()
        .route("/api/orders", post(create_order))
        .route("/api/orders/{id}/cancel", post(cancel));
    let reads = Router::new()
        .route("/api/orders", get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/summary", get(get_summary));
    writes.merge(reads)
}

/// The answer to a write: the order plus the token that lets the next read
/// include it.
#[derive(Serialize, ToSchema)]
pub struct WriteReceipt {
    #[serde(flatten)]
    pub order: OrderView,
    /// Present it to `GET /api/orders` (`consistency_token=` or
    /// `X-Consistency-Token`) to see this write even before search does.
    pub consistency_token: String,
}

impl From<&Written> for WriteReceipt {
    fn from(written: &Written) -> Self {
        WriteReceipt {
            order: written.order.view(),
            consistency_token: written.token.encode(),
        }
    }
}

/// Places an order: the order and its event commit in one transaction. The
/// same `id` again with the same content answers 200 with the order as it is
/// now (nothing is duplicated); with other content, or another user's id, 409.
#[utoipa::path(
    post,
    path = "/api/orders",
    tag = "orders",
    operation_id = "placeOrder",
    request_body = PlaceOrderRequest,
    responses(
        (status = 201, description = "Placed; not yet visible to search (`visible: false`).", body = WriteReceipt, headers(
            ("Location" = String, description = "`/api/orders/{id}`"),
        )),
        (status = 200, description = "This `id` was already placed with this content: the order as it is now.", body = WriteReceipt, headers(
            ("Location" = String, description = "`/api/orders/{id}`"),
        )),
        (status = 409, description = "`order_conflict`: the `id` is taken by another order (other content, or another user's).", body = crate::schemas::ErrorBody),
        (status = 429, description = "`rate_limited`: too many writes (`WRITE_BURST`, `WRITE_RATE_PER_MIN`); nothing is written.", body = crate::schemas::ErrorBody),
    ),
)]
pub(crate) async fn create_order(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(request): ApiJson<PlaceOrderRequest>,
) -> AppResult<impl IntoResponse> {
    let written = state.orders.place(&user, request).await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/orders/{}", written.order.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(WriteReceipt::from(&written)),
    ))
}

/// Cancels an order: the change and its `OrderCancelled` event commit
/// together. Cancelling twice answers 200 and changes nothing.
#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    tag = "orders",
    operation_id = "cancelOrder",
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "Cancelled (`status: cancelled`, a new `version`).", body = WriteReceipt),
        (status = 404, description = "`not_found`: unknown, or another user's.", body = crate::schemas::ErrorBody),
        (status = 429, description = "`rate_limited`: too many writes.", body = crate::schemas::ErrorBody),
    ),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<Json<WriteReceipt>> {
    let written = state.orders.cancel(&user, id).await?;
    Ok(Json(WriteReceipt::from(&written)))
}

#[derive(Deserialize, Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Full text over skus and note; every word must match.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Orders per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (opaque: only values the server
    /// issued are valid).
    pub cursor: Option<String>,
    /// A write's `consistency_token`: every order of this user up to it is
    /// included even if search does not show it yet (also as the
    /// `X-Consistency-Token` header). Opaque: only tokens the server issued
    /// are valid.
    pub consistency_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

fn encode_cursor(key: &SortKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", key.placed_at_millis, key.id))
}

fn decode_cursor(raw: &str) -> AppResult<SortKey> {
    let bad = || AppError::bad_request("bad_cursor", "malformed cursor");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (millis, id) = text.split_once('|').ok_or_else(bad)?;
    let id: Uuid = id.parse().map_err(|_| bad())?;
    Ok(SortKey {
        placed_at_millis: millis.parse().map_err(|_| bad())?,
        id: id.to_string(),
    })
}

/// The token a read presents, from the query or the `X-Consistency-Token` header.
fn presented_token(
    params: &ListParams,
    headers: &HeaderMap,
) -> AppResult<Option<ConsistencyToken>> {
    // An empty value is no token (`?consistency_token=` from a form or a
    // template with nothing to fill in), as an empty cursor is no cursor.
    let raw = params
        .consistency_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            headers
                .get("x-consistency-token")
                .and_then(|v| v.to_str().ok())
                .filter(|t| !t.is_empty())
        });
    raw.map(ConsistencyToken::decode)
        .transpose()
        .map_err(AppError::from)
}

/// One page of a user's orders, with read-your-writes when a token is given.
/// Shared by the JSON API and the HTML page.
pub async fn list_page(
    state: &AppState,
    user: &CurrentUser,
    params: &ListParams,
    token: Option<ConsistencyToken>,
) -> AppResult<(OrderList, ReadSource)> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(AppError::bad_request(
            "bad_query",
            format!("limit must be 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    if params.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(AppError::bad_request(
            "bad_query",
            "q must be at most 200 characters",
        ));
    }
    let after = params
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let merged = read_side::orders_page(
        &state.db,
        &state.read_model,
        user.id,
        params.q.as_deref(),
        limit,
        after.as_ref(),
        token,
    )
    .await?;
    Ok((
        OrderList {
            orders: merged.orders,
            next_cursor: merged.next.as_ref().map(encode_cursor),
        },
        merged.source,
    ))
}

/// The user's orders from the read model, newest first; with a consistency
/// token, merged with the user's writes up to it that search does not show yet.
#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "orders",
    operation_id = "listOrders",
    params(
        ListParams,
        ("X-Consistency-Token" = Option<String>, Header, nullable = false, description = "The same as the `consistency_token` query parameter."),
    ),
    responses(
        (status = 200, description = "One page of orders.", body = OrderList, headers(
            ("X-Read-Source" = crate::schemas::ReadSourceHeader, description = "`read-model`, or `merged` when the write side filled in orders search does not show yet."),
        )),
        (status = 429, description = "`rate_limited`: too many reads for this user (`READ_BURST`, `READ_RATE_PER_MIN`); `Retry-After` says when to try again.", body = crate::schemas::ErrorBody),
    ),
)]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ListParams>,
) -> AppResult<impl IntoResponse> {
    state.limits.read(user.id)?;
    let token = presented_token(&params, &headers)?;
    let (list, source) = list_page(&state, &user, &params, token).await?;
    Ok((read_source_header(source), Json(list)))
}

/// From the read model once search sees the order; before that the owner gets
/// it from the write database, so following a 201's `Location` always works.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "orders",
    operation_id = "getOrder",
    params(("id" = Uuid, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order: from the read model once search sees it (`visible: true`), before that from the write side (`visible: false`).", body = OrderView, headers(
            ("X-Read-Source" = crate::schemas::ReadSourceHeader, description = "`read-model`, or `write-db` while search does not show it yet."),
        )),
        (status = 404, description = "`not_found`: unknown, or another user's.", body = crate::schemas::ErrorBody),
        (status = 429, description = "`rate_limited`: too many reads for this user (`READ_BURST`, `READ_RATE_PER_MIN`); `Retry-After` says when to try again.", body = crate::schemas::ErrorBody),
    ),
)]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<impl IntoResponse> {
    state.limits.read(user.id)?;
    match state.read_model.find(user.id, id).await {
        Ok(Some(doc)) => {
            return Ok((
                read_source_header(ReadSource::ReadModel),
                Json(doc.into_view()),
            ));
        }
        Ok(None) => {}
        // The owner can still read their own order from the write side.
        Err(e) => {
            tracing::warn!(error = %e, "read model unavailable; answering from the write side")
        }
    }
    let view = read_your_writes::own_order(&state.db, user.id, id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok((read_source_header(ReadSource::WriteDb), Json(view)))
}

fn read_source_header(source: ReadSource) -> [(HeaderName, HeaderValue); 1] {
    [(
        HeaderName::from_static(read_your_writes::HEADER),
        HeaderValue::from_static(source.as_str()),
    )]
}

/// The user's counters from the read store (all zero before the first order
/// is projected).
#[utoipa::path(
    get,
    path = "/api/summary",
    tag = "orders",
    operation_id = "getSummary",
    responses(
        (status = 200, description = "The user's counters (all zero before the first order is projected).", body = SummaryDocument, headers(
            ("X-Read-Source" = crate::schemas::ReadSourceHeader, description = "`read-model`."),
        )),
        (status = 429, description = "`rate_limited`: too many reads for this user (`READ_BURST`, `READ_RATE_PER_MIN`); `Retry-After` says when to try again.", body = crate::schemas::ErrorBody),
    ),
)]
pub(crate) async fn get_summary(
    State(state): State<AppState>,
    user: CurrentUser,
) -> AppResult<impl IntoResponse> {
    state.limits.read(user.id)?;
    let summary = state
        .read_model
        .summary(user.id)
        .await?
        .unwrap_or_else(|| SummaryDocument {
            user_id: user.id,
            ..Default::default()
        });
    Ok((read_source_header(ReadSource::ReadModel), Json(summary)))
}
