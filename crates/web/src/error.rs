//! The one error type of the HTTP layer, and the one place where the
//! stages' own errors (`WriteError`, `AuthError`, `ReadError`, …) become
//! HTTP answers.
//!
//! Every failure becomes `{"error": "<plain message>", "code": "<machine code>"}`
//! with a fitting status. Internal details (SQL, Elasticsearch answers, causes)
//! are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use sightline_core::auth::AuthError;
use sightline_core::consistency::MalformedToken;
use sightline_core::read_side::index::IndexError;
use sightline_core::read_side::model::ReadError;
use sightline_core::write_side::WriteError;
use sightline_core::write_side::validation::BrokenRules;

#[derive(thiserror::Error, Debug)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("authentication required")]
    Unauthorized,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// A well-formed request that breaks rules (422): every broken rule is
    /// listed, the first one is also the answer's `error`/`field`.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        field: Option<String>,
        errors: Vec<FieldError>,
    },
    #[error("too many attempts, try again in {retry_after} s")]
    Throttled { retry_after: u64 },
    /// A limit met (too many streams, polls or writes): 429 with `Retry-After`.
    #[error("{message}")]
    TooMany {
        code: &'static str,
        message: String,
        retry_after: u64,
    },
    #[error("{0} is unavailable, try again shortly")]
    Unavailable(&'static str),
    /// A bounded resource (password hashing, the write admission) is full:
    /// 503 with `Retry-After: 1`, nothing done.
    #[error("the server is busy, try again in a moment")]
    Busy,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub use sightline_core::write_side::validation::FieldError;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A well-formed request that breaks a rule (422).
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::invalid_all(vec![FieldError {
            field: field.to_owned(),
            code: "invalid",
            message: message.into(),
        }])
    }

    /// A well-formed request that breaks one rule with a code of its own
    /// (422 `code`, e.g. `common_password`), also the answer's `code`.
    pub fn broken_rule(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Invalid {
            code,
            message: message.clone(),
            field: Some(field.to_owned()),
            errors: vec![FieldError {
                field: field.to_owned(),
                code,
                message,
            }],
        }
    }

    /// A request that breaks every rule in `errors` (at least one). The
    /// first is repeated as `error`/`field` for clients that read one.
    pub fn invalid_all(errors: Vec<FieldError>) -> Self {
        let first = errors.first().cloned().unwrap_or_else(|| FieldError {
            field: String::new(),
            code: "invalid",
            message: "the request breaks a rule".to_owned(),
        });
        Self::Invalid {
            code: "invalid",
            message: first.message,
            field: (!first.field.is_empty()).then_some(first.field),
            errors,
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Invalid { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            Self::TooMany { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Database(e) if is_connection_error(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Database(e) if is_statement_timeout(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, "busy")
            }
            Self::Database(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

/// SQLSTATE 57014: the statement ran past the web pool's
/// `statement_timeout` (`WEB_STATEMENT_TIMEOUT_MS`) and PostgreSQL cancelled
/// it. The request was held up, not wrong: 503 `busy`, try again.
pub fn is_statement_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// Errors that mean "PostgreSQL cannot be reached", as opposed to a bad query:
/// no connection at all, or one PostgreSQL ended or refuses — SQLSTATE class
/// 08 (connection exception) and 57P01–57P03 (shut down by an operator,
/// after a crash, or starting up). A pooled connection that was in use a
/// moment before a restart is not pinged before its next query (see
/// `db::connect_pool`), so that query is where the shutdown shows.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl AppError {
    /// The status this error answers with and the message a person may read:
    /// the one place that decides what leaves the server. Internal details
    /// (SQL, Elasticsearch answers, causes) are logged here and replaced by a
    /// plain message. Both the JSON API and the pages answer through it.
    pub fn public(&self) -> (StatusCode, String) {
        let (status, _) = self.status_and_code();
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = ?self, "request failed");
                "internal server error".to_owned()
            }
            // Counted in /metrics; a log line each would let a flood flood the log.
            _ if matches!(self, Self::Busy) => self.to_string(),
            _ if matches!(self, Self::Database(e) if is_statement_timeout(e)) => {
                tracing::warn!(error = %self, "a statement ran past WEB_STATEMENT_TIMEOUT_MS");
                Self::Busy.to_string()
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "dependency unavailable");
                match self {
                    Self::Unavailable(_) => self.to_string(),
                    _ => "the database is unavailable, try again shortly".to_owned(),
                }
            }
            _ => self.to_string(),
        };
        (status, message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (_, code) = self.status_and_code();
        let (status, message) = self.public();
        let (field, errors) = match &self {
            Self::Invalid { field, errors, .. } => (field.as_deref(), Some(errors.as_slice())),
            _ => (None, None),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: &message,
                code,
                field,
                errors,
            }),
        )
            .into_response();
        let retry_after = match &self {
            Self::Throttled { retry_after } | Self::TooMany { retry_after, .. } => {
                Some(HeaderValue::from(*retry_after))
            }
            Self::Busy => Some(HeaderValue::from_static("1")),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from_static("2")),
            _ => None,
        };
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(BrokenRules(errors)) => AppError::invalid_all(errors),
            WriteError::Conflict { code, message } => AppError::conflict(code, message),
            WriteError::NotFound => AppError::NotFound,
            WriteError::RateLimited { retry_after } => AppError::TooMany {
                code: "rate_limited",
                message: e.to_string(),
                retry_after,
            },
            WriteError::Database(e) => AppError::Database(e),
            WriteError::Internal(e) => AppError::Internal(e),
        }
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid {
                field,
                code,
                message,
            } => AppError::broken_rule(field, code, message),
            AuthError::UsernameTaken => AppError::conflict("username_taken", e.to_string()),
            AuthError::BadCredentials => AppError::BadCredentials,
            // 422, not 401: the session is fine, and a client that reads 401
            // as "signed out" must not sign the user out over a typo.
            AuthError::WrongCurrentPassword => {
                AppError::broken_rule("current_password", "wrong_password", e.to_string())
            }
            AuthError::Throttled { retry_after } => AppError::Throttled { retry_after },
            AuthError::Busy => AppError::Busy,
            AuthError::Database(e) => AppError::Database(e),
            AuthError::Internal(e) => AppError::Internal(e),
        }
    }
}

