//! The order as the read model stores it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::{Item, OrderView};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderDocument {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub items: Vec<Item>,
    /// The items' skus again, as a searchable field.
    pub skus: Vec<String>,
    pub total_cents: i64,
    pub note: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub version: i64,
}

impl OrderDocument {
    /// Search found it, so it is visible.
    pub fn into_view(self) -> OrderView {
        OrderView {
            id: self.id,
            username: self.username,
            items: self.items,
            total_cents: self.total_cents,
            note: self.note,
            placed_at: self.placed_at,
            visible: true,
        }
    }
}
