//! The shape of an order as clients see it, shared by the write side's
//! answers, the read model and read-your-writes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct Item {
    #[schema(min_length = 1, max_length = 64)]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i32,
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub unit_price_cents: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    /// Computed by the server: the sum of quantity × unit price.
    #[schema(minimum = 0)]
    pub total_cents: i64,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    pub currency: String,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub status: OrderStatus,
    /// The order's version: 1 when placed, +1 for every change.
    #[schema(minimum = 1)]
    pub version: i32,
    /// True once search can find the order.
    pub visible: bool,
}