impl From<MalformedToken> for AppError {
    fn from(e: MalformedToken) -> Self {
        AppError::bad_request("bad_consistency_token", e.to_string())
    }
}

impl From<ReadError> for AppError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Index(e) => e.into(),
            ReadError::Database(e) => AppError::Database(e),
        }
    }
}

impl From<IndexError> for AppError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Unreachable(_) => {
                tracing::warn!(error = %e, "read model unreachable");
                AppError::Unavailable("search")
            }
            other => AppError::Internal(anyhow::Error::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database error with only a SQLSTATE, as PostgreSQL sends one.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn status_of(code: &'static str) -> StatusCode {
        AppError::Database(sqlx::Error::Database(Box::new(Sqlstate(code))))
            .status_and_code()
            .0
    }

    #[test]
    fn a_database_that_shut_down_or_dropped_the_connection_is_unavailable_not_a_bug() {
        // Shut down by an operator, after a crash, starting up; connection exceptions.
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "08000"] {
            assert_eq!(status_of(code), StatusCode::SERVICE_UNAVAILABLE, "{code}");
        }
        // A query's own failures stay server errors.
        for code in ["42P01", "23505", "40001"] {
            assert_eq!(status_of(code), StatusCode::INTERNAL_SERVER_ERROR, "{code}");
        }
    }

    #[test]
    fn a_statement_past_the_web_timeout_is_busy_not_a_bug() {
        let e = AppError::Database(sqlx::Error::Database(Box::new(Sqlstate("57014"))));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        assert_eq!(e.public().1, AppError::Busy.to_string());
    }
}
