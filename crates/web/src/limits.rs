//! What no client may take more than its share of: open event streams and
//! long polls (per user and per address), reads per user, `/status/stream`
//! streams, the request body's time on the wire, and — in `serve` — open
//! connections, per instance and per address (writes per user:
//! `write_side::write_limit`). Each limit answers with a clear status and `code`, and
//! counts its refusals in `/metrics`.
//!
//! The address is the TCP peer's (`ConnectInfo`, set by `serve`): a
//! forwarded-for header is not trusted here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use crate::error::AppError;
use sightline_core::config::Settings;
use sightline_core::rate::UserBuckets;

/// Requests larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every per-instance limit's state, shared by all requests.
pub struct Limits {
    pub streams: HeldCaps,
    pub polls: HeldCaps,
    pub status_streams: Arc<AtomicUsize>,
    max_status_streams: usize,
    reads: UserBuckets,
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            streams: HeldCaps::new(
                "stream",
                settings.max_streams_per_user,
                settings.max_streams_per_address,
            ),
            polls: HeldCaps::new(
                "poll",
                settings.max_polls_per_user,
                settings.max_polls_per_address,
            ),
            status_streams: Arc::default(),
            max_status_streams: settings.max_status_streams,
            reads: UserBuckets::new(settings.read_burst, settings.read_rate_per_min),
        }
    }

    /// One read from `user`'s bucket (`READ_BURST`, `READ_RATE_PER_MIN`),
    /// or 429 `rate_limited` with the seconds until the next one. Reads are
    /// cheap one by one; the bucket keeps one account's script from
    /// spending the read store and the pool that everyone shares.
    pub fn read(&self, user: Uuid) -> Result<(), AppError> {
        self.reads.take(user).map_err(|retry_after| {
            rejected("read", "user");
            AppError::TooMany {
                code: "rate_limited",
                message: format!("too many reads for this user; try again in {retry_after} s"),
                retry_after,
            }
        })
    }

    /// A place among the `/status/stream` streams, or 429.
    pub fn status_stream(&self) -> Result<StatusStreamPermit, AppError> {
        let open = self.status_streams.fetch_add(1, Ordering::AcqRel);
        let permit = StatusStreamPermit(self.status_streams.clone());
        if open >= self.max_status_streams {
            drop(permit);
            rejected("status_stream", "instance");
            return Err(AppError::TooMany {
                code: "too_many_streams",
                message: "too many status streams are open on this server; try again later"
                    .to_owned(),
                retry_after: 10,
            });
        }
        Ok(permit)
    }
}

/// Holds one place among the `/status/stream` streams until dropped.
pub struct StatusStreamPermit(Arc<AtomicUsize>);

impl Drop for StatusStreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn rejected(kind: &'static str, scope: &'static str) {
    metrics::counter!("sightline_limit_rejections_total", "kind" => kind, "scope" => scope)
        .increment(1);
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    User(Uuid),
    Address(IpAddr),
}

/// Counts of things held open (event streams, or waiting long polls) per
/// user and per address, each with a cap.
pub struct HeldCaps {
    kind: &'static str,
    per_user: usize,
    per_address: usize,
    held: Arc<Mutex<HashMap<Holder, usize>>>,
}

impl HeldCaps {
    fn new(kind: &'static str, per_user: usize, per_address: usize) -> Self {
        Self {
            kind,
            per_user,
            per_address,
            held: Arc::default(),
        }
    }

