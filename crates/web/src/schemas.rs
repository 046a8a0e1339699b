//! The shapes the OpenAPI document describes that no handler's own type
//! gives it: the error body (the server's own type is `web::error`'s), the
//! `X-Read-Source` header, and what `/healthz` and `/readyz` answer. Handlers
//! name them in their `#[utoipa::path]`; `openapi` lists them.

use serde::Serialize;
use utoipa::ToSchema;

/// Every error answer: `{"error", "code"}`, plus `field` for a broken rule.
/// (The server's own type is `error::ErrorBody`; this one only describes it.)
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A plain message a person can read.
    #[schema(example = "Quantity must be between 1 and 1,000")]
    pub error: String,
    /// A machine code, e.g. `invalid`, `invalid_shape`, `malformed_json`,
    /// `common_password`, `wrong_password`,
    /// `bad_query`, `bad_cursor`, `unauthorized`, `bad_credentials`,
    /// `forbidden`, `not_found`, `username_taken`, `order_conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `body_timeout`,
    /// `throttled`, `rate_limited`, `too_many_streams`, `too_many_polls`,
    /// `unavailable`, `busy`.
    #[schema(example = "invalid")]
    pub code: String,
    /// The field that breaks a rule (422), e.g. `items[0].quantity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every rule the request breaks (422), the first of which is also in
    /// `error`, `code` and `field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One broken rule of a 422 answer.
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

/// Which store answered a read.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReadSourceHeader {
    ReadModel,
    Merged,
    WriteDb,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadinessStatus {
    Ready,
    Degraded,
    Unready,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpDown {
    Up,
    Down,
}

/// Elasticsearch as `/readyz` sees it: `not used` in the same-database mode
/// (`READ_STORE=postgres`).
#[derive(Serialize, ToSchema)]
pub enum ReadStoreState {
    #[serde(rename = "up")]
    Up,
    #[serde(rename = "down")]
    Down,
    #[serde(rename = "not used")]
    NotUsed,
}

/// The bus as `/readyz` sees it: `in-process` (one machine), NATS `up` or
/// `down` (or `unknown` before its first look), `not used` in the
/// same-database mode.
#[derive(Serialize, ToSchema)]
pub enum BusState {
    #[serde(rename = "in-process")]
    InProcess,
    #[serde(rename = "up")]
    Up,
    #[serde(rename = "down")]
    Down,
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "not used")]
    NotUsed,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadinessStatus,
    pub postgres: UpDown,
    pub elasticsearch: ReadStoreState,
    pub bus: BusState,
    /// Present only when a background task (relay, projector, notice hub,
    /// …) has stopped while the server runs: its name and why. The status
    /// is then `unready` and the instance is about to exit non-zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<FailedTask>,
}

/// A background task that stopped while the server ran.
#[derive(Serialize, ToSchema)]
pub struct FailedTask {
    /// e.g. `relay`, `notice hub`, `projector (NATS consumer)`.
    pub name: String,
    pub error: String,
}
