//! Event payloads as stored in the outbox. Every event carries its type and
//! schema version; a change of shape gets a new version and an upcaster from
//! the old one, never an edit in place — old payloads stay readable forever.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::{Item, OrderStatus};

pub const ORDER_PLACED: &str = "OrderPlaced";
pub const ORDER_CANCELLED: &str = "OrderCancelled";

/// The currency of orders from before currencies existed (OrderPlaced v1).
pub const DEFAULT_CURRENCY: &str = "USD";

/// `OrderPlaced`, schema version 1 (no currency).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct OrderPlacedV1 {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
}

/// `OrderPlaced`, schema version 2: v1 plus the currency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderPlacedV2 {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub currency: String,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
}

impl OrderPlacedV2 {
    pub const SCHEMA_VERSION: i32 = 2;
}

impl From<OrderPlacedV1> for OrderPlacedV2 {
    /// The upcaster: a v1 order was placed in the default currency.
    fn from(v1: OrderPlacedV1) -> Self {
        OrderPlacedV2 {
            order_id: v1.order_id,
            user_id: v1.user_id,
            username: v1.username,
            items: v1.items,
            total_cents: v1.total_cents,
            currency: DEFAULT_CURRENCY.to_owned(),
            note: v1.note,
            placed_at: v1.placed_at,
        }
    }
}

/// `OrderCancelled`, schema version 1. It carries the whole order as it is
/// after the cancellation, so the read model can be written from this event
/// alone (a version-keyed full write, no read-modify-write).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderCancelledV1 {
    #[serde(flatten)]
    pub order: OrderPlacedV2,
    pub cancelled_at: DateTime<Utc>,
}

impl OrderCancelledV1 {
    pub const SCHEMA_VERSION: i32 = 1;
}

/// An event as the projector understands it, whatever version it was stored as.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderEvent {
    Placed(OrderPlacedV2),
    Cancelled(OrderCancelledV1),
}

impl OrderEvent {
    /// Decodes and upcasts a stored event. Unknown types and versions are an
    /// error (the relay parks them), never a crash.
    pub fn decode(
        event_type: &str,
        schema_version: i32,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        fn parse<T: serde::de::DeserializeOwned>(
            payload: &serde_json::Value,
            what: &str,
        ) -> Result<T, String> {
            T::deserialize(payload).map_err(|e| format!("undecodable {what}: {e}"))
        }
        match (event_type, schema_version) {
            (ORDER_PLACED, 1) => Ok(Self::Placed(
                parse::<OrderPlacedV1>(payload, "OrderPlaced v1")?.into(),
            )),
            (ORDER_PLACED, 2) => Ok(Self::Placed(parse(payload, "OrderPlaced v2")?)),
            (ORDER_CANCELLED, 1) => Ok(Self::Cancelled(parse(payload, "OrderCancelled v1")?)),
            (kind, version) => Err(format!("unknown event {kind} v{version}")),
        }
    }

    /// The order as it stands after this event.
    pub fn order(&self) -> &OrderPlacedV2 {
        match self {
            Self::Placed(order) => order,
            Self::Cancelled(cancelled) => &cancelled.order,
        }
    }

    pub fn status(&self) -> OrderStatus {
        match self {
            Self::Placed(_) => OrderStatus::Placed,
            Self::Cancelled(_) => OrderStatus::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 payload exactly as the first release stored it. Keep this
    /// fixture forever: old events must stay processable.
    const V1_FIXTURE: &str = r#"{
        "order_id": "6c0e1a52-7d0b-4c1e-9a4e-2f3b5c6d7e8f",
        "user_id": "0b7e2f43-1111-4c1e-9a4e-2f3b5c6d7e8f",
        "username": "alice",
        "items": [{"sku": "WIDGET-1", "quantity": 2, "unit_price_cents": 1250}],
        "total_cents": 2500,
        "note": null,
        "placed_at": "2026-11-26T23:59:59.123456Z"
    }"#;

    #[test]
    fn a_v1_order_is_read_in_the_default_currency() {
        let payload: serde_json::Value = serde_json::from_str(V1_FIXTURE).unwrap();
        let event = OrderEvent::decode(ORDER_PLACED, 1, &payload).unwrap();
        let order = event.order();
        assert_eq!(order.currency, "USD");
        assert_eq!(order.total_cents, 2500);
        assert_eq!(order.items[0].sku, "WIDGET-1");
        assert_eq!(event.status(), OrderStatus::Placed);
    }

    #[test]
    fn unknown_versions_are_errors_not_panics() {
        let payload: serde_json::Value = serde_json::from_str(V1_FIXTURE).unwrap();
        assert!(
            OrderEvent::decode(ORDER_PLACED, 99, &payload)
                .unwrap_err()
                .contains("unknown")
        );
        assert!(OrderEvent::decode("OrderShipped", 1, &payload).is_err());
        assert!(
            OrderEvent::decode(ORDER_PLACED, 2, &payload)
                .unwrap_err()
                .contains("undecodable")
        );
    }
}