    /// One more for `user` from `address`, or 429 `too_many_streams` /
    /// `too_many_polls` naming which cap was met. Released when the permit
    /// is dropped (the stream ends, the poll answers).
    pub fn acquire(&self, user: Uuid, address: Option<IpAddr>) -> Result<HeldPermit, AppError> {
        let mut held = self.held.lock().expect("caps lock poisoned");
        let by_user = held.get(&Holder::User(user)).copied().unwrap_or(0);
        let by_address = address.map_or(0, |a| held.get(&Holder::Address(a)).copied().unwrap_or(0));
        let (code, what) = match self.kind {
            "stream" => ("too_many_streams", "event streams"),
            _ => ("too_many_polls", "waiting polls"),
        };
        let scope = if by_user >= self.per_user {
            Some((
                "user",
                format!(
                    "too many open {what} for this user (at most {}); close one or try again later",
                    self.per_user
                ),
            ))
        } else if address.is_some() && by_address >= self.per_address {
            Some((
                "address",
                format!(
                    "too many open {what} from this address (at most {}); try again later",
                    self.per_address
                ),
            ))
        } else {
            None
        };
        if let Some((scope, message)) = scope {
            drop(held);
            rejected(self.kind, scope);
            return Err(AppError::TooMany {
                code,
                message,
                retry_after: 5,
            });
        }
        *held.entry(Holder::User(user)).or_default() += 1;
        if let Some(a) = address {
            *held.entry(Holder::Address(a)).or_default() += 1;
        }
        Ok(HeldPermit {
            held: self.held.clone(),
            user,
            address,
        })
    }
}

/// One stream or poll held; gives its place back when dropped.
pub struct HeldPermit {
    held: Arc<Mutex<HashMap<Holder, usize>>>,
    user: Uuid,
    address: Option<IpAddr>,
}

impl Drop for HeldPermit {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let holders =
            std::iter::once(Holder::User(self.user)).chain(self.address.map(Holder::Address));
        for holder in holders {
            if let Some(n) = held.get_mut(&holder) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&holder);
                }
            }
        }
    }
}

/// Whether a request says it carries a body.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Reads the whole request body (at most `BODY_LIMIT`) within
/// `timeout` of the head's arrival, before any handler sees the request. A
/// client that trickles its body is answered 408 and the connection is
/// closed, instead of holding a connection and a task for as long as it
/// likes (hyper bounds only the head's time).
pub async fn body_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return AppError::PayloadTooLarge.into_response();
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            // http-body-util's `LengthLimitError`, boxed inside axum's error.
            if e.to_string().contains("length limit") {
                AppError::PayloadTooLarge.into_response()
            } else {
                // The client went away or sent a broken chunked body.
                AppError::bad_request("bad_body", "the request body could not be read")
                    .into_response()
            }
        }
        Err(_elapsed) => {
            rejected("body", "connection");
            let mut response = (
                StatusCode::REQUEST_TIMEOUT,
                axum::Json(json!({
                    "error": format!(
                        "the request body did not arrive within {} s",
                        timeout.as_secs()
                    ),
                    "code": "body_timeout",
                })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

use sightline_core::metric_catalogue::{Listed, Metric};

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::counter("sightline_limit_rejections_total", "Requests refused by a limit, by kind (stream, poll, status_stream, write, read, body, ops_token) and scope (user, address, instance, ...).").listed(Listed::OnFirstUse),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_limit_leaves_room_under_the_file_limit() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let mut settings = Cli::parse_from(["sightline"]).settings;
        settings.max_connections = None;
        let files = sightline_core::config::open_file_limit();
        // Both pools, Elasticsearch, the listener, logs and files.
        let reserve = (settings.database_max_connections + settings.pipeline_pool_size().unwrap())
            as usize
            + 128;
        assert_eq!(
            settings.connection_limit(),
            files.saturating_sub(reserve).max(16)
        );
        assert!(settings.connection_limit() < files.max(17));
        settings.max_connections = Some(8);
        assert_eq!(settings.connection_limit(), 8);
    }

    #[test]
    fn held_caps_count_per_user_and_per_address_and_give_places_back() {
        let caps = HeldCaps::new("stream", 2, 3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let (u1, u2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let p1 = caps.acquire(u1, a).unwrap();
        let _p2 = caps.acquire(u1, a).unwrap();
        assert!(caps.acquire(u1, a).is_err(), "third stream of one user");
        let _p3 = caps.acquire(u2, a).unwrap();
        assert!(caps.acquire(u2, a).is_err(), "fourth stream of one address");
        drop(p1);
        assert!(caps.acquire(u2, a).is_ok());
    }
}
