//! `/api/users` and `/api/sessions`: sign-up, login, logout and changing
//! the password over JSON, through `auth::Accounts`; the session cookie is
//! set and expired here.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::AppResult;
use crate::extract::client_addr::{ClientAddr, limit_key};
use crate::extract::session::{presented_token, session_cookie};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use sightline_core::auth::{Credentials, CurrentUser, PasswordChange, session};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(sign_up))
        .route("/api/sessions", post(log_in).delete(log_out))
        .route(PASSWORD_PATH, post(change_password))
}

/// Where the signed-in user changes their password.
pub const PASSWORD_PATH: &str = "/api/users/me/password";

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

/// The `Set-Cookie` header that stores a new session in the browser.
pub fn cookie_header(state: &AppState, token: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        session_cookie(
            token,
            state.settings.session_ttl_hours * 3600,
            &state.settings,
        ),
    )
}

/// Creates a user. Counted per client address (see docs/SECURITY.md,
/// *Logins, sign-ups and password hashing*).
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users and sessions",
    operation_id = "signUp",
    request_body = Credentials,
    responses(
        (status = 201, description = "The user exists; log in next.", body = SignedUp),
        (status = 409, description = "`username_taken`: the name is taken, in any case (`Ada` when `ada` exists).", body = crate::schemas::ErrorBody),
        (status = 422, description = "`invalid_shape`: JSON of the wrong shape; `invalid` with `field` (and `errors`): a rule broken; `common_password` (`field`: `password`): the password is on the list of common ones.", body = crate::schemas::ErrorBody),
    ),
    security(()),
)]
pub(crate) async fn sign_up(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<impl IntoResponse> {
    let username = credentials.username.clone();
    let id = state
        .accounts()
        .register(credentials, limit_key(client))
        .await?;
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
            ("Set-Cookie" = String, description = "`__Host-sightline_session=<token>; HttpOnly; SameSite=Lax; Path=/; Max-Age=…; Secure` (`sightline_session` without `Secure` when `COOKIE_SECURE=false`)"),
        )),
        (status = 401, description = "`bad_credentials`: wrong username or password. The username is found in any case.", body = crate::schemas::ErrorBody),
    ),
    security(()),
)]
pub(crate) async fn log_in(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<impl IntoResponse> {
    let session = state
        .accounts()
        .authenticate(credentials, limit_key(client))
        .await?;
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
    } else if let Some((token, _)) = presented_token(&headers, &state.settings) {
        session::delete(&state.db, &token).await?;
    }
    let expired = session_cookie("", 0, &state.settings);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]))
}

/// Changes the signed-in user's password and ends every other session of
/// theirs; the session this request came with stays. The current password
/// is checked and counted as a login's (same limits, same `429`).
#[utoipa::path(
    post,
    path = "/api/users/me/password",
    tag = "users and sessions",
    operation_id = "changePassword",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every other session of the user has ended."),
        (status = 422, description = "`wrong_password` (`field`: `current_password`): the current password is wrong (counted as a failed login); `invalid` or `common_password` (`field`: `new_password`): the new one breaks a rule; `invalid_shape`: JSON of the wrong shape. Nothing changed.", body = crate::schemas::ErrorBody),
    ),
)]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    user: CurrentUser,
    ClientAddr(client): ClientAddr,
    ApiJson(change): ApiJson<PasswordChange>,
) -> AppResult<StatusCode> {
    // The extractor has proven the session valid (and the request same-origin).
    state
        .accounts()
        .change_password(&user, change, limit_key(client))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
