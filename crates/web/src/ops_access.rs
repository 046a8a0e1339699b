//! Who may see the operations endpoints (`/metrics`, `/status`,
//! `/status/stream`; `/healthz` and `/readyz` are always open for load
//! balancers), as `Settings::ops_access` decides at start:
//!
//! - `OPS_TOKEN` set: whoever presents it, as `Authorization: Bearer` (a
//!   scraper) or as the cookie the sign-in form on `/status` sets (a
//!   person's browser; the page's EventSource sends it same-origin). Never
//!   in the URL: a `?token=` is refused, as it would sit in browser
//!   history and proxy logs.
//! - no token: open on a loopback listen address or with `OPS_OPEN=true`;
//!   closed (401 `ops_closed`, saying how to open them) otherwise.
//!
//! The cookie holds a digest of the token, not the token: the browser's
//! cookie store never has it, and every instance with the same token
//! accepts the same cookie.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::Request;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::limits::rejected;
use sightline_core::config::{OpsAccess, Settings};

/// How long the sign-in cookie lasts: a working day.
const COOKIE_MAX_AGE_SECS: u64 = 12 * 60 * 60;

/// The guard's view of the settings, built once.
pub struct OpsGuard {
    access: OpsAccess,
    token: Option<String>,
    /// What the sign-in cookie holds: a digest of the token.
    cookie_value: Option<String>,
    cookie_name: &'static str,
    secure: bool,
}

impl OpsGuard {
    pub fn new(settings: &Settings) -> Arc<Self> {
        let secure = settings.cookie_is_secure();
        Arc::new(Self {
            access: settings.ops_access(),
            token: settings.ops_token.clone(),
            cookie_value: settings.ops_token.as_deref().map(cookie_value),
            // `__Host-`: only over HTTPS (or localhost), only this host, path `/`.
            cookie_name: if secure {
                "__Host-sightline_ops"
            } else {
                "sightline_ops"
            },
            secure,
        })
    }

    fn presents_token(&self, headers: &HeaderMap) -> bool {
        let (Some(token), Some(expected_cookie)) = (&self.token, &self.cookie_value) else {
            return false;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, given)| given.trim());
        if bearer.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            return true;
        }
        cookies(headers, self.cookie_name)
            .any(|given| same(given.as_bytes(), expected_cookie.as_bytes()))
    }

    fn set_cookie(&self) -> HeaderValue {
        let value = self.cookie_value.as_deref().unwrap_or_default();
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{secure}",
            self.cookie_name
        ))
        .expect("a digest and fixed attributes make a header value")
    }
}

/// The sign-in cookie's value for `token`: base64url of a SHA-256 of it
/// under a label of its own (so it is no other digest of the token).
fn cookie_value(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"sightline ops cookie\0")
        .chain_update(token.as_bytes())
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The values of every cookie named `name` in the request.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then_some(value)
        })
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether the request carries a `token` query parameter.
fn token_in_url(request: &Request) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "token"))
}

fn unauthorized(code: &'static str, error: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": error, "code": code })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sightline-ops\""),
    );
    response
}

const CLOSED: &str = "the operations endpoints are closed: this server listens beyond loopback \
    and has no OPS_TOKEN; set OPS_TOKEN and send it as `Authorization: Bearer <token>` (or sign \
    in on /status), or set OPS_OPEN=true on a trusted network";

fn closed() -> Response {
    rejected("ops_token", "request");
    unauthorized("ops_closed", CLOSED)
}

/// The guard in front of `/metrics`, `/status` and `/status/stream`.
pub async fn guard(ops: Arc<OpsGuard>, request: Request, next: Next) -> Response {
    match ops.access {
        OpsAccess::OpenOnLoopback | OpsAccess::OpenByChoice => return next.run(request).await,
        OpsAccess::Closed => return closed(),
        OpsAccess::Token => {}
    }
    if token_in_url(&request) {
        rejected("ops_token", "request");
        return unauthorized(
            "ops_token_in_url",
            "the operator's token is not accepted in the URL (it would stay in browser history \
             and proxy logs): send it as `Authorization: Bearer <token>`, or sign in on /status",
        );
    }
    if ops.presents_token(request.headers()) {
        return next.run(request).await;
    }
    rejected("ops_token", "request");
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if request.uri().path() == "/status" && wants_html {
        return sign_in_page(StatusCode::UNAUTHORIZED, None);
    }
    unauthorized(
        "ops_token_required",
        "this operations page needs the operator's token (OPS_TOKEN), as \
         `Authorization: Bearer <token>` or by signing in on /status",
    )
}

#[derive(Template)]
#[template(path = "status_login.html")]
struct SignInPage {
    error: Option<&'static str>,
}

fn sign_in_page(status: StatusCode, error: Option<&'static str>) -> Response {
    match (SignInPage { error }).render() {
        Ok(body) => (
            status,
            [
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                     base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "same-origin"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Html(body),
        )
            .into_response(),
        Err(e) => AppError::Internal(
            anyhow::Error::new(e).context("Failed to render the operator sign-in"),
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /status/login`: the sign-in form. A right token (compared in
/// constant time) gets the cookie and a 303 to `/status`; a cross-site post
/// is refused as the app's own sign-in forms refuse it, so another site
/// cannot sign a browser in with a token of its choosing.
pub async fn sign_in(
    ops: Arc<OpsGuard>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    match ops.access {
        OpsAccess::OpenOnLoopback | OpsAccess::OpenByChoice => {
            return Redirect::to("/status").into_response();
        }
        OpsAccess::Closed => return closed(),
        OpsAccess::Token => {}
    }
    if let Err(refused) = crate::pages::refuse_cross_site(&headers) {
        return refused.into_response();
    }
    let Ok(Form(form)) = form else {
        return AppError::bad_request("bad_form", "the form needs a `token` field").into_response();
    };
    let right = ops
        .token
        .as_deref()
        .is_some_and(|token| same(form.token.trim().as_bytes(), token.as_bytes()));
    if !right {
        rejected("ops_token", "request");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the operator's token."),
        );
    }
    let mut response = Redirect::to("/status").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, ops.set_cookie());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_cookies_are_found_by_name() {
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sightline_ops=xyz; b=2"),
        );
        assert_eq!(
            cookies(&headers, "sightline_ops").collect::<Vec<_>>(),
            ["xyz"]
        );
        assert_ne!(cookie_value("0123456789abcdef"), "0123456789abcdef");
    }
}
