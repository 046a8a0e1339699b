//! Answering with the orders page: the list from the read model (merged
//! with the write side for a consistency token; the write side's newest
//! orders while search is unreachable), the summary, and the form as it
//! stands.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use crate::api::orders::{ListParams, OrderList, list_page};
use crate::error::AppError;
use crate::extract::session::PageUser;
use crate::state::AppState;
use sightline_core::auth;
use sightline_core::consistency::ConsistencyToken;
use sightline_core::order::OrderView;
use sightline_core::outbox::events::DEFAULT_CURRENCY;
use sightline_core::read_side::DEFAULT_PAGE_SIZE;
use sightline_core::read_side::read_your_writes::{self, ReadSource};
use sightline_core::write_side::validation::{self};

use super::super::*;
use super::form::*;
use super::view::*;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(in crate::pages) struct OrdersQuery {
    pub(super) q: Option<String>,
    pub(super) cursor: Option<String>,
    pub(super) consistency_token: Option<String>,
    /// `poll` makes app.js long-poll instead of opening the event stream.
    pub(super) transport: Option<String>,
}

/// Renders `/orders`: the form (with `form` values and `form_error`) above
/// one page of the user's orders. A list that cannot be read is reported on
/// the page, and the form still works: writes do not need search. While
/// search is unreachable the newest orders come from the write database
/// (read-your-writes), and the page says so.
pub(super) async fn orders_response(
    state: &AppState,
    user: &auth::CurrentUser,
    query: OrdersQuery,
    form: FormValues,
    form_error: Option<(StatusCode, String)>,
) -> Response {
    let q = query.q.clone().unwrap_or_default();
    let cursor = query.cursor.clone().unwrap_or_default();
    let transport = query.transport.clone().unwrap_or_default();
    // The token in the URL, else the one the form flow kept in the session.
    let raw_token = query
        .consistency_token
        .clone()
        .or_else(|| user.session_consistency_token.clone())
        .unwrap_or_default();

    let mut status = StatusCode::OK;
    let mut list_error = None;
    let mut search_down = false;
    // A token this server did not issue is ignored: the page still shows
    // what search knows.
    let token = (!raw_token.is_empty())
        .then(|| ConsistencyToken::decode(&raw_token).ok())
        .flatten();
    let token_text = token.map(ConsistencyToken::encode).unwrap_or_default();
    let params = ListParams {
        q: (!q.trim().is_empty()).then(|| q.clone()),
        limit: None,
        cursor: (!cursor.is_empty()).then(|| cursor.clone()),
        consistency_token: None,
    };
    let (list, source) = match list_page(state, user, &params, token).await {
        Ok(found) => found,
        Err(AppError::Unavailable(_)) => {
            search_down = true;
            let orders = match write_side_stand_in(state, user, &params).await {
                Ok(orders) => orders,
                Err(e) => {
                    let (error_status, message) = describe(e);
                    status = error_status;
                    list_error = Some(message);
                    vec![]
                }
            };
            (
                OrderList {
                    orders,
                    next_cursor: None,
                },
                ReadSource::WriteDb,
            )
        }
        Err(e) => {
            let (error_status, message) = describe(e);
            status = error_status;
            list_error = Some(message);
            (
                OrderList {
                    orders: vec![],
                    next_cursor: None,
                },
                ReadSource::ReadModel,
            )
        }
    };

    let now = Utc::now();
    let lag_slo = state.settings.lag_slo();
    let lag_slo_chrono = chrono::Duration::from_std(lag_slo).unwrap_or(chrono::Duration::MAX);
    let rows: Vec<OrderRow> = list
        .orders
        .iter()
        .map(|o| order_row(o, now, lag_slo_chrono))
        .collect();
    let any_pending = rows.iter().any(|r| r.state != "visible");
    let rows: Vec<String> = match rows.iter().map(Template::render).collect() {
        Ok(rows) => rows,
        Err(e) => return render_failed(e),
    };
    let blank_row = match OrderRow::blank().render() {
        Ok(row) => row,
        Err(e) => return render_failed(e),
    };

    let keep = [
        ("q", q.as_str()),
        ("consistency_token", token_text.as_str()),
        ("transport", transport.as_str()),
    ];
    let older_href = list.next_cursor.as_deref().map(|next| {
        let mut pairs = keep.to_vec();
        pairs.push(("cursor", next));
        orders_href(&pairs)
    });
    let newest_href = (!cursor.is_empty()).then(|| orders_href(&keep));
    let mut current = keep.to_vec();
    current.push(("cursor", cursor.as_str()));
    let refresh_href = orders_href(&current);
    let carried = [
        ("consistency_token", token_text.clone()),
        ("transport", transport.clone()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();

    // The summary is a second read model; the page stands without it.
    let summary = match state.read_model.summary(user.id).await {
        Ok(doc) => SummaryView::from_document(doc),
        Err(e) => {
            tracing::warn!(error = %e, "summary unavailable");
            SummaryView::unknown()
        }
    };
    let form_error = form_error.map(|(form_status, message)| {
        status = form_status;
        message
    });
    let page = OrdersPage {
        username: user.username.clone(),
        lag_slo_ms: lag_slo.as_millis(),
        server_now_ms: now.timestamp_millis(),
        currency: DEFAULT_CURRENCY,
        currency_symbol: "$",
        price_message: PRICE_NOT_AN_AMOUNT,
        max_items: validation::MAX_ITEMS,
        max_sku: validation::MAX_SKU_CHARS,
        max_quantity: validation::MAX_QUANTITY,
        max_note: validation::MAX_NOTE_CHARS,
        form,
        form_error,
        list_error,
        any_pending,
        rows,
        blank_row,
        q,
        cursor,
        carried,
        older_href,
        newest_href,
        refresh_href,
        summary,
        search_down,
        read_source: match source {
            ReadSource::ReadModel => "read-model",
            ReadSource::Merged => "merged",
            ReadSource::WriteDb => "write-db",
        },
    };
    render(&page, status)
}

pub(super) fn render_failed(e: askama::Error) -> Response {
    AppError::Internal(anyhow::Error::new(e).context("Failed to render an order row"))
        .into_response()
}

/// The newest orders from the write database, for when search cannot be
/// read: the first page only (older pages need search's cursor), filtered
/// by the same word-prefix rule search uses.
pub(super) async fn write_side_stand_in(
    state: &AppState,
    user: &auth::CurrentUser,
    params: &ListParams,
) -> Result<Vec<OrderView>, AppError> {
    if params.cursor.is_some() {
        return Ok(vec![]);
    }
    let q = params.q.as_deref();
    // A search looks further back, so a few matches are likely among them.
    let look_at = if q.is_some() { 200 } else { DEFAULT_PAGE_SIZE };
    let orders = read_your_writes::newest_orders(&state.db, user.id, look_at).await?;
    Ok(orders
        .into_iter()
        .filter(|o| read_your_writes::matches_query(o, q))
        .take(DEFAULT_PAGE_SIZE)
        .collect())
}

pub(in crate::pages) async fn orders_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    query: Result<Query<OrdersQuery>, QueryRejection>,
) -> Response {
    // A mangled query string still gets the page, just without its options.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    // The page's list is a read like the API's (its form's writes are
    // charged to the write limit instead).
    if let Err(limited) = state.limits.read(user.id) {
        return read_limited(limited);
    }
    orders_response(&state, &user, query, FormValues::fresh(), None).await
}

/// The orders page when its user's reads are spent: 429 with `Retry-After`
/// and a line saying when to reload, instead of the list.
pub(super) fn read_limited(limited: AppError) -> Response {
    let retry_after = match &limited {
        AppError::TooMany { retry_after, .. } => *retry_after,
        _ => 1,
    };
    let (status, message) = describe(limited);
    // The message is the server's own words and a number: nothing to escape.
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Too many reads · Sightline</title>\
         <link rel=\"stylesheet\" href=\"/static/sightline.css\"></head>\
         <body><main id=\"main\"><section class=\"card\"><h1>Slow down</h1>\
         <p role=\"alert\">{message}.</p><p><a href=\"/orders\">Reload the orders</a></p>\
         </section></main></body></html>\n"
    );
    let mut response = html_page(status, body);
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, retry_after.into());
    response
}
