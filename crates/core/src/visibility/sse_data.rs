//! The JSON `data` of each event of `GET /api/events`: one type per event,
//! which `sse` serialises and the OpenAPI document describes, so the
//! published JSON Schemas are the shapes that are sent.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::notice_log::{Cursor, Notice};

/// `event: ready` — the stream is open. Without `Last-Event-ID` the cursor is
/// the user's head (`0` before any notice); when resuming, the client's own.
#[derive(Serialize, ToSchema)]
pub struct ReadyData {
    /// Opaque: store it as it is and send it back as `Last-Event-ID`.
    #[schema(example = "16-9c41d2e0")]
    pub cursor: String,
}

/// Why a stream opened with `reset` instead of replaying.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// Not a cursor (also the plain numbers older servers sent).
    Malformed,
    /// A missed notice is older than `NOTICE_RETENTION_DAYS`, or was pruned.
    TooOld,
    /// Beyond the user's newest notice, or from another history.
    Unknown,
}

/// `event: reset` — the log cannot vouch for the client's `Last-Event-ID`:
/// nothing is replayed; refetch what you show, then live notices follow.
#[derive(Serialize, ToSchema)]
pub struct ResetData {
    /// The user's head: resume from here.
    pub cursor: String,
    #[schema(value_type = ResetReason)]
    pub reason: &'static str,
}

/// Why a stream ended with `session-ended`.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    /// Signed out: this session, or every session of the user.
    SignedOut,
    /// The session passed its idle or absolute end.
    Expired,
}

/// `event: session-ended` — the stream's session is over; the stream closes
/// after it, and reconnecting gets 401: sign in again.
#[derive(Serialize, ToSchema)]
pub struct SessionEndedData {
    #[schema(value_type = SessionEndReason)]
    pub reason: &'static str,
}

/// `event: order-visible` — the order is searchable at this version: a list
/// request made now includes it.
#[derive(Serialize, ToSchema)]
pub struct OrderVisibleData {
    pub id: Uuid,
    #[schema(minimum = 1)]
    pub version: i32,
    /// The order's status at this version.
    #[schema(example = "placed")]
    pub status: String,
    pub visible_at: DateTime<Utc>,
}

/// `event: order-failed` — the order committed but cannot be made searchable
/// (its event was parked as a dead letter).
#[derive(Serialize, ToSchema)]
pub struct OrderFailedData {
    pub id: Uuid,
    #[schema(minimum = 1)]
    pub version: i32,
    #[schema(example = "failed")]
    pub status: String,
    /// Why, in words (Elasticsearch's refusal or the decoding error).
    pub error: String,
    pub failed_at: DateTime<Utc>,
}

impl ReadyData {
    pub fn new(cursor: &Cursor) -> Self {
        Self {
            cursor: cursor.to_string(),
        }
    }
}

/// A notice's event data: `order-failed` when it carries an error.
pub fn notice_data(notice: &Notice) -> String {
    let json = match &notice.error {
        None => serde_json::to_string(&OrderVisibleData {
            id: notice.order_id,
            version: notice.order_version,
            status: notice.status.clone(),
            visible_at: notice.visible_at,
        }),
        Some(error) => serde_json::to_string(&OrderFailedData {
            id: notice.order_id,
            version: notice.order_version,
            status: notice.status.clone(),
            error: error.clone(),
            failed_at: notice.visible_at,
        }),
    };
    json.expect("event data serialises")
}
