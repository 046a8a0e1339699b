//! The read side: every query of orders is answered by the read model
//! ([`model::ReadModel`]: Elasticsearch, or with `READ_STORE=postgres` the
//! same-database shape in [`postgres`]), except the explicit
//! read-your-writes paths.

pub mod document;
pub mod index;
pub mod model;
pub mod postgres;
pub mod read_your_writes;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::consistency::ConsistencyToken;
use crate::order::OrderView;
use crate::web::error::{AppError, AppResult};
use crate::web::extract::{ApiPath, ApiQuery};
use crate::web::state::AppState;
use index::{IndexError, SortKey};
use read_your_writes::ReadSource;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/summary", get(get_summary))
}

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

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

impl From<model::ReadError> for AppError {
    fn from(e: model::ReadError) -> Self {
        match e {
            model::ReadError::Index(e) => e.into(),
            model::ReadError::Database(e) => AppError::Database(e),
        }
    }
}

impl From<IndexError> for AppError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Unreachable(_) => {
                tracing::warn!(error = %e, "read model unreachable");
                AppError::Unavailable("search")
            }
            other => AppError::Internal(anyhow::Error::new(other)),
        }
    }
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
    raw.map(ConsistencyToken::decode).transpose()
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
    let q = params.q.as_deref();

    // Pending first, then the read model: see `pending_orders`. The page
    // needs at most `limit + 1` of them (the extra one tells whether more follow).
    let pending = match token {
        Some(token) => {
            read_your_writes::pending_orders(
                &state.db,
                user.id,
                token,
                after.as_ref(),
                q,
                limit + 1,
            )
            .await?
        }
        None => vec![],
    };
    let page = state
        .read_model
        .search(user.id, q, limit, after.as_ref())
        .await?;
    let found: Vec<OrderView> = page.orders.into_iter().map(|d| d.into_view()).collect();
    let merged = read_your_writes::merge_into_page(found, page.next.is_some(), pending, limit);
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
            ("X-Read-Source" = crate::web::openapi::ReadSourceHeader, description = "`read-model`, or `merged` when the write side filled in orders search does not show yet."),
        )),
    ),
)]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ListParams>,
) -> AppResult<impl IntoResponse> {
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
            ("X-Read-Source" = crate::web::openapi::ReadSourceHeader, description = "`read-model`, or `write-db` while search does not show it yet."),
        )),
        (status = 404, description = "`not_found`: unknown, or another user's.", body = crate::web::openapi::ErrorBody),
    ),
)]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<Uuid>,
) -> AppResult<impl IntoResponse> {
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

fn read_source_header(source: ReadSource) -> [(HeaderName, axum::http::HeaderValue); 1] {
    [(
        HeaderName::from_static(read_your_writes::HEADER),
        source.header_value(),
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
        (status = 200, description = "The user's counters (all zero before the first order is projected).", body = document::SummaryDocument, headers(
            ("X-Read-Source" = crate::web::openapi::ReadSourceHeader, description = "`read-model`."),
        )),
    ),
)]
pub(crate) async fn get_summary(
    State(state): State<AppState>,
    user: CurrentUser,
) -> AppResult<impl IntoResponse> {
    let summary =
        state
            .read_model
            .summary(user.id)
            .await?
            .unwrap_or_else(|| document::SummaryDocument {
                user_id: user.id,
                ..Default::default()
            });
    Ok((read_source_header(ReadSource::ReadModel), Json(summary)))
}
