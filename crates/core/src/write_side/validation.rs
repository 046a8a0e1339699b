//! Where an order is validated. Nothing past this point checks business rules:
//! the transaction commits a `ValidOrder`, the projector copies it.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::money;
use crate::order::Item;

pub const MAX_ITEMS: usize = 100;
/// What a person reads when an order has no items or more than [`MAX_ITEMS`].
pub const ITEMS_COUNT_MESSAGE: &str = "An order has 1 to 100 items";
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_QUANTITY: i64 = 1000;
pub const MAX_UNIT_PRICE_CENTS: i64 = 10_000_000;
pub const MAX_NOTE_CHARS: usize = 1000;

/// The body of `POST /api/orders` as sent. Numbers are wide so that an out of
/// range value is a rule broken (422 with its field), not a shape error.
#[derive(Deserialize, Debug, Clone, ToSchema)]
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

#[derive(Deserialize, Debug, Clone, ToSchema)]
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
    #[serde(deserialize_with = "json_integer")]
    pub quantity: i64,
    #[schema(minimum = 0, maximum = 10_000_000)]
    #[serde(deserialize_with = "json_integer")]
    pub unit_price_cents: i64,
}

/// One broken rule: which field (a path such as `items[1].quantity`), a
/// machine code, and a message in words a person uses.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// Every rule an order breaks (at least one), in the order they were checked.
#[derive(thiserror::Error, Debug)]
#[error("the order breaks {} rule(s)", .0.len())]
pub struct BrokenRules(pub Vec<FieldError>);

/// A JSON integer, also when written with a zero fraction (`24.0`): JSON
/// Schema, and so the OpenAPI document, counts those as integers, and
/// generated clients and fuzzers send them. Any other fraction, or a number
/// outside `i64`, is the wrong shape.
pub fn json_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(i) = number.as_i64() {
        return Ok(i);
    }
    // 2^63 is exactly representable, and every float below it converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "expected an integer, found {number}"
        ))),
    }
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

/// Checks every rule and reports every one broken, each with its field and
/// a message in words a person uses (the page shows each next to its input).
pub fn validate(request: PlaceOrderRequest) -> Result<ValidOrder, BrokenRules> {
    let mut errors = Vec::new();
    let mut broken = |field: String, code: &'static str, message: String| {
        errors.push(FieldError {
            field,
            code,
            message,
        })
    };
    let currency = request
        .currency
        .clone()
        .unwrap_or_else(|| crate::outbox::events::DEFAULT_CURRENCY.to_owned());
    let currency_ok = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !currency_ok {
        broken(
            "currency".into(),
            "invalid",
            "Currency must be a three-letter code such as USD".into(),
        );
    }
    // Prices are printed in the order's currency when it is a real code.
    let price_currency = if currency_ok {
        currency.as_str()
    } else {
        "USD"
    };
    if request.items.is_empty() || request.items.len() > MAX_ITEMS {
        broken("items".into(), "item_count", ITEMS_COUNT_MESSAGE.to_owned());
    }
    for (i, item) in request.items.iter().enumerate() {
        let sku_chars = item.sku.chars().count();
        if sku_chars == 0 || item.sku.trim().is_empty() {
            broken(
                format!("items[{i}].sku"),
                "required",
                "SKU is required".into(),
            );
        } else if sku_chars > MAX_SKU_CHARS {
            broken(
                format!("items[{i}].sku"),
                "too_long",
                format!("SKU must be at most {MAX_SKU_CHARS} characters"),
            );
        }
        // PostgreSQL text cannot hold U+0000: refused here, not answered 500.
        if item.sku.contains('\0') {
            broken(
                format!("items[{i}].sku"),
                "invalid",
                "SKU must not contain the character U+0000".into(),
            );
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            broken(
                format!("items[{i}].quantity"),
                "out_of_range",
                format!("Quantity must be between 1 and {}", thousands(MAX_QUANTITY)),
            );
        }
        if !(0..=MAX_UNIT_PRICE_CENTS).contains(&item.unit_price_cents) {
            broken(
                format!("items[{i}].unit_price_cents"),
                "out_of_range",
                format!(
                    "Price must be between {} and {}",
                    money::format_amount(0, price_currency),
                    money::format_amount(MAX_UNIT_PRICE_CENTS, price_currency)
                ),
            );
        }
    }
    if let Some(note) = &request.note
        && note.chars().count() > MAX_NOTE_CHARS
    {
        broken(
            "note".into(),
            "too_long",
            format!(
                "Note must be at most {} characters",
                thousands(MAX_NOTE_CHARS as i64)
            ),
        );
    }
    if request
        .note
        .as_ref()
        .is_some_and(|note| note.contains('\0'))
    {
        broken(
            "note".into(),
            "invalid",
            "Note must not contain the character U+0000".into(),
        );
    }
    if !errors.is_empty() {
        return Err(BrokenRules(errors));
    }
    let items: Vec<Item> = request
        .items
        .into_iter()
        .map(|item| Item {
            sku: item.sku,
            quantity: item.quantity as i32,
            unit_price_cents: item.unit_price_cents,
        })
        .collect();
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

/// 1000 → "1,000" (the limits as people read them).
fn thousands(n: i64) -> String {
    money::group_thousands(n.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_count_message_names_the_bound() {
        assert_eq!(
            ITEMS_COUNT_MESSAGE,
            format!("An order has 1 to {MAX_ITEMS} items")
        );
    }

    fn item(sku: &str, quantity: i64, unit_price_cents: i64) -> ItemRequest {
        ItemRequest {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        }
    }

    fn field_of(result: Result<ValidOrder, BrokenRules>) -> String {
        match result {
            Err(BrokenRules(errors)) => errors[0].field.clone(),
            other => panic!("expected a rule violation, got {other:?}"),
        }
    }

    #[test]
    fn reports_every_broken_rule_in_plain_words() {
        let result = validate(PlaceOrderRequest {
            id: None,
            items: vec![item("", 0, 10_000_001), item("B", 2, 5)],
            note: Some("x".repeat(1001)),
            currency: None,
        });
        let Err(BrokenRules(errors)) = result else {
            panic!("expected rule violations")
        };
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("items[0].sku", "SKU is required"),
                ("items[0].quantity", "Quantity must be between 1 and 1,000"),
                (
                    "items[0].unit_price_cents",
                    "Price must be between $0.00 and $100,000.00"
                ),
                ("note", "Note must be at most 1,000 characters"),
            ]
        );
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
