//! Who may see the operations endpoints (`/metrics`, `/status`,
//! `/status/stream`): closed on a server that listens beyond loopback until
//! `OPS_TOKEN` or `OPS_OPEN=true` opens them; the token as a bearer header
//! or the cookie of the sign-in form on `/status`, never in the URL; a
//! token that guards nothing (empty, blank, short) refused at start.

use reqwest::StatusCode;
use reqwest::header;

use crate::helpers::{TestApp, assert_error, spawn_app_with, test_settings};

const TOKEN: &str = "ops-token-0123456789abcdef";
const GUARDED: [&str; 3] = ["/metrics", "/status", "/status/stream"];

/// An app listening on every address (as the Dockerfile's does), asked
/// over 127.0.0.1: the guard keys on the configured bind, not the peer.
async fn on_every_address(ops_token: Option<&str>, ops_open: bool) -> TestApp {
    let mut settings = test_settings().await;
    settings.bind_addr = "0.0.0.0:0".parse().unwrap();
    settings.ops_token = ops_token.map(str::to_owned);
    settings.ops_open = ops_open;
    spawn_app_with(settings).await
}

async fn assert_probes_open(app: &TestApp) {
    for path in ["/healthz", "/readyz"] {
        let open = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(open.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn operations_are_closed_on_a_public_bind_without_a_token() {
    let app = on_every_address(None, false).await;
    for path in GUARDED {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        let body = assert_error(response, StatusCode::UNAUTHORIZED, "ops_closed").await;
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("OPS_TOKEN") && error.contains("OPS_OPEN=true"),
            "{path}: {error}"
        );
    }
    assert_probes_open(&app).await;
}

#[tokio::test]
async fn ops_open_opens_them_on_a_public_bind() {
    let app = on_every_address(None, true).await;
    for path in GUARDED {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    assert_probes_open(&app).await;
}

#[tokio::test]
async fn the_token_is_taken_from_the_header_and_never_from_the_url() {
    let app = on_every_address(Some(TOKEN), false).await;
    for path in GUARDED {
        let bearer = app
            .http
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(bearer.status(), StatusCode::OK, "{path} with the header");
        let anonymous = app.http.get(app.url(path)).send().await.unwrap();
        assert_error(anonymous, StatusCode::UNAUTHORIZED, "ops_token_required").await;

        let in_url = app
            .http
            .get(app.url(&format!("{path}?token={TOKEN}")))
            .send()
            .await
            .unwrap();
        let body = assert_error(in_url, StatusCode::UNAUTHORIZED, "ops_token_in_url").await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{body}"
        );
        // Not even beside a good header: the URL has leaked it already.
        let both = app
            .http
            .get(app.url(&format!("{path}?token={TOKEN}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(both.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_probes_open(&app).await;
}

#[tokio::test]
async fn the_status_page_signs_in_with_a_same_site_cookie() {
    let app = on_every_address(Some(TOKEN), false).await;
    let origin = app.address.clone();

    // A browser without the cookie is shown the sign-in form.
    let form = app
        .http
        .get(app.url("/status"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    let html = form.text().await.unwrap();
    assert!(
        html.contains(r#"action="/status/login""#) && html.contains(r#"name="token""#),
        "{html}"
    );

    let sign_in = |token: &'static str, origin: String| {
        app.http
            .post(app.url("/status/login"))
            .header(header::ORIGIN, origin)
            .form(&[("token", token)])
            .send()
    };
    let wrong = sign_in("not-the-operator-token-x", origin.clone())
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let cross_site = sign_in(TOKEN, "https://evil.example".to_owned())
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert!(cross_site.headers().get(header::SET_COOKIE).is_none());

    let signed_in = sign_in(TOKEN, origin.clone()).await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()[header::LOCATION], "/status");
    let set_cookie = signed_in.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(TOKEN),
        "the cookie carries the token itself: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    for path in GUARDED {
        let with_cookie = app
            .http
            .get(app.url(path))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            with_cookie.status(),
            StatusCode::OK,
            "{path} with the cookie"
        );
        if path == "/status" {
            let page = with_cookie.text().await.unwrap();
            assert!(
                page.contains(r#"new EventSource("/status/stream")"#),
                "the page's stream rides on the cookie"
            );
            assert!(!page.contains("location.search"), "{page}");
        }
    }
    let forged = app
        .http
        .get(app.url("/status"))
        .header(header::COOKIE, format!("{}x", cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_empty_blank_or_short_ops_token_is_refused_at_start() {
    for bad in ["", "   ", "too-short-token"] {
        let mut settings = test_settings().await;
        settings.ops_token = Some(bad.to_owned());
        let built = sightline::startup::Application::build(settings.clone())
            .await
            .map(drop);
        crate::helpers::remove_test_data(&settings);
        let refused = match built {
            Ok(()) => panic!("OPS_TOKEN={bad:?} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(refused.contains("OPS_TOKEN"), "{refused}");
    }
}
