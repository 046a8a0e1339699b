//! The order form as the no-JavaScript page posts it: reading its item
//! lines, keeping what was typed, and checking it against the write side's
//! rules, with every broken rule marked next to its field.

use uuid::Uuid;

use crate::error::FieldError;
use sightline_core::money;
use sightline_core::write_side::validation::{self, BrokenRules, ItemRequest, PlaceOrderRequest};

/// The order form as posted: item lines repeat their fields (`sku`,
/// `quantity`, `unit_price` once per line, in order), so it is read as a
/// list of pairs. `unit_price` is typed in currency units ("12.50");
/// `unit_price_cents` is still taken from forms that send cents.
#[derive(Default)]
pub(super) struct OrderForm {
    pub(super) id: String,
    pub(super) skus: Vec<String>,
    pub(super) quantities: Vec<String>,
    pub(super) prices: Vec<String>,
    pub(super) prices_cents: Vec<String>,
    pub(super) note: String,
    /// "Add another item" was pressed (no JavaScript): show one more line.
    pub(super) add_item: bool,
    /// "Remove" was pressed on this line (no JavaScript).
    pub(super) remove_item: Option<usize>,
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

    pub(super) fn line_count(&self) -> usize {
        self.skus
            .len()
            .max(self.quantities.len())
            .max(self.prices.len())
            .max(self.prices_cents.len())
            .max(1)
    }

    /// More item lines than an order may have (the JSON path's bound too).
    pub(super) fn too_many_lines(&self) -> bool {
        self.line_count() > validation::MAX_ITEMS
    }

    /// The price of line `i` as typed, in currency units.
    pub(super) fn price_text(&self, i: usize) -> String {
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
    pub(super) id: String,
    pub(super) value: String,
    pub(super) error: Option<String>,
}

impl FieldValue {
    pub(super) fn new(id: String, value: String) -> Self {
        FieldValue {
            id,
            value,
            error: None,
        }
    }
}

/// One item line of the form.
pub(super) struct LineValues {
    pub(super) sku: FieldValue,
    pub(super) quantity: FieldValue,
    pub(super) price: FieldValue,
}

impl LineValues {
    /// Line 0 keeps the plain ids (`sku`, `quantity`, `unit_price`); later
    /// lines number theirs from 2, as a person counts them.
    pub(super) fn new(index: usize, sku: String, quantity: String, price: String) -> Self {
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
    pub(super) id: String,
    pub(super) lines: Vec<LineValues>,
    pub(super) note: FieldValue,
    pub(super) items_error: Option<String>,
}

impl FormValues {
    pub(super) fn fresh() -> Self {
        FormValues {
            id: Uuid::new_v4().to_string(),
            lines: vec![LineValues::new(0, String::new(), "1".into(), String::new())],
            note: FieldValue::new("note".into(), String::new()),
            items_error: None,
        }
    }

    /// The submitted values, kept (a new id unless the old one is a UUID:
    /// nothing was placed, so the same id may be submitted again).
    pub(super) fn kept(form: &OrderForm) -> Self {
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
    pub(super) fn mark(&mut self, errors: &[FieldError]) -> Vec<String> {
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

pub(super) enum LinePart {
    Sku,
    Quantity,
    Price,
}

pub(super) enum FieldRef {
    Line(usize, LinePart),
    Note,
    Items,
}

/// `items[2].quantity` → line 2's quantity; `note`; `items`.
pub(super) fn parse_field(field: &str) -> Option<FieldRef> {
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

/// What the form says of a price it cannot read.
pub(super) const PRICE_NOT_AN_AMOUNT: &str = "Price must be an amount such as 12.50";

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
pub(super) fn check_form(form: &OrderForm) -> Result<PlaceOrderRequest, Vec<FieldError>> {
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
