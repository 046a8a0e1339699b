//! The orders page: the list (from the read model, merged with the write side
//! for a consistency token; the write side's newest orders while search is
//! unreachable), the summary, and the place and cancel forms (item lines,
//! prices in currency units, every broken rule next to its field). Every row
//! is rendered by `order_row.html`, also the script's `<template>`.
//!
//! This file holds the form handlers; `form` reads and checks what they
//! post, `list` answers with the page, `view` is what the page shows.

mod form;
mod list;
mod view;

pub(super) use list::orders_page;

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use crate::extract::ApiPath;
use crate::extract::session::PageUser;
use crate::state::AppState;
use sightline_core::auth;
use sightline_core::write_side::orders::Written;
use sightline_core::write_side::validation::{self};

use super::*;
use form::*;
use list::*;
use view::*;

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
    use super::form::*;
    use super::view::*;
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
