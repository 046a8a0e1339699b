//! The orders page: the list (from the read model, merged with the write side
//! for a consistency token; the write side's newest orders while search is
//! unreachable), the summary, and the place and cancel forms (item lines,
//! prices in currency units, every broken rule next to its field). Every row
//! is rendered by `order_row.html`, also the script's `<template>`.

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::api::orders::{ListParams, OrderList, list_page};
use crate::error::AppError;
use crate::error::FieldError;
use crate::extract::ApiPath;
use crate::extract::session::PageUser;
use crate::state::AppState;
use sightline_core::auth;
use sightline_core::consistency::ConsistencyToken;
use sightline_core::money;
use sightline_core::order::Item;
use sightline_core::order::OrderStatus;
use sightline_core::order::OrderView;
use sightline_core::outbox::events::DEFAULT_CURRENCY;
use sightline_core::read_side::DEFAULT_PAGE_SIZE;
use sightline_core::read_side::document::SummaryDocument;
use sightline_core::read_side::read_your_writes::{self, ReadSource};
use sightline_core::write_side::orders::Written;
use sightline_core::write_side::validation::{self, BrokenRules, ItemRequest, PlaceOrderRequest};

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

/// The order form as posted: item lines repeat their fields (`sku`,
/// `quantity`, `unit_price` once per line, in order), so it is read as a
/// list of pairs. `unit_price` is typed in currency units ("12.50");
/// `unit_price_cents` is still taken from forms that send cents.
#[derive(Default)]
pub(super) struct OrderForm {
    id: String,
    skus: Vec<String>,
    quantities: Vec<String>,
    prices: Vec<String>,
    prices_cents: Vec<String>,
    note: String,
    /// "Add another item" was pressed (no JavaScript): show one more line.
    add_item: bool,
    /// "Remove" was pressed on this line (no JavaScript).
    remove_item: Option<usize>,
}

impl OrderForm {
    /// Keeps at most one line more than an order may have: enough to know
    /// the form has too many ([`OrderForm::too_many_lines`]), and no work or
    /// memory for the rest of a form that was not typed by a person.
    pub(super) fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        const KEEP: usize = validation::MAX_ITEMS + 1;
        let push = |list: &mut Vec<String>, value: String| {
            if list.len() < KEEP {
                list.push(value);
            }
        };
        let mut form = OrderForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "id" => form.id = value,
                "sku" => push(&mut form.skus, value),
                "quantity" => push(&mut form.quantities, value),
                "unit_price" => push(&mut form.prices, value),
                "unit_price_cents" => push(&mut form.prices_cents, value),
                "note" => form.note = value,
                "add_item" => form.add_item = true,
                "remove_item" => form.remove_item = value.parse().ok(),
                _ => {}
            }
        }
        form
    }

    fn line_count(&self) -> usize {
        self.skus
            .len()
            .max(self.quantities.len())
            .max(self.prices.len())
            .max(self.prices_cents.len())
            .max(1)
    }

    /// More item lines than an order may have (the JSON path's bound too).
    fn too_many_lines(&self) -> bool {
        self.line_count() > validation::MAX_ITEMS
    }

    /// The price of line `i` as typed, in currency units.
    fn price_text(&self, i: usize) -> String {
        match (self.prices.get(i), self.prices_cents.get(i)) {
            (Some(price), _) => price.clone(),
            (None, Some(cents)) => cents
                .trim()
                .parse::<i64>()
                .map(money::decimal)
                .unwrap_or_else(|_| cents.clone()),
            (None, None) => String::new(),
        }
    }
}

/// One input of the form: its id, the value to show, and its error.
pub(super) struct FieldValue {
    id: String,
    value: String,
    error: Option<String>,
}

impl FieldValue {
    fn new(id: String, value: String) -> Self {
        FieldValue {
            id,
            value,
            error: None,
        }
    }
}

/// One item line of the form.
pub(super) struct LineValues {
    sku: FieldValue,
    quantity: FieldValue,
    price: FieldValue,
}

impl LineValues {
    /// Line 0 keeps the plain ids (`sku`, `quantity`, `unit_price`); later
    /// lines number theirs from 2, as a person counts them.
    fn new(index: usize, sku: String, quantity: String, price: String) -> Self {
        let id = |name: &str| {
            if index == 0 {
                name.to_owned()
            } else {
                format!("{name}-{}", index + 1)
            }
        };
        LineValues {
            sku: FieldValue::new(id("sku"), sku),
            quantity: FieldValue::new(id("quantity"), quantity),
            price: FieldValue::new(id("unit_price"), price),
        }
    }
}

