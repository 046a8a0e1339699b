//! Sessions: an opaque random token, stored only as a SHA-256 hash, presented
//! either as the HttpOnly cookie (browsers) or as `Authorization: Bearer`
//! (API and SSE clients).

use anyhow::Context;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::{SameSite, Settings};
use crate::error::AppError;
use crate::state::AppState;

pub const COOKIE_NAME: &str = "sightline_session";

/// The authenticated user of a request.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub id: Uuid,
    pub username: String,
    /// How the request authenticated; only cookie requests can be forged
    /// cross-site, so only they get the CSRF check.
    pub via_cookie: bool,
    /// The session's key (the token's hash), to keep per-session state.
    pub session_key: Vec<u8>,
    /// The latest consistency token the no-JS pages stored in this session.
    pub session_consistency_token: Option<String>,
}

pub struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[tracing::instrument(skip(db))]
pub async fn create(db: &PgPool, user_id: Uuid, ttl: Duration) -> anyhow::Result<NewSession> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = Utc::now() + ttl;
    sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(expires_at)
        .execute(db)
        .await
        .context("Failed to store the session")?;
    Ok(NewSession { token, expires_at })
}

/// Keeps `consistency_token` in the session (the no-JS read-your-writes flow).
pub async fn remember_consistency_token(
    db: &PgPool,
    user: &CurrentUser,
    consistency_token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET consistency_token = $2 WHERE token_hash = $1")
        .bind(&user.session_key)
        .bind(consistency_token)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete(db: &PgPool, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash(token))
        .execute(db)
        .await?;
    Ok(())
}

async fn lookup(
    db: &PgPool,
    token: &str,
) -> Result<Option<(Uuid, String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.username, s.consistency_token FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(token_hash(token))
    .fetch_optional(db)
    .await
}

/// The token a request presents: the bearer header wins over the cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?.trim();
        return (!token.is_empty()).then(|| (token.to_owned(), false));
    }
    let jar = CookieJar::from_headers(headers);
    jar.get(COOKIE_NAME)
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
        let (token, via_cookie) = presented_token(&parts.headers).ok_or(AppError::Unauthorized)?;
        let (id, username, session_consistency_token) = lookup(&state.db, &token)
            .await?
            .ok_or(AppError::Unauthorized)?;
        if via_cookie {
            check_same_origin(parts, &state.settings)?;
        }
        Ok(CurrentUser {
            id,
            username,
            via_cookie,
            session_key: token_hash(&token),
            session_consistency_token,
        })
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
/// `SameSite=None` is always `Secure`: browsers drop it otherwise.
pub fn session_cookie(token: &str, max_age_secs: i64, secure: bool, same_site: SameSite) -> String {
    let secure = if secure || same_site == SameSite::None {
        "; Secure"
    } else {
        ""
    };
    let same_site = same_site.as_str();
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite={same_site}; Path=/; Max-Age={max_age_secs}{secure}"
    )
}
