//! Server-rendered pages: [`auth`] (sign-up, login, logout), [`account`]
//! (changing the password), [`orders`] (the orders page and its forms) and
//! [`assets`] (the embedded static files). This file holds the router and
//! how every page answers.
//!
//! Every page works without JavaScript: the forms post here and the server
//! answers with a redirect (303) or the same page re-rendered with the error.
//! `static/app.js` only enhances `/orders` (rows from the page's own row
//! template, live updates over SSE with long polling as the fallback, search
//! as you type, cancel with undo); see docs/FRONTEND.md, *The orders page*.

mod account;
mod assets;
mod auth;
mod orders;

use askama::Template;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::error::AppError;
use crate::state::AppState;

use account::{account_page, change_password_form};
use assets::{APP_JS, FAVICON, SIGHTLINE_JS};
pub use assets::{STYLESHEET, StaticAsset};
use auth::{login, login_form, logout, signup, signup_form};
use orders::{cancel_order_form, orders_page, place_order_form};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/orders") }))
        .route("/signup", get(signup_form).post(signup))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/account", get(account_page))
        .route("/account/password", post(change_password_form))
        .route("/orders", get(orders_page).post(place_order_form))
        .route("/orders/{id}/cancel", post(cancel_order_form))
        .route(
            "/static/app.js",
            get(|h: HeaderMap| async move { APP_JS.respond(&h) }),
        )
        .route(
            "/static/sightline.js",
            get(|h: HeaderMap| async move { SIGHTLINE_JS.respond(&h) }),
        )
        // Browsers ask for /favicon.ico whatever the page links.
        .route(
            "/favicon.ico",
            get(|h: HeaderMap| async move { FAVICON.respond(&h) }),
        )
        .route(
            "/static/favicon.svg",
            get(|h: HeaderMap| async move { FAVICON.respond(&h) }),
        )
        .route(
            "/static/sightline.css",
            get(|h: HeaderMap| async move { STYLESHEET.respond(&h) }),
        )
}

// ---------------------------------------------------------------------------
// Responses

/// Headers every HTML page carries: no third-party anything, no framing, and
/// no caching of pages that show a user's data.
fn html_page(status: StatusCode, body: String) -> Response {
    (
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
        .into_response()
}

fn render(template: &impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(body) => html_page(status, body),
        Err(e) => AppError::Internal(anyhow::Error::new(e).context("Failed to render a page"))
            .into_response(),
    }
}

/// The status an error answers with and the message a person may read.
/// Internal details never reach the page (the JSON error logs them).
pub(super) fn describe(err: impl Into<AppError>) -> (StatusCode, String) {
    let (status, message) = err.into().public();
    let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        "something went wrong on our side, please try again".to_owned()
    } else {
        message
    };
    (status, sentence(&message))
}

/// "wrong password" → "Wrong password": messages read as sentences on a page.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Login and sign-up have no session to protect yet, but a cross-site form
/// must not log a browser into someone else's account either (the
/// operator's sign-in on `/status` refuses such posts the same way).
pub(crate) fn refuse_cross_site(headers: &HeaderMap) -> Result<(), AppError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross_site =
        matches!(header("sec-fetch-site"), Some(site) if site != "same-origin" && site != "none");
    let foreign_origin = header("origin").is_some_and(|origin| {
        let host = header("host").unwrap_or_default();
        origin == "null" || origin.split_once("://").map(|(_, h)| h) != Some(host)
    });
    if cross_site || foreign_origin {
        return Err(AppError::Forbidden("cross-site request refused"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(
            sentence("wrong username or password"),
            "Wrong username or password"
        );
        assert_eq!(sentence(""), "");
    }
}