/// What the form shows: the values last submitted (after an error, each
/// broken rule next to its field) or a fresh form.
pub(super) struct FormValues {
    id: String,
    lines: Vec<LineValues>,
    note: FieldValue,
    items_error: Option<String>,
}

impl FormValues {
    fn fresh() -> Self {
        FormValues {
            id: Uuid::new_v4().to_string(),
            lines: vec![LineValues::new(0, String::new(), "1".into(), String::new())],
            note: FieldValue::new("note".into(), String::new()),
            items_error: None,
        }
    }

    /// The submitted values, kept (a new id unless the old one is a UUID:
    /// nothing was placed, so the same id may be submitted again).
    fn kept(form: &OrderForm) -> Self {
        let lines = (0..form.line_count().min(validation::MAX_ITEMS))
            .map(|i| {
                LineValues::new(
                    i,
                    form.skus.get(i).cloned().unwrap_or_default(),
                    form.quantities
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| "1".into()),
                    form.price_text(i),
                )
            })
            .collect();
        FormValues {
            id: form
                .id
                .trim()
                .parse::<Uuid>()
                .unwrap_or_else(|_| Uuid::new_v4())
                .to_string(),
            lines,
            note: FieldValue::new("note".into(), form.note.clone()),
            items_error: None,
        }
    }

    /// Puts each broken rule next to its field; what names no field of the
    /// form is returned for the top of the form.
    fn mark(&mut self, errors: &[FieldError]) -> Vec<String> {
        let mut unplaced = Vec::new();
        for error in errors {
            let slot = match parse_field(&error.field) {
                Some(FieldRef::Line(i, part)) => self.lines.get_mut(i).map(|line| match part {
                    LinePart::Sku => &mut line.sku,
                    LinePart::Quantity => &mut line.quantity,
                    LinePart::Price => &mut line.price,
                }),
                Some(FieldRef::Note) => Some(&mut self.note),
                Some(FieldRef::Items) => {
                    self.items_error
                        .get_or_insert_with(|| error.message.clone());
                    continue;
                }
                None => None,
            };
            match slot {
                Some(field) => {
                    field.error.get_or_insert_with(|| error.message.clone());
                }
                None => unplaced.push(error.message.clone()),
            }
        }
        unplaced
    }
}

enum LinePart {
    Sku,
    Quantity,
    Price,
}

enum FieldRef {
    Line(usize, LinePart),
    Note,
    Items,
}

/// `items[2].quantity` → line 2's quantity; `note`; `items`.
fn parse_field(field: &str) -> Option<FieldRef> {
    match field {
        "note" => return Some(FieldRef::Note),
        "items" => return Some(FieldRef::Items),
        _ => {}
    }
    let rest = field.strip_prefix("items[")?;
    let (index, part) = rest.split_once("].")?;
    let part = match part {
        "sku" => LinePart::Sku,
        "quantity" => LinePart::Quantity,
        "unit_price_cents" => LinePart::Price,
        _ => return None,
    };
    Some(FieldRef::Line(index.parse().ok()?, part))
}

/// One row of the orders table, rendered from `order_row.html`: the same
/// markup for rows the server lists and (through the page's `<template>`)
/// rows the script adds, so both look and behave alike.
#[derive(Template)]
#[template(path = "order_row.html")]
pub(super) struct OrderRow {
    id: String,
    short_id: String,
    /// `placed` or `cancelled`.
    status: &'static str,
    cancellable: bool,
    /// `visible`, `pending` or `delayed` (the script adds `rejected`, `failed`).
    state: &'static str,
    /// The one state a person reads ("Confirmed", "Cancelled", …).
    label: &'static str,
    items: Vec<Item>,
    total_cents: i64,
    currency: String,
    total_text: String,
    note: String,
    placed_at_iso: String,
    placed_at_exact: String,
    placed_at_text: String,
    placed_at_ms: i64,
    /// The order's version the row shows (the script ignores older news).
    version: i32,
}

