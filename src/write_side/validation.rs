//! Where an order is validated. Nothing past this point checks business rules:
//! the transaction commits a `ValidOrder`, the projector copies it.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::order::Item;

pub const MAX_ITEMS: usize = 100;
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_QUANTITY: i64 = 1000;
pub const MAX_UNIT_PRICE_CENTS: i64 = 10_000_000;
pub const MAX_NOTE_CHARS: usize = 1000;

/// The body of `POST /api/orders` as sent. Numbers are wide so that an out of
/// range value is a rule broken (422 with its field), not a shape error.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Chosen by the client so a retry cannot place the order twice.
    pub id: Option<Uuid>,
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemRequest>,
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    pub note: Option<String>,
    /// ISO 4217 code; absent means the default currency.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    pub currency: Option<String>,
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    /// Not blank, and without U+0000.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
        example = "WIDGET-42"
    )]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "crate::http::json_integer")]
    pub quantity: i64,
    #[schema(minimum = 0, maximum = 10_000_000)]
    #[serde(deserialize_with = "crate::http::json_integer")]
    pub unit_price_cents: i64,
}

/// An order that passed every rule; the server computed its total.
#[derive(Debug, Clone)]
pub struct ValidOrder {
    pub id: Uuid,
    pub items: Vec<Item>,
    pub note: Option<String>,
    pub total_cents: i64,
    pub currency: String,
}

pub fn validate(request: PlaceOrderRequest) -> AppResult<ValidOrder> {
    if request.items.is_empty() || request.items.len() > MAX_ITEMS {
        return Err(AppError::invalid(
            "items",
            format!("an order has 1 to {MAX_ITEMS} items"),
        ));
    }
    let mut items = Vec::with_capacity(request.items.len());
    for (i, item) in request.items.into_iter().enumerate() {
        let sku_chars = item.sku.chars().count();
        if sku_chars == 0 || sku_chars > MAX_SKU_CHARS || item.sku.trim().is_empty() {
            return Err(AppError::invalid(
                &format!("items[{i}].sku"),
                format!("sku must be 1 to {MAX_SKU_CHARS} characters"),
            ));
        }
        // PostgreSQL text cannot hold U+0000: refused here, not answered 500.
        if item.sku.contains('\0') {
            return Err(AppError::invalid(
                &format!("items[{i}].sku"),
                "sku must not contain the character U+0000",
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(AppError::invalid(
                &format!("items[{i}].quantity"),
                format!("quantity must be 1 to {MAX_QUANTITY}"),
            ));
        }
        if !(0..=MAX_UNIT_PRICE_CENTS).contains(&item.unit_price_cents) {
            return Err(AppError::invalid(
                &format!("items[{i}].unit_price_cents"),
                format!("unit_price_cents must be 0 to {MAX_UNIT_PRICE_CENTS}"),
            ));
        }
        items.push(Item {
            sku: item.sku,
            quantity: item.quantity as i32,
            unit_price_cents: item.unit_price_cents,
        });
    }
    if let Some(note) = &request.note
        && note.chars().count() > MAX_NOTE_CHARS
    {
        return Err(AppError::invalid(
            "note",
            format!("note must be at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    if request
        .note
        .as_ref()
        .is_some_and(|note| note.contains('\0'))
    {
        return Err(AppError::invalid(
            "note",
            "note must not contain the character U+0000",
        ));
    }
    let currency = request
        .currency
        .unwrap_or_else(|| crate::outbox::events::DEFAULT_CURRENCY.to_owned());
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(AppError::invalid(
            "currency",
            "currency must be a three-letter code such as USD",
        ));
    }
    // At most 100 × 1000 × 10^7 = 10^12: no overflow possible.
    let total_cents = items
        .iter()
        .map(|i| i64::from(i.quantity) * i.unit_price_cents)
        .sum();
    Ok(ValidOrder {
        id: request.id.unwrap_or_else(Uuid::new_v4),
        items,
        note: request.note,
        total_cents,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i64, unit_price_cents: i64) -> ItemRequest {
        ItemRequest {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        }
    }

    fn field_of(result: AppResult<ValidOrder>) -> String {
        match result {
            Err(AppError::Invalid { field, .. }) => field.unwrap_or_default(),
            other => panic!("expected a rule violation, got {other:?}"),
        }
    }

    #[test]
    fn computes_the_total() {
        let order = validate(PlaceOrderRequest {
            id: None,
            items: vec![item("A", 2, 150), item("B", 1, 99)],
            note: None,
            currency: None,
        })
        .unwrap();
        assert_eq!(order.total_cents, 399);
    }

    #[test]
    fn names_the_field_that_breaks_a_rule() {
        let req = |items| PlaceOrderRequest {
            id: None,
            items,
            note: None,
            currency: None,
        };
        assert_eq!(field_of(validate(req(vec![]))), "items");
        assert_eq!(
            field_of(validate(req(vec![item("", 1, 1)]))),
            "items[0].sku"
        );
        assert_eq!(
            field_of(validate(req(vec![item("A", 1, 1), item("B", 0, 1)]))),
            "items[1].quantity"
        );
        assert_eq!(
            field_of(validate(req(vec![item("A", 1, 10_000_001)]))),
            "items[0].unit_price_cents"
        );
        assert_eq!(
            field_of(validate(PlaceOrderRequest {
                id: None,
                items: vec![item("A", 1, 1)],
                note: Some("x".repeat(1001)),
                currency: None,
            })),
            "note"
        );
        assert_eq!(
            field_of(validate(PlaceOrderRequest {
                id: None,
                items: vec![item("A", 1, 1)],
                note: None,
                currency: Some("usd".into()),
            })),
            "currency"
        );
    }
}
