//! The shape of an order as clients see it, shared by the write side's
//! answers, the read model and read-your-writes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderView {
    pub id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
    /// True once search can find the order.
    pub visible: bool,
}
