//! Users and sessions: sign-up, login, logout.

pub mod password;
pub mod session;
pub mod throttle;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

pub use session::{CurrentUser, PageUser};

use crate::error::{AppError, AppResult};
use crate::http::ApiJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(sign_up))
        .route("/api/sessions", post(log_in).delete(log_out))
}

#[derive(Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    fn validate(&self) -> AppResult<()> {
        let name = &self.username;
        if !(3..=32).contains(&name.len())
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(AppError::invalid(
                "username",
                "username must be 3 to 32 characters of A-Z, a-z, 0-9, _ and -",
            ));
        }
        if !(8..=128).contains(&self.password.chars().count()) {
            return Err(AppError::invalid(
                "password",
                "password must be 8 to 128 characters",
            ));
        }
        Ok(())
    }
}

/// Creates a user; 409 when the name is taken.
#[tracing::instrument(skip_all, fields(username = %credentials.username))]
pub async fn register(state: &AppState, credentials: Credentials) -> AppResult<Uuid> {
    credentials.validate()?;
    let hash = password::hash(credentials.password).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO users (id, username, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(id)
    .bind(&credentials.username)
    .bind(hash)
    .execute(&state.db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(AppError::conflict(
            "username_taken",
            "that username is taken",
        ));
    }
    Ok(id)
}

/// Checks credentials and opens a session.
#[tracing::instrument(skip_all, fields(username = %credentials.username))]
pub async fn authenticate(
    state: &AppState,
    credentials: Credentials,
) -> AppResult<session::NewSession> {
    state
        .login_throttle
        .check(&credentials.username)
        .map_err(|retry_after| AppError::Throttled { retry_after })?;
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, password_hash FROM users WHERE username = $1")
            .bind(&credentials.username)
            .fetch_optional(&state.db)
            .await?;
    let (user_id, stored) = row.map_or((None, None), |(id, h)| (Some(id), Some(h)));
    let matches = password::verify(credentials.password, stored).await?;
    let username = credentials.username;
    match user_id {
        Some(user_id) if matches => {
            state.login_throttle.record_success(&username);
            Ok(session::create(
                &state.db,
                user_id,
                chrono::Duration::hours(state.settings.session_ttl_hours),
            )
            .await
            .context("Failed to open a session")?)
        }
        _ => {
            state.login_throttle.record_failure(&username);
            Err(AppError::BadCredentials)
        }
    }
}

pub fn cookie_header(state: &AppState, token: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        session::session_cookie(
            token,
            state.settings.session_ttl_hours * 3600,
            state.settings.cookie_secure,
            state.settings.cookie_samesite,
        ),
    )
}

async fn sign_up(
    State(state): State<AppState>,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<impl IntoResponse> {
    let username = credentials.username.clone();
    let id = register(&state, credentials).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "username": username })),
    ))
}

async fn log_in(
    State(state): State<AppState>,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<impl IntoResponse> {
    let session = authenticate(&state, credentials).await?;
    Ok((
        [cookie_header(&state, &session.token)],
        Json(json!({ "token": session.token, "expires_at": session.expires_at })),
    ))
}

async fn log_out(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
) -> AppResult<impl IntoResponse> {
    // The extractor has proven the token valid (and the request same-origin).
    let _ = user;
    if let Some((token, _)) = session::presented_token(&headers) {
        session::delete(&state.db, &token).await?;
    }
    let expired = session::session_cookie(
        "",
        0,
        state.settings.cookie_secure,
        state.settings.cookie_samesite,
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]))
}
