//! The orders page: the list (from the read model, merged with the write side
//! for a consistency token), the summary, and the place and cancel forms.

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{self, PageUser};
use crate::consistency::ConsistencyToken;
use crate::error::AppError;
use crate::http::ApiPath;
use crate::order::OrderStatus;
use crate::order::OrderView;
use crate::read_side::document::SummaryDocument;
use crate::read_side::{self, ListParams, OrderList};
use crate::state::AppState;
use crate::write_side::cancel_order;
use crate::write_side::place_order::{self, Placed};
use crate::write_side::validation::{self, ItemRequest, PlaceOrderRequest};

use super::*;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct OrdersQuery {
    q: Option<String>,
    cursor: Option<String>,
    consistency_token: Option<String>,
    /// `poll` makes app.js long-poll instead of opening the event stream.
    transport: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct OrderForm {
    id: String,
    sku: String,
    quantity: String,
    unit_price_cents: String,
    note: String,
}

/// What the form shows: the values last submitted (after an error) or defaults.
pub(super) struct FormValues {
    id: String,
    sku: String,
    quantity: String,
    unit_price_cents: String,
    note: String,
}

impl FormValues {
    fn fresh() -> Self {
        FormValues {
            id: Uuid::new_v4().to_string(),
            sku: String::new(),
            quantity: "1".to_owned(),
            unit_price_cents: String::new(),
            note: String::new(),
        }
    }
}

/// One row of the orders table, ready to print.
pub(super) struct OrderRow {
    id: String,
    /// `placed` or `cancelled`.
    status: &'static str,
    cancellable: bool,
    /// `visible`, `pending` or `delayed`.
    state: &'static str,
    state_label: &'static str,
    items: String,
    total: String,
    note: String,
    placed_at_iso: String,
    placed_at_text: String,
    placed_at_ms: i64,
}

#[derive(Template)]
#[template(path = "orders.html")]
pub(super) struct OrdersPage {
    username: String,
    lag_slo_ms: u128,
    server_now_ms: i64,
    form: FormValues,
    form_error: Option<String>,
    list_error: Option<String>,
    rows: Vec<OrderRow>,
    q: String,
    /// Hidden fields the search form carries along (name, value).
    carried: Vec<(&'static str, String)>,
    older_href: Option<String>,
    newest_href: Option<String>,
    refresh_href: String,
    /// Whether some row still waits for search.
    any_pending: bool,
    /// The counters read model, when search has one for this user.
    summary: Option<SummaryLine>,
}

/// The summary read model, ready to print.
pub(super) struct SummaryLine {
    placed: i64,
    cancelled: i64,
    /// "12.34 USD, 3.00 EUR"
    spent: String,
    last_order_at: String,
}

impl SummaryLine {
    fn from_document(doc: SummaryDocument) -> Self {
        let spent = doc
            .spent_cents
            .iter()
            .map(|(currency, cents)| format!("{} {currency}", format_money(*cents)))
            .collect::<Vec<_>>()
            .join(", ");
        SummaryLine {
            placed: doc.orders_placed,
            cancelled: doc.orders_cancelled,
            spent: if spent.is_empty() {
                "0.00".to_owned()
            } else {
                spent
            },
            last_order_at: doc
                .last_order_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "—".to_owned()),
        }
    }
}

/// Formats cents as money: 1234 → "12.34".
pub fn format_money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

pub(super) fn row_state(
    order: &OrderView,
    now: DateTime<Utc>,
    lag_slo: chrono::Duration,
) -> &'static str {
    if order.visible {
        "visible"
    } else if now - order.placed_at > lag_slo {
        "delayed"
    } else {
        "pending"
    }
}

pub(super) fn state_label(state: &str) -> &'static str {
    match state {
        "visible" => "visible",
        "delayed" => "delayed — still on its way",
        _ => "pending — on its way to search",
    }
}

pub(super) fn order_row(
    order: &OrderView,
    now: DateTime<Utc>,
    lag_slo: chrono::Duration,
) -> OrderRow {
    let state = row_state(order, now, lag_slo);
    OrderRow {
        id: order.id.to_string(),
        status: order.status.as_str(),
        cancellable: order.status == OrderStatus::Placed,
        state,
        state_label: state_label(state),
        items: order
            .items
            .iter()
            .map(|i| format!("{} × {}", i.sku, i.quantity))
            .collect::<Vec<_>>()
            .join(", "),
        total: format!("{} {}", format_money(order.total_cents), order.currency),
        note: order.note.clone().unwrap_or_default(),
        placed_at_iso: order
            .placed_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        placed_at_text: order.placed_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        placed_at_ms: order.placed_at.timestamp_millis(),
    }
}

pub(super) fn orders_href(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(name, value);
    }
    let query = query.finish();
    if query.is_empty() {
        "/orders".to_owned()
    } else {
        format!("/orders?{query}")
    }
}

