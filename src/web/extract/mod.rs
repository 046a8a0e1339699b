//! What every handler extracts from a request: the JSON body, query and path
//! through extractors that turn axum's rejections into the contract's JSON
//! errors (here), and who is asking ([`client_addr`]).

pub mod client_addr;
mod rejection;

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};

use crate::web::error::AppError;

/// A JSON integer, also when written with a zero fraction (`24.0`): JSON
/// Schema, and so the OpenAPI document, counts those as integers, and
/// generated clients and fuzzers send them. Any other fraction, or a number
/// outside `i64`, is the wrong shape.
pub fn json_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(i) = number.as_i64() {
        return Ok(i);
    }
    // 2^63 is exactly representable, and every float below it converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "expected an integer, found {number}"
        ))),
    }
}

/// `Json<T>` whose failures answer 400/413/415/422 in the contract's shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// `Query<T>` whose failures answer 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` whose failures answer 404: a malformed id names nothing.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType,
            _ => rejection::json_error(&rejection),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        rejection::query_error(&rejection)
    }
}

impl From<PathRejection> for AppError {
    fn from(_: PathRejection) -> Self {
        AppError::NotFound
    }
}
