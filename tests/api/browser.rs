//! The pages, driven by a real browser (headless Chromium through chromedriver)
//! and, for the plain HTTP behaviour of the forms, by a cookie-keeping client.
//!
//! No test sleeps for consistency: the browser tests wait for the page itself
//! to say an order is visible (`data-state="visible"`), with generous timeouts.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::http::Method;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};
use sightline::config::RefreshMode;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

/// How long anything in a browser may take to happen.
const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";

/// One browser at a time: the machine is small and Chromium is not.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// The three ways a user sees an order become visible

#[tokio::test]
async fn sse_path() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "sse", async |client| {
        client.goto(&app.url("/signup")).await?;
        screenshot(&client, "signup-form").await?;
        sign_up_through_form(&client, &app).await?;
        wait_for(&client, r#"#connection[data-state="live"]"#).await?;

        fill_order_form(&client, "SSE-WIDGET", 2, 1250, "over the event stream").await?;
        submit_order_form(&client).await?;
        // Inserted by the submit handler before the request leaves: it is
        // there as soon as the click returns.
        let row = client
            .find(Locator::Css("#orders tbody tr[data-order-id]"))
            .await
            .context("no optimistic row right after submitting")?;
        let id = row.attr("data-order-id").await?.context("row without id")?;
        let state = row.attr("data-state").await?.unwrap_or_default();
        ensure!(
            state == "pending" || state == "visible",
            "a fresh order is pending (or already visible), not {state:?}"
        );
        ensure!(
            Uuid::parse_str(&id).is_ok(),
            "the client-made id {id:?} is a UUID"
        );
        ensure!(
            row.text().await?.contains("SSE-WIDGET × 2"),
            "the row shows the item"
        );
        screenshot(&client, "sse-1-after-submit").await?;

        let visible = wait_for(&client, &visible_row(&id)).await?;
        ensure!(
            visible.text().await?.contains("25.00"),
            "total is 2 × 12.50"
        );
        client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(
                r#"//*[@id="announcements"][contains(., "is now visible")]"#,
            ))
            .await
            .context("the visibility was announced")?;
        let announcer = client.find(Locator::Id("announcements")).await?;
        ensure!(announcer.attr("aria-live").await?.as_deref() == Some("polite"));
        screenshot(&client, "sse-2-visible").await?;

        // The server was given this very id.
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = $1")
            .bind(Uuid::parse_str(&id)?)
            .fetch_one(&app.db)
            .await?;
        ensure!(stored == 1, "the order was stored under the browser's id");

        // After a reload the server renders it, from search, as visible.
        client.refresh().await?;
        wait_for(&client, &visible_row(&id)).await?;
        screenshot(&client, "sse-3-reloaded").await?;

        // A rule only the server checks (a blank sku passes `required`):
        // the optimistic row is marked rejected with the server's message.
        fill_order_form(&client, "   ", 1, 100, "").await?;
        submit_order_form(&client).await?;
        // (The 422 may already be in by the time we look: find the row by
        // position, whatever its state.)
        let id = client
            .find(Locator::Css("#orders tbody tr[data-order-id]"))
            .await?
            .attr("data-order-id")
            .await?
            .context("row without an id")?;
        let rejected = wait_for(
            &client,
            &format!(r#"#orders tr[data-order-id="{id}"][data-state="rejected"]"#),
        )
        .await?;
        let text = rejected.text().await?;
        ensure!(
            text.contains("rejected: sku must be 1 to 64 characters"),
            "the server's message is shown: {text}"
        );
        screenshot(&client, "sse-4-rejected").await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn no_eventsource_polling_path() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "polling", async |client| {
        sign_up_through_form(&client, &app).await?;

        // 1. Asked for by the page's URL.
        client.goto(&app.url("/orders?transport=poll")).await?;
        wait_for(&client, r#"#connection[data-state="polling"]"#).await?;
        fill_order_form(&client, "POLL-WIDGET", 3, 99, "").await?;
        submit_order_form(&client).await?;
        let id = top_row_id(&client).await?;
        screenshot(&client, "polling-1-after-submit").await?;
        wait_for(&client, &visible_row(&id)).await?;
        ensure!(
            client
                .find(Locator::Id("connection"))
                .await?
                .attr("data-state")
                .await?
                .as_deref()
                == Some("polling"),
            "no event stream was opened"
        );
        screenshot(&client, "polling-2-visible").await?;

        // 2. A browser without EventSource at all: removed before any page
        //    script runs, through the DevTools protocol.
        client
            .issue_cmd(Cdp::new(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": "delete window.EventSource;" }),
            ))
            .await?;
        client.goto(&app.url("/orders")).await?;
        ensure!(
            client
                .execute("return typeof window.EventSource", vec![])
                .await?
                == json!("undefined"),
            "EventSource is gone"
        );
        wait_for(&client, r#"#connection[data-state="polling"]"#).await?;
        fill_order_form(&client, "NO-ES-WIDGET", 1, 500, "no EventSource here").await?;
        submit_order_form(&client).await?;
        let id = top_row_id(&client).await?;
        wait_for(&client, &visible_row(&id)).await?;
        screenshot(&client, "polling-3-without-eventsource").await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn javascript_disabled_form_path() {
    let app = spawn_app().await;
    with_browser(Browser::NoJavaScript, "nojs", async |client| {
        let username = sign_up_through_form(&client, &app).await?;
        // The script never ran: no connection status shown.
        let connection = client.find(Locator::Id("connection")).await?;
        ensure!(
            !connection.is_displayed().await?,
            "no live status without JS"
        );

        // The server-made id the form will submit, to find the row by.
        let id = client
            .find(Locator::Css(r#"#order-form input[name="id"]"#))
            .await?
            .attr("value")
            .await?
            .context("the form carries an id")?;
        fill_order_form(&client, "NOJS-WIDGET", 4, 250, "plain HTML form").await?;
        submit_order_form(&client).await?;

        // 303 → /orders?consistency_token=…, which includes the order even
        // while search cannot see it.
        let row_selector = format!(r#"#orders tr[data-order-id="{id}"]"#);
        let row = wait_for(&client, &row_selector).await?;
        let url = client.current_url().await?;
        ensure!(url.path() == "/orders", "landed on {url}");
        ensure!(
            url.query_pairs().any(|(k, _)| k == "consistency_token"),
            "the redirect carries a consistency token: {url}"
        );
        let state = row.attr("data-state").await?.unwrap_or_default();
        ensure!(
            matches!(state.as_str(), "pending" | "delayed" | "visible"),
            "the new order is listed, not {state:?}"
        );
        ensure!(row.text().await?.contains("10.00"), "total is 4 × 2.50");
        screenshot(&client, "nojs-1-after-redirect").await?;

        // What a user without JS does: reload until the page says visible.
        let deadline = Instant::now() + WAIT;
        loop {
            let state = client
                .find(Locator::Css(&row_selector))
                .await
                .context("the order stays listed across reloads")?
                .attr("data-state")
                .await?
                .unwrap_or_default();
            match state.as_str() {
                "visible" => break,
                "pending" | "delayed" => {}
                other => bail!("unexpected state {other:?}"),
            }
            ensure!(
                Instant::now() < deadline,
                "order {id} was not visible after {WAIT:?} of reloads"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            client.refresh().await?;
        }
        screenshot(&client, "nojs-2-visible").await?;

        // Signing out and in again works with plain forms too.
        client
            .find(Locator::Css(r#"form[action="/logout"] button"#))
            .await?
            .click()
            .await?;
        wait_for(&client, "#login-form").await?;
        client
            .find(Locator::Id("username"))
            .await?
            .send_keys(&username)
            .await?;
        client
            .find(Locator::Id("password"))
            .await?
            .send_keys("not the password")
            .await?;
        client
            .find(Locator::Css("#login-form button[type=submit]"))
            .await?
            .click()
            .await?;
        let error = wait_for(&client, "#form-error").await?;
        ensure!(error.text().await?.contains("Wrong username or password"));
        screenshot(&client, "nojs-3-bad-login").await?;
        // The name is kept; the password is not.
        client
            .find(Locator::Id("password"))
            .await?
            .send_keys(PASSWORD)
            .await?;
        client
            .find(Locator::Css("#login-form button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for(&client, &row_selector).await?;
        Ok(())
    })
    .await;
}

/// Search that cannot see an order yet: the row turns `delayed` after the lag
/// SLO, a reload renders it `delayed` from the write side, and it still flips
/// to `visible` the moment search can find it.
#[tokio::test]
async fn slow_search_turns_rows_delayed() {
    let mut settings = test_settings().await;
    // Nothing refreshes the index on its own, and the projector waits for a
    // refresh: the order stays unsearchable until this test refreshes.
    settings.refresh_mode = RefreshMode::WaitFor;
    settings.index_refresh_interval = "-1".to_owned();
    settings.lag_slo_ms = 1500;
    let app = spawn_app_with(settings).await;
    with_browser(Browser::JavaScript, "delayed", async |client| {
        sign_up_through_form(&client, &app).await?;
        let body = client.find(Locator::Css("body")).await?;
        ensure!(body.attr("data-lag-slo-ms").await?.as_deref() == Some("1500"));
        wait_for(&client, r#"#connection[data-state="live"]"#).await?;

        fill_order_form(&client, "SLOW-WIDGET", 1, 4200, "search is slow today").await?;
        submit_order_form(&client).await?;
        let id = top_row_id(&client).await?;
        wait_for(
            &client,
            &format!(r#"#orders tr[data-order-id="{id}"][data-state="delayed"][data-accepted]"#),
        )
        .await?;
        screenshot(&client, "delayed-1-in-page").await?;

        // The page's URL now carries the write's consistency token, so the
        // server lists the order from the write side, as delayed.
        client.refresh().await?;
        let row = wait_for(&client, &format!(r#"#orders tr[data-order-id="{id}"]"#)).await?;
        ensure!(
            row.attr("data-state").await?.as_deref() == Some("delayed"),
            "server-rendered as delayed"
        );
        ensure!(row.text().await?.contains("delayed — still on its way"));
        screenshot(&client, "delayed-2-server-rendered").await?;

        let refreshed = reqwest::Client::new()
            .post(format!(
                "{}/{}orders/_refresh",
                app.settings.elasticsearch_url.trim_end_matches('/'),
                app.settings.index_prefix
            ))
            .send()
            .await?;
        ensure!(
            refreshed.status().is_success(),
            "refresh: {}",
            refreshed.status()
        );
        wait_for(&client, &visible_row(&id)).await?;
        screenshot(&client, "delayed-3-visible").await?;
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// The forms over plain HTTP: statuses, redirects, cookies, static files

#[tokio::test]
async fn pages_answer_forms_without_a_browser() {
    let app = spawn_app().await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| {
        r.headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };

    let r = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/orders");
    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(location(&r), "/login");

    for (path, content_type) in [
        ("/static/app.js", "text/javascript"),
        ("/static/sightline.css", "text/css"),
    ] {
        let r = browser.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = r.headers()[header::ETAG].clone();
        assert!(!r.text().await.unwrap().is_empty());
        let again = browser
            .get(app.url(path))
            .header(header::IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    let username = format!("p{}", &Uuid::new_v4().simple().to_string()[..12]);
    let form = |u: &str, p: &str| [("username", u.to_owned()), ("password", p.to_owned())];

    let r = browser
        .post(app.url("/signup"))
        .form(&form(&username, "short"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Password must be 8 to 128 characters"),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"value="{username}""#)),
        "keeps the name"
    );

    let r = browser
        .post(app.url("/signup"))
        .form(&form(&username, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/orders");
    assert!(r.headers().contains_key(header::SET_COOKIE));

    let r = browser
        .post(app.url("/signup"))
        .form(&form(&username, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("That username is taken"));

    let r = browser
        .post(app.url("/login"))
        .form(&form(&username, "wrong password!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong username or password")
    );

    let r = browser
        .post(app.url("/login"))
        .form(&form(&username, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/orders");

    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"data-lag-slo-ms="5000""#), "{body}");
    assert!(body.contains(r#"aria-live="polite""#));
    assert!(body.contains("No orders yet"));

    let order = |quantity: &str| {
        [
            ("id", Uuid::new_v4().to_string()),
            ("sku", "FORM-1".to_owned()),
            ("quantity", quantity.to_owned()),
            ("unit_price_cents", "1999".to_owned()),
            ("note", String::new()),
        ]
    };
    let r = browser
        .post(app.url("/orders"))
        .form(&order("two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Quantity must be a whole number")
    );
    let r = browser
        .post(app.url("/orders"))
        .form(&order("0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Quantity must be 1 to 1000")
    );

    let r = browser
        .post(app.url("/orders"))
        .header(header::ORIGIN, "http://evil.example")
        .form(&order("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-site form refused");

    let placed = order("3");
    let id = placed[0].1.clone();
    let r = browser
        .post(app.url("/orders"))
        .form(&placed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let next = location(&r);
    assert!(next.starts_with("/orders?consistency_token="), "{next}");
    let body = browser
        .get(app.url(&next))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(&format!(r#"data-order-id="{id}""#)),
        "read-your-writes: {body}"
    );
    assert!(body.contains("FORM-1 × 3") && body.contains("59.97"));
    // Submitting the same form again places nothing new.
    let r = browser
        .post(app.url("/orders"))
        .form(&placed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);

    let r = browser.post(app.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert_eq!(location(&r), "/login", "signed out");
}

// ---------------------------------------------------------------------------
// Page helpers

async fn sign_up_through_form(client: &Client, app: &TestApp) -> anyhow::Result<String> {
    let username = format!("b{}", &Uuid::new_v4().simple().to_string()[..12]);
    client.goto(&app.url("/signup")).await?;
    client
        .find(Locator::Id("username"))
        .await?
        .send_keys(&username)
        .await?;
    client
        .find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    client
        .find(Locator::Css("#signup-form button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for(client, "#order-form").await?;
    let url = client.current_url().await?;
    ensure!(url.path() == "/orders", "signed up and landed on {url}");
    Ok(username)
}

async fn fill_order_form(
    client: &Client,
    sku: &str,
    quantity: u32,
    unit_price_cents: u64,
    note: &str,
) -> anyhow::Result<()> {
    for (id, value) in [
        ("sku", sku.to_owned()),
        ("quantity", quantity.to_string()),
        ("unit_price_cents", unit_price_cents.to_string()),
        ("note", note.to_owned()),
    ] {
        let input = client.find(Locator::Id(id)).await?;
        input.clear().await?;
        if !value.is_empty() {
            input.send_keys(&value).await?;
        }
    }
    Ok(())
}

async fn submit_order_form(client: &Client) -> anyhow::Result<()> {
    client
        .find(Locator::Css("#order-form button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(())
}

async fn top_row_id(client: &Client) -> anyhow::Result<String> {
    let row = client
        .find(Locator::Css("#orders tbody tr[data-order-id]"))
        .await
        .context("no row right after submitting")?;
    let state = row.attr("data-state").await?.unwrap_or_default();
    ensure!(
        state == "pending" || state == "visible",
        "a fresh order is pending (or already visible), not {state:?}"
    );
    row.attr("data-order-id")
        .await?
        .context("row without an id")
}

fn visible_row(id: &str) -> String {
    format!(r#"#orders tr[data-order-id="{id}"][data-state="visible"]"#)
}

async fn wait_for(client: &Client, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waited {WAIT:?} for `{css}`"))
}

async fn screenshot(client: &Client, name: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    let png = client.screenshot().await?;
    std::fs::write(dir.join(format!("browser-{name}.png")), png)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The browser: chromedriver on a free port, one Chromium session

#[derive(Clone, Copy, PartialEq)]
enum Browser {
    JavaScript,
    NoJavaScript,
}

/// Runs `test` against a fresh browser, then closes the browser and stops
/// chromedriver whatever happened (a failure also leaves a screenshot).
async fn with_browser<F>(kind: Browser, name: &str, test: F)
where
    F: AsyncFnOnce(Client) -> anyhow::Result<()>,
{
    let _one_at_a_time = BROWSERS.lock().await;
    let driver = Driver::start().await.expect("Failed to start chromedriver");
    let client = driver
        .connect(kind)
        .await
        .expect("Failed to open a browser session");
    let outcome = AssertUnwindSafe(test(client.clone())).catch_unwind().await;
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = screenshot(&client, &format!("{name}-failure")).await;
    }
    let _ = client.close().await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name}: {e:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A chromedriver process; dropping it stops chromedriver and any browser it
/// started (they share its process group) and removes the browser profile.
struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> anyhow::Result<Driver> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let binary =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&binary)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| {
                    format!("Failed to run {binary} (apt-get install chromium chromium-driver)")
                })?
        };
        let profile = std::env::temp_dir().join(format!("sightline-chromium-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&profile)?;
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        };

        // Wait until it answers (start-up, not consistency: nothing to observe).
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = http
                .get(format!("{}/status", driver.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = status
                && response.status().is_success()
            {
                return Ok(driver);
            }
            if let Some(exit) = driver.child.try_wait()? {
                bail!("chromedriver exited at start-up: {exit}");
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not answer in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect(&self, kind: Browser) -> anyhow::Result<Client> {
        let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let mut options = json!({
            "binary": chrome,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", self.profile.display()),
            ],
        });
        if kind == Browser::NoJavaScript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        // Two rustls providers are compiled in; choose one (a second call is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()?
            .capabilities(capabilities)
            .connect(&self.url)
            .await?;
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(WAIT),
                Some(Duration::ZERO),
            ))
            .await?;
        Ok(client)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0) above).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A Chrome DevTools Protocol command, through chromedriver's
/// `goog/cdp/execute` endpoint.
#[derive(Debug)]
struct Cdp {
    body: Value,
}

impl Cdp {
    fn new(cmd: &str, params: Value) -> Self {
        Cdp {
            body: json!({ "cmd": cmd, "params": params }),
        }
    }
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.body.to_string()))
    }
}
