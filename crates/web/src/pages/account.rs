//! The account page: changing the password with a plain form. The session
//! cookie authenticates it, and `PageUser` refuses a cross-site post before
//! anything is read (as on every page form).

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::extract::client_addr::{ClientAddr, limit_key};
use crate::extract::session::PageUser;
use crate::state::AppState;
use sightline_core::auth::PasswordChange;

use super::*;

#[derive(Template)]
#[template(path = "account.html")]
pub(super) struct AccountPage {
    username: String,
    /// The password was just changed (the redirect after the form).
    changed: bool,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AccountQuery {
    changed: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PasswordForm {
    current_password: String,
    new_password: String,
}

pub(super) async fn account_page(
    PageUser(user): PageUser,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Response {
    let changed = query.is_ok_and(|Query(q)| q.changed);
    let page = AccountPage {
        username: user.username,
        changed,
        error: None,
    };
    render(&page, StatusCode::OK)
}

/// Changes the password; on success back to the page (303), so a reload
/// does not post it again. This browser's session stays, every other ends.
pub(super) async fn change_password_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ClientAddr(client): ClientAddr,
    Form(form): Form<PasswordForm>,
) -> Response {
    let change = PasswordChange {
        current_password: form.current_password,
        new_password: form.new_password,
    };
    match state
        .accounts()
        .change_password(&user, change, limit_key(client))
        .await
    {
        Ok(()) => Redirect::to("/account?changed=true").into_response(),
        Err(e) => {
            let (status, message) = describe(e);
            let page = AccountPage {
                username: user.username,
                changed: false,
                error: Some(message),
            };
            render(&page, status)
        }
    }
}
