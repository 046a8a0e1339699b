//! Event payloads as stored in the outbox. Each type carries a schema
//! version; a change of shape gets a new version, never an edit in place.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::Item;

pub const ORDER_PLACED: &str = "OrderPlaced";

/// `OrderPlaced`, schema version 1.
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

impl OrderPlacedV1 {
    pub const SCHEMA_VERSION: i32 = 1;
}
