//! The documents of the read store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::order::{Item, OrderStatus, OrderView};

/// An order as the read model stores it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderDocument {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    /// The items' skus again, as a searchable field.
    pub skus: Vec<String>,
    pub total_cents: i64,
    #[serde(default = "default_currency")]
    pub currency: String,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
    #[serde(default = "default_status")]
    pub status: OrderStatus,
    #[serde(default)]
    pub cancelled_at: Option<DateTime<Utc>>,
    pub version: i64,
}

fn default_currency() -> String {
    crate::outbox::events::DEFAULT_CURRENCY.to_owned()
}

fn default_status() -> OrderStatus {
    OrderStatus::Placed
}

impl OrderDocument {
    /// Search found it, so it is visible.
    pub fn into_view(self) -> OrderView {
        OrderView {
            id: self.id,
            username: self.username,
            items: self.items,
            total_cents: self.total_cents,
            currency: self.currency,
            note: self.note,
            placed_at: self.placed_at,
            status: self.status,
            version: self.version as i32,
            visible: true,
        }
    }
}

/// One user's counters: the second, counter-style read model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, ToSchema)]
pub struct SummaryDocument {
    pub user_id: Uuid,
    pub orders_placed: i64,
    pub orders_cancelled: i64,
    /// Cents of orders placed and not cancelled, per currency.
    pub spent_cents: BTreeMap<String, i64>,
    pub last_order_at: Option<DateTime<Utc>>,
    /// Bumped on every change; the store's external version.
    pub revision: i64,
}