/// Renders `/orders`: the form (with `form` values and `form_error`) above
/// one page of the user's orders. A list that cannot be read is reported on
/// the page, and the form still works: writes do not need search.
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
    let list = match read_side::list_page(state, user, &params, token).await {
        Ok((list, _source)) => list,
        Err(e) => {
            let (error_status, message) = describe(e);
            status = error_status;
            list_error = Some(message);
            OrderList {
                orders: vec![],
                next_cursor: None,
            }
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
        Ok(doc) => doc.map(SummaryLine::from_document),
        Err(e) => {
            tracing::warn!(error = %e, "summary unavailable");
            None
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
        form,
        form_error,
        list_error,
        any_pending: rows.iter().any(|r| r.state != "visible"),
        rows,
        q,
        carried,
        older_href,
        newest_href,
        refresh_href,
        summary,
    };
    render(&page, status)
}

pub(super) async fn orders_page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    query: Result<Query<OrdersQuery>, QueryRejection>,
) -> Response {
    // A mangled query string still gets the page, just without its options.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    orders_response(&state, &user, query, FormValues::fresh(), None).await
}

pub(super) fn parse_number(field: &str, raw: &str) -> Result<i64, AppError> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| AppError::invalid(field, format!("{field} must be a whole number")))
}

pub(super) fn order_request(form: &OrderForm) -> Result<PlaceOrderRequest, AppError> {
    let id = match form.id.trim() {
        "" => None,
        raw => Some(
            raw.parse::<Uuid>()
                .map_err(|_| AppError::invalid("id", "id must be a UUID"))?,
        ),
    };
    let note = form.note.trim();
    Ok(PlaceOrderRequest {
        id,
        items: vec![ItemRequest {
            sku: form.sku.trim().to_owned(),
            quantity: parse_number("quantity", &form.quantity)?,
            unit_price_cents: parse_number("unit_price_cents", &form.unit_price_cents)?,
        }],
        note: (!note.is_empty()).then(|| note.to_owned()),
        currency: None,
    })
}

pub(super) async fn place_order_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Form(form): Form<OrderForm>,
) -> Response {
    let placed = match order_request(&form)
        .and_then(validation::validate)
        .and_then(|order| state.limits.writes.check(user.id).map(|()| order))
    {
        Ok(order) => {
            place_order::place_order(&state.db, state.in_transaction.as_deref(), &user, order).await
        }
        Err(e) => Err(e),
    };
    match placed {
        Ok(Placed::Created(order) | Placed::AlreadyPlaced(order)) => {
            let token = ConsistencyToken {
                write_seq: order.user_write_seq,
            }
            .encode();
            remember_token(&state, &user, &token).await;
            Redirect::to(&orders_href(&[("consistency_token", &token)])).into_response()
        }
        Err(e) => {
            let (status, message) = describe(e);
            // Nothing was placed: the same id may be submitted again.
            let values = FormValues {
                id: form
                    .id
                    .trim()
                    .parse::<Uuid>()
                    .unwrap_or_else(|_| Uuid::new_v4())
                    .to_string(),
                sku: form.sku,
                quantity: form.quantity,
                unit_price_cents: form.unit_price_cents,
                note: form.note,
            };
            orders_response(
                &state,
                &user,
                OrdersQuery::default(),
                values,
                Some((status, message)),
            )
            .await
        }
    }
}

/// Keeps the token in the session too, so later pages (not only the one the
/// redirect names) include the user's own writes.
pub(super) async fn remember_token(state: &AppState, user: &auth::CurrentUser, token: &str) {
    if let Err(e) = auth::session::remember_consistency_token(&state.db, user, token).await {
        tracing::warn!(error = %e, "could not keep the consistency token in the session");
    }
}

/// The no-JS cancel button: cancels, then shows the list with read-your-writes.
pub(super) async fn cancel_order_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    let cancelled = match state.limits.writes.check(user.id) {
        Ok(()) => {
            cancel_order::cancel_order(&state.db, state.in_transaction.as_deref(), &user, id).await
        }
        Err(e) => Err(e),
    };
    match cancelled {
        Ok(cancellation) => {
            let token = ConsistencyToken {
                write_seq: cancellation.write_seq,
            }
            .encode();
            remember_token(&state, &user, &token).await;
            Redirect::to(&orders_href(&[("consistency_token", &token)])).into_response()
        }
        Err(e) => {
            let (status, message) = describe(e);
            orders_response(
                &state,
                &user,
                OrdersQuery::default(),
                FormValues::fresh(),
                Some((status, message)),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_money() {
        assert_eq!(format_money(0), "0.00");
        assert_eq!(format_money(5), "0.05");
        assert_eq!(format_money(1234), "12.34");
        assert_eq!(format_money(-150), "-1.50");
    }

    #[test]
    fn builds_order_links() {
        assert_eq!(orders_href(&[("q", ""), ("cursor", "")]), "/orders");
        assert_eq!(
            orders_href(&[("q", "blue widget"), ("cursor", "abc")]),
            "/orders?q=blue+widget&cursor=abc"
        );
    }

    #[test]
    fn rejects_non_numeric_form_values() {
        let form = OrderForm {
            sku: "A".into(),
            quantity: "two".into(),
            unit_price_cents: "100".into(),
            ..OrderForm::default()
        };
        match order_request(&form) {
            Err(AppError::Invalid { field, .. }) => assert_eq!(field.as_deref(), Some("quantity")),
            _ => panic!("expected a rule violation"),
        }
    }
}