impl OrderRow {
    /// The row the page's `<template>` holds for the script to fill.
    fn blank() -> Self {
        OrderRow {
            id: String::new(),
            short_id: String::new(),
            status: "placed",
            cancellable: true,
            state: "pending",
            label: state_label("pending", "placed"),
            items: vec![],
            total_cents: 0,
            currency: String::new(),
            total_text: String::new(),
            note: String::new(),
            placed_at_iso: String::new(),
            placed_at_exact: String::new(),
            placed_at_text: String::new(),
            placed_at_ms: 0,
            version: 1,
        }
    }
}

/// A time as pages print it: short text, the exact time on hover, and the
/// machine form the script re-prints in the browser's locale and zone.
pub(super) struct TimeText {
    iso: String,
    exact: String,
    text: String,
}

impl TimeText {
    fn new(at: DateTime<Utc>) -> Self {
        TimeText {
            iso: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            exact: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            text: at.format("%-d %b %Y, %H:%M UTC").to_string(),
        }
    }
}

pub(super) struct Amount {
    cents: i64,
    currency: String,
    text: String,
}

impl Amount {
    fn new(cents: i64, currency: &str) -> Self {
        Amount {
            cents,
            currency: currency.to_owned(),
            text: money::format_amount(cents, currency),
        }
    }
}

#[derive(Template)]
#[template(path = "orders.html")]
pub(super) struct OrdersPage {
    username: String,
    lag_slo_ms: u128,
    server_now_ms: i64,
    /// The currency new orders are placed in.
    currency: &'static str,
    currency_symbol: &'static str,
    /// Shown by the script for a price it cannot read (the server says the
    /// same for the form without JavaScript).
    price_message: &'static str,
    max_items: usize,
    max_sku: usize,
    max_quantity: i64,
    max_note: usize,
    form: FormValues,
    form_error: Option<String>,
    list_error: Option<String>,
    /// Each row's HTML, from `OrderRow`.
    rows: Vec<String>,
    blank_row: String,
    q: String,
    cursor: String,
    /// Hidden fields the search form carries along (name, value).
    carried: Vec<(&'static str, String)>,
    older_href: Option<String>,
    newest_href: Option<String>,
    refresh_href: String,
    /// Whether some row still waits for search.
    any_pending: bool,
    summary: SummaryView,
    /// Search is unreachable: the rows come from the write database.
    search_down: bool,
    /// `read-model`, `merged` or `write-db`: where the rows came from.
    read_source: &'static str,
}

/// The summary read model, ready to print ("—" where it cannot be read).
pub(super) struct SummaryView {
    placed: String,
    cancelled: String,
    spent: Vec<Amount>,
    last_order_at: Option<TimeText>,
}

impl SummaryView {
    fn from_document(doc: Option<SummaryDocument>) -> Self {
        let Some(doc) = doc else {
            // Nothing projected yet for this user: honest zeros.
            return SummaryView {
                placed: "0".into(),
                cancelled: "0".into(),
                spent: vec![Amount::new(0, DEFAULT_CURRENCY)],
                last_order_at: None,
            };
        };
        let mut spent: Vec<Amount> = doc
            .spent_cents
            .iter()
            .map(|(currency, cents)| Amount::new(*cents, currency))
            .collect();
        if spent.is_empty() {
            spent.push(Amount::new(0, DEFAULT_CURRENCY));
        }
        SummaryView {
            placed: doc.orders_placed.to_string(),
            cancelled: doc.orders_cancelled.to_string(),
            spent,
            last_order_at: doc.last_order_at.map(TimeText::new),
        }
    }

