//! The session as HTTP carries it: the token presented as the HttpOnly
//! cookie (browsers) or as `Authorization: Bearer` (API and SSE clients),
//! the cookie itself, and the extractors that find the request's user
//! ([`CurrentUser`] for the API, [`PageUser`] for pages), with the CSRF
//! check on cookie requests.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;

use crate::error::AppError;
use crate::state::AppState;
use sightline_core::auth::session::{self, CurrentUser};
use sightline_core::config::Settings;

pub const COOKIE_NAME: &str = "sightline_session";
/// The name over HTTPS: browsers accept a `__Host-` cookie only when it is
/// `Secure`, `Path=/` and has no `Domain`, so no sibling subdomain and no
/// plain-HTTP page can plant or shadow it.
pub const SECURE_COOKIE_NAME: &str = "__Host-sightline_session";

/// The session cookie's name under these settings.
pub fn cookie_name(settings: &Settings) -> &'static str {
    if settings.cookie_is_secure() {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

/// The token a request presents: the bearer header wins over the cookie
/// (read under the name these settings give it).
pub fn presented_token(headers: &HeaderMap, settings: &Settings) -> Option<(String, bool)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?.trim();
        return (!token.is_empty()).then(|| (token.to_owned(), false));
    }
    let jar = CookieJar::from_headers(headers);
    jar.get(cookie_name(settings))
        .map(|c| (c.value().to_owned(), true))
        .filter(|(t, _)| !t.is_empty())
}

/// Refuses a state-changing, cookie-authenticated request that the browser
/// marks as cross-site. SameSite=Lax already keeps the cookie off most such
/// requests; this closes the rest (same-site subdomains, old browsers).
/// A frontend on the CORS allowlist (`CORS_ALLOWED_ORIGINS`) is not foreign:
/// its `Origin` lets the request through whatever `Sec-Fetch-Site` says.
fn check_same_origin(parts: &Parts, settings: &Settings) -> Result<(), AppError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header(header::ORIGIN.as_str()).is_some_and(|origin| settings.cors_allows(origin)) {
        return Ok(());
    }
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(AppError::Forbidden("cross-site request refused"));
    }
    if let Some(origin) = header(header::ORIGIN.as_str()) {
        let host = header(header::HOST.as_str()).unwrap_or_default();
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if origin == "null" || origin_host != host {
            return Err(AppError::Forbidden("cross-site request refused"));
        }
    }
    Ok(())
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let (token, via_cookie) =
            presented_token(&parts.headers, &state.settings).ok_or(AppError::Unauthorized)?;
        let user = session::lookup(
            &state.db,
            &token,
            state.settings.session_idle_minutes,
            via_cookie,
        )
        .await?
        .ok_or(AppError::Unauthorized)?;
        if via_cookie {
            check_same_origin(parts, &state.settings)?;
        }
        Ok(user)
    }
}

/// A signed-in user for HTML pages: anonymous visitors are sent to `/login`.
pub struct PageUser(pub CurrentUser);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match CurrentUser::from_request_parts(parts, state).await {
            Ok(user) => Ok(PageUser(user)),
            Err(AppError::Unauthorized) => Err(Redirect::to("/login").into_response()),
            Err(other) => Err(other.into_response()),
        }
    }
}

/// The `Set-Cookie` value that stores a session in the browser.
/// `SameSite=None` is always `Secure` (browsers drop it otherwise), and a
/// `Secure` cookie is named `__Host-…`.
pub fn session_cookie(token: &str, max_age_secs: i64, settings: &Settings) -> String {
    let name = cookie_name(settings);
    let secure = if settings.cookie_is_secure() {
        "; Secure"
    } else {
        ""
    };
    let same_site = settings.cookie_samesite.as_str();
    format!(
        "{name}={token}; HttpOnly; SameSite={same_site}; Path=/; Max-Age={max_age_secs}{secure}"
    )
}
