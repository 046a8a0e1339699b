//! Sign-up, login and logout: the forms and what they answer.

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::auth::{Credentials, session};
use crate::web::api::sessions::cookie_header;
use crate::web::error::AppError;
use crate::web::extract::client_addr::{ClientAddr, limit_key};
use crate::web::extract::session::{PageUser, presented_token, session_cookie};
use crate::web::state::AppState;

use super::*;

#[derive(Template)]
#[template(path = "auth.html")]
pub(super) struct AuthPage {
    /// "signup" or "login".
    mode: &'static str,
    title: &'static str,
    username: String,
    error: Option<String>,
}

impl AuthPage {
    fn signup(username: String, error: Option<String>) -> Self {
        AuthPage {
            mode: "signup",
            title: "Create an account",
            username,
            error,
        }
    }

    fn login(username: String, error: Option<String>) -> Self {
        AuthPage {
            mode: "login",
            title: "Sign in",
            username,
            error,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CredentialsForm {
    username: String,
    password: String,
}

pub(super) async fn signup_form() -> Response {
    render(&AuthPage::signup(String::new(), None), StatusCode::OK)
}

pub(super) async fn login_form() -> Response {
    render(&AuthPage::login(String::new(), None), StatusCode::OK)
}

pub(super) async fn signup(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<CredentialsForm>,
) -> Response {
    if let Err(refused) = refuse_cross_site(&headers) {
        return refused.into_response();
    }
    let username = form.username.trim().to_owned();
    let credentials = || Credentials {
        username: username.clone(),
        password: form.password.clone(),
    };
    let accounts = state.accounts();
    let client = limit_key(client);
    let result = match accounts.register(credentials(), client).await {
        Ok(_) => accounts.authenticate(credentials(), client).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(session) => signed_in(&state, &session.token),
        Err(e) => {
            let (status, message) = describe(e);
            render(&AuthPage::signup(username, Some(message)), status)
        }
    }
}

pub(super) async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<CredentialsForm>,
) -> Response {
    if let Err(refused) = refuse_cross_site(&headers) {
        return refused.into_response();
    }
    let username = form.username.trim().to_owned();
    let credentials = Credentials {
        username: username.clone(),
        password: form.password,
    };
    match state
        .accounts()
        .authenticate(credentials, limit_key(client))
        .await
    {
        Ok(session) => signed_in(&state, &session.token),
        Err(e) => {
            let (status, message) = describe(e);
            render(&AuthPage::login(username, Some(message)), status)
        }
    }
}

pub(super) fn signed_in(state: &AppState, token: &str) -> Response {
    ([cookie_header(state, token)], Redirect::to("/orders")).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LogoutQuery {
    /// `true` ("sign out everywhere"): end every session of this user.
    all: bool,
}

pub(super) async fn logout(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
    query: Result<Query<LogoutQuery>, QueryRejection>,
) -> Response {
    let all = query.is_ok_and(|Query(q)| q.all);
    let ended = if all {
        session::delete_all(&state.db, user.id, None)
            .await
            .map(|_| ())
    } else {
        match presented_token(&headers, &state.settings) {
            Some((token, _)) => session::delete(&state.db, &token).await,
            None => Ok(()),
        }
    };
    if let Err(e) = ended {
        return AppError::from(e).into_response();
    }
    let expired = session_cookie("", 0, &state.settings);
    ([(header::SET_COOKIE, expired)], Redirect::to("/login")).into_response()
}
