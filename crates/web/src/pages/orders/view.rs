//! What the orders page shows: one row (`order_row.html`, also the script's
//! `<template>`), the page itself (`orders.html`), the summary, and the
//! links between pages.

use askama::Template;
use chrono::{DateTime, Utc};

use sightline_core::money;
use sightline_core::order::Item;
use sightline_core::order::OrderStatus;
use sightline_core::order::OrderView;
use sightline_core::outbox::events::DEFAULT_CURRENCY;
use sightline_core::read_side::document::SummaryDocument;

use super::form::*;

/// One row of the orders table, rendered from `order_row.html`: the same
/// markup for rows the server lists and (through the page's `<template>`)
/// rows the script adds, so both look and behave alike.
#[derive(Template)]
#[template(path = "order_row.html")]
pub(super) struct OrderRow {
    pub(super) id: String,
    pub(super) short_id: String,
    /// `placed` or `cancelled`.
    pub(super) status: &'static str,
    pub(super) cancellable: bool,
    /// `visible`, `pending` or `delayed` (the script adds `rejected`, `failed`).
    pub(super) state: &'static str,
    /// The one state a person reads ("Confirmed", "Cancelled", …).
    pub(super) label: &'static str,
    pub(super) items: Vec<Item>,
    pub(super) total_cents: i64,
    pub(super) currency: String,
    pub(super) total_text: String,
    pub(super) note: String,
    pub(super) placed_at_iso: String,
    pub(super) placed_at_exact: String,
    pub(super) placed_at_text: String,
    pub(super) placed_at_ms: i64,
    /// The order's version the row shows (the script ignores older news).
    pub(super) version: i32,
}

impl OrderRow {
    /// The row the page's `<template>` holds for the script to fill.
    pub(super) fn blank() -> Self {
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
    pub(super) iso: String,
    pub(super) exact: String,
    pub(super) text: String,
}

impl TimeText {
    pub(super) fn new(at: DateTime<Utc>) -> Self {
        TimeText {
            iso: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            exact: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            text: at.format("%-d %b %Y, %H:%M UTC").to_string(),
        }
    }
}

pub(super) struct Amount {
    pub(super) cents: i64,
    pub(super) currency: String,
    pub(super) text: String,
}

impl Amount {
    pub(super) fn new(cents: i64, currency: &str) -> Self {
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
    pub(super) username: String,
    pub(super) lag_slo_ms: u128,
    pub(super) server_now_ms: i64,
    /// The currency new orders are placed in.
    pub(super) currency: &'static str,
    pub(super) currency_symbol: &'static str,
    /// Shown by the script for a price it cannot read (the server says the
    /// same for the form without JavaScript).
    pub(super) price_message: &'static str,
    pub(super) max_items: usize,
    pub(super) max_sku: usize,
    pub(super) max_quantity: i64,
    pub(super) max_note: usize,
    pub(super) form: FormValues,
    pub(super) form_error: Option<String>,
    pub(super) list_error: Option<String>,
    /// Each row's HTML, from `OrderRow`.
    pub(super) rows: Vec<String>,
    pub(super) blank_row: String,
    pub(super) q: String,
    pub(super) cursor: String,
    /// Hidden fields the search form carries along (name, value).
    pub(super) carried: Vec<(&'static str, String)>,
    pub(super) older_href: Option<String>,
    pub(super) newest_href: Option<String>,
    pub(super) refresh_href: String,
    /// Whether some row still waits for search.
    pub(super) any_pending: bool,
    pub(super) summary: SummaryView,
    /// Search is unreachable: the rows come from the write database.
    pub(super) search_down: bool,
    /// `read-model`, `merged` or `write-db`: where the rows came from.
    pub(super) read_source: &'static str,
}

/// The summary read model, ready to print ("—" where it cannot be read).
pub(super) struct SummaryView {
    pub(super) placed: String,
    pub(super) cancelled: String,
    pub(super) spent: Vec<Amount>,
    pub(super) last_order_at: Option<TimeText>,
}

impl SummaryView {
    pub(super) fn from_document(doc: Option<SummaryDocument>) -> Self {
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
    pub(super) fn unknown() -> Self {
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