    /// Search cannot be read: say nothing rather than zeros.
    fn unknown() -> Self {
        SummaryView {
            placed: "—".into(),
            cancelled: "—".into(),
            spent: vec![],
            last_order_at: None,
        }
    }
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

/// The one state a row shows, in words a person uses. `app.js` has the same
/// table (`LABEL`) for rows it changes.
pub(super) fn state_label(state: &str, status: &str) -> &'static str {
    match (state, status) {
        ("rejected", _) => "Not placed",
        ("failed", _) => "Couldn't be processed",
        (_, "cancelled") => "Cancelled",
        ("visible", _) => "Confirmed",
        ("delayed", _) => "Taking longer than usual",
        _ => "Saving…",
    }
}

pub(super) fn order_row(
    order: &OrderView,
    now: DateTime<Utc>,
    lag_slo: chrono::Duration,
) -> OrderRow {
    let state = row_state(order, now, lag_slo);
    let status = order.status.as_str();
    let placed = TimeText::new(order.placed_at);
    let id = order.id.to_string();
    OrderRow {
        short_id: id[..8].to_owned(),
        id,
        status,
        cancellable: order.status == OrderStatus::Placed,
        state,
        label: state_label(state, status),
        items: order.items.clone(),
        total_cents: order.total_cents,
        currency: order.currency.clone(),
        total_text: money::format_amount(order.total_cents, &order.currency),
        note: order.note.clone().unwrap_or_default(),
        placed_at_iso: placed.iso,
        placed_at_exact: placed.exact,
        placed_at_text: placed.text,
        placed_at_ms: order.placed_at.timestamp_millis(),
        version: order.version,
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

fn render_failed(e: askama::Error) -> Response {
    AppError::Internal(anyhow::Error::new(e).context("Failed to render an order row"))
        .into_response()
}

/// The newest orders from the write database, for when search cannot be
/// read: the first page only (older pages need search's cursor), filtered
/// by the same word-prefix rule search uses.
async fn write_side_stand_in(
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

pub(super) async fn orders_page(
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
fn read_limited(limited: AppError) -> Response {
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

/// What the form says of a price it cannot read.
const PRICE_NOT_AN_AMOUNT: &str = "Price must be an amount such as 12.50";

/// Reads the form into an order request. A field that cannot be read as a
/// number is reported (and stands in as a valid value) so that validation
/// still reports every other broken rule at once.
pub(super) fn order_request(form: &OrderForm) -> (PlaceOrderRequest, Vec<FieldError>) {
    let mut unreadable = Vec::new();
    let id = form.id.trim().parse::<Uuid>().ok();
    let items = (0..form.line_count())
        .map(|i| {
            let quantity = form.quantities.get(i).map(String::as_str).unwrap_or("");
            let quantity = quantity.trim().parse::<i64>().unwrap_or_else(|_| {
                unreadable.push(FieldError {
                    field: format!("items[{i}].quantity"),
                    code: "not_a_number",
                    message: "Quantity must be a whole number".into(),
                });
                1
            });
            let unit_price_cents = money::parse_amount(&form.price_text(i)).unwrap_or_else(|| {
                unreadable.push(FieldError {
                    field: format!("items[{i}].unit_price_cents"),
                    code: "not_an_amount",
                    message: PRICE_NOT_AN_AMOUNT.into(),
                });
                0
            });
            ItemRequest {
                sku: form
                    .skus
                    .get(i)
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                quantity,
                unit_price_cents,
            }
        })
        .collect();
    let note = form.note.trim();
    let request = PlaceOrderRequest {
        id,
        items,
        note: (!note.is_empty()).then(|| note.to_owned()),
        currency: None,
    };
    (request, unreadable)
}

/// Every broken rule of the form: the unreadable fields, then validation's
/// rules for the rest. A form that breaks none is the request to place.
fn check_form(form: &OrderForm) -> Result<PlaceOrderRequest, Vec<FieldError>> {
    let (request, mut errors) = order_request(form);
    match validation::validate(request.clone()) {
        Ok(_) if errors.is_empty() => Ok(request),
        Ok(_) => Err(errors),
        Err(BrokenRules(rules)) => {
            // One error per field, the unreadable one first; a set keeps the
            // merge linear in the number of errors.
            let mut marked: std::collections::HashSet<String> =
                errors.iter().map(|e| e.field.clone()).collect();
            for rule in rules {
                if marked.insert(rule.field.clone()) {
                    errors.push(rule);
                }
            }
            Err(errors)
        }
    }
}

pub(super) async fn place_order_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = OrderForm::from_pairs(pairs);
    // A form with more lines than an order may have is refused before any
    // line is read, the way the JSON path refuses it; the form shows its
    // first lines again, never thousands.
    if form.too_many_lines() {
        let mut values = FormValues::kept(&form);
        values.items_error = Some(validation::ITEMS_COUNT_MESSAGE.to_owned());
        return orders_response(
            &state,
            &user,
            OrdersQuery::default(),
            values,
            Some((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "The order was not placed: {}.",
                    validation::ITEMS_COUNT_MESSAGE
                ),
            )),
        )
        .await;
    }
    // Without JavaScript, adding and removing item lines is a round trip.
    if form.add_item || form.remove_item.is_some() {
        let mut values = FormValues::kept(&form);
        if let Some(i) = form.remove_item
            && values.lines.len() > 1
            && i < values.lines.len()
        {
            values.lines.remove(i);
        } else if form.add_item && values.lines.len() < validation::MAX_ITEMS {
            values.lines.push(LineValues::new(
                values.lines.len(),
                String::new(),
                "1".into(),
                String::new(),
            ));
        }
        // Ids follow positions again after a removal.
        values.lines = values
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| LineValues::new(i, l.sku.value, l.quantity.value, l.price.value))
            .collect();
        return orders_response(&state, &user, OrdersQuery::default(), values, None).await;
    }
    // The write is taken from the user's limit before the lines are
    // checked, as on the JSON path: refused forms cost their sender too.
    let turn = match state.orders.take_turn(&user) {
        Ok(turn) => turn,
        Err(e) => {
            let (status, message) = describe(e);
            return orders_response(
                &state,
                &user,
                OrdersQuery::default(),
                FormValues::kept(&form),
                Some((status, message)),
            )
            .await;
        }
    };
    let request = match check_form(&form) {
        Ok(request) => request,
        Err(errors) => {
            let mut values = FormValues::kept(&form);
            let mut unplaced = values.mark(&errors);
            let count = errors.len();
            unplaced.insert(
                0,
                if count == 1 {
                    "The order was not placed: one thing needs fixing, marked below.".to_owned()
                } else {
                    format!("The order was not placed: {count} things need fixing, marked below.")
                },
            );
            return orders_response(
                &state,
                &user,
                OrdersQuery::default(),
                values,
                Some((StatusCode::UNPROCESSABLE_ENTITY, unplaced.join(" "))),
            )
            .await;
        }
    };
    match state.orders.place_in_turn(turn, &user, request).await {
        Ok(written) => after_write(&state, &user, &written).await,
        Err(e) => {
            let (status, message) = describe(e);
            orders_response(
                &state,
                &user,
                OrdersQuery::default(),
                FormValues::kept(&form),
                Some((status, message)),
            )
            .await
        }
    }
}

/// After a write: the list with read-your-writes, its token in the URL and
/// kept in the session.
async fn after_write(state: &AppState, user: &auth::CurrentUser, written: &Written) -> Response {
    let token = written.token.encode();
    remember_token(state, user, &token).await;
    Redirect::to(&orders_href(&[("consistency_token", &token)])).into_response()
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
    match state.orders.cancel(&user, id).await {
        Ok(written) => after_write(&state, &user, &written).await,
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

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
    fn reads_item_lines_and_prices_in_currency_units() {
        let form = OrderForm::from_pairs(pairs(&[
            ("sku", "A"),
            ("quantity", "2"),
            ("unit_price", "12.50"),
            ("sku", "B"),
            ("quantity", "1"),
            ("unit_price", "$1,000"),
        ]));
        let request = check_form(&form).expect("a valid order");
        let order = validation::validate(request).expect("a valid order");
        assert_eq!(order.items.len(), 2);
        assert_eq!(order.items[0].unit_price_cents, 1250);
        assert_eq!(order.items[1].unit_price_cents, 100_000);
        assert_eq!(order.total_cents, 2 * 1250 + 100_000);
    }

    #[test]
    fn reports_every_broken_rule_of_the_form() {
        let form = OrderForm::from_pairs(pairs(&[
            ("sku", ""),
            ("quantity", "two"),
            ("unit_price", "abc"),
            ("sku", "B"),
            ("quantity", "0"),
            ("unit_price", "200000"),
        ]));
        let errors = check_form(&form).expect_err("broken rules");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[0].quantity",
                "items[0].unit_price_cents",
                "items[0].sku",
                "items[1].quantity",
                "items[1].unit_price_cents"
            ]
        );
        let mut values = FormValues::kept(&form);
        assert!(values.mark(&errors).is_empty(), "every rule has its field");
        assert_eq!(values.lines[1].quantity.id, "quantity-2");
        assert_eq!(
            values.lines[1].price.error.as_deref(),
            Some("Price must be between $0.00 and $100,000.00")
        );
        assert_eq!(values.lines[0].price.value, "abc", "values are kept");
    }
}
