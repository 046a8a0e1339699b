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

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "placed" => Some(Self::Placed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderView {
    pub id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub currency: String,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub status: OrderStatus,
    /// The order's version: 1 when placed, +1 for every change.
    pub version: i32,
    /// True once search can find the order.
    pub visible: bool,
}
