//! Users and sessions: sign-up, login, logout (of one session or all).
//!
//! Login and sign-up are guarded by `throttle` (counted before the password
//! is checked) and by `password::Hashing` (a small bound on hashes at once).

pub mod password;
pub mod session;
pub mod throttle;

use anyhow::Context;
use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use session::{CurrentUser, PageUser};

use self::throttle::Refused;
use crate::web::error::{AppError, AppResult};
use crate::web::extract::client_addr::{ClientAddr, limit_key};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(sign_up))
        .route("/api/sessions", post(log_in).delete(log_out))
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3 to 32 of `A-Z a-z 0-9 _ -`.
    #[schema(pattern = "^[A-Za-z0-9_-]{3,32}$", example = "ada")]
    pub username: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
}

/// The answer to a sign-up.
#[derive(Serialize, ToSchema)]
pub struct SignedUp {
    pub id: Uuid,
    pub username: String,
}

/// The answer to a login: the bearer token (also set as the session cookie).
#[derive(Serialize, ToSchema)]
pub struct SessionOpened {
    /// Send as `Authorization: Bearer <token>` (or rely on the cookie).
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Whether `name` follows the username rules (and so may become a key of
/// the throttle's tables: at most 32 bytes).
fn valid_username(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn throttled(refused: Refused) -> AppError {
    refused.limit.count();
    AppError::Throttled {
        retry_after: refused.retry_after,
    }
}

impl Credentials {
    fn validate(&self) -> AppResult<()> {
        if !valid_username(&self.username) {
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

/// Creates a user; 409 when the name is taken. Counted per client address.
#[tracing::instrument(skip_all, fields(username = %credentials.username))]
pub async fn register(
    state: &AppState,
    credentials: Credentials,
    client: IpAddr,
) -> AppResult<Uuid> {
    credentials.validate()?;
    let permit = state.hashing.try_permit().ok_or(AppError::Busy)?;
    state
        .login_throttle
        .begin_signup(limit_key(client))
        .map_err(throttled)?;
    let hash = password::hash(permit, credentials.password).await?;
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

/// Checks credentials and opens a session. The attempt is counted before the
/// password is checked (and given back if it is right or was never checked).
#[tracing::instrument(skip_all, fields(username = %credentials.username))]
pub async fn authenticate(
    state: &AppState,
    credentials: Credentials,
    client: IpAddr,
) -> AppResult<session::NewSession> {
    // A name that breaks the rules has no account, and must not become a
    // key of the throttle: refused without a hash.
    if !valid_username(&credentials.username) {
        return Err(AppError::BadCredentials);
    }
    let attempt = state
        .login_throttle
        .begin_login(&credentials.username, limit_key(client))
        .map_err(throttled)?;
    let Some(permit) = state.hashing.try_permit() else {
        state.login_throttle.not_checked(attempt);
        return Err(AppError::Busy);
    };
    let checked = async {
        let row: Option<(Uuid, String)> =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE username = $1")
                .bind(&credentials.username)
                .fetch_optional(&state.db)
                .await?;
        let (user_id, stored) = row.map_or((None, None), |(id, h)| (Some(id), Some(h)));
        let matches = password::verify(permit, credentials.password, stored).await?;
        AppResult::Ok(user_id.filter(|_| matches))
    };
    let user_id = match checked.await {
        Ok(Some(user_id)) => {
            state.login_throttle.succeeded(attempt);
            user_id
        }
        Ok(None) => {
            state.login_throttle.failed(attempt);
            return Err(AppError::BadCredentials);
        }
        Err(e) => {
            state.login_throttle.not_checked(attempt);
            return Err(e);
        }
    };
    Ok(session::create(&state.db, user_id, &state.settings)
        .await
        .context("Failed to open a session")?)
}

pub fn cookie_header(state: &AppState, token: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        session::session_cookie(
            token,
            state.settings.session_ttl_hours * 3600,
            &state.settings,
        ),
    )
}

/// Creates a user. Counted per client address (see Limits in the README).
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users and sessions",
    operation_id = "signUp",
    request_body = Credentials,
    responses(
        (status = 201, description = "The user exists; log in next.", body = SignedUp),
        (status = 409, description = "`username_taken`.", body = crate::web::openapi::ErrorBody),
    ),
    security(()),
)]
pub(crate) async fn sign_up(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<impl IntoResponse> {
    let username = credentials.username.clone();
    let id = register(&state, credentials, client).await?;
    Ok((StatusCode::CREATED, Json(SignedUp { id, username })))
}

/// Opens a session: a bearer token, also set as the `HttpOnly` session cookie.
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "users and sessions",
    operation_id = "logIn",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in.", body = SessionOpened, headers(
            ("Set-Cookie" = String, description = "`sightline_session=<token>; HttpOnly; SameSite=Lax; Path=/; Max-Age=…` (`__Host-sightline_session` with `Secure` when `COOKIE_SECURE=true`)"),
        )),
        (status = 401, description = "`bad_credentials`: wrong username or password.", body = crate::web::openapi::ErrorBody),
    ),
    security(()),
)]
pub(crate) async fn log_in(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<impl IntoResponse> {
    let session = authenticate(&state, credentials, client).await?;
    Ok((
        [cookie_header(&state, &session.token)],
        Json(SessionOpened {
            token: session.token,
            expires_at: session.expires_at,
        }),
    ))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogOutParams {
    /// `true`: end every session of this user ("sign out everywhere").
    all: bool,
}

/// Ends this session (or, with `all=true`, every session of the user) and
/// expires the cookie.
#[utoipa::path(
    delete,
    path = "/api/sessions",
    tag = "users and sessions",
    operation_id = "logOut",
    params(LogOutParams),
    responses(
        (status = 204, description = "Signed out.", headers(
            ("Set-Cookie" = String, description = "The session cookie, expired (`Max-Age=0`)."),
        )),
    ),
)]
pub(crate) async fn log_out(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<LogOutParams>,
    headers: HeaderMap,
) -> AppResult<impl IntoResponse> {
    // The extractor has proven the token valid (and the request same-origin).
    if params.all {
        session::delete_all(&state.db, user.id).await?;
    } else if let Some((token, _)) = session::presented_token(&headers, &state.settings) {
        session::delete(&state.db, &token).await?;
    }
    let expired = session::session_cookie("", 0, &state.settings);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]))
}
