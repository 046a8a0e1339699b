//! The steps a person takes on a page, for the browser tests: sign up, fill
//! and submit the order form, read rows and the page's notices.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{PASSWORD, WAIT};
use crate::helpers::{TestApp, TestUser};

pub(super) async fn sign_up_through_form(client: &Client, app: &TestApp) -> anyhow::Result<String> {
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

pub(super) async fn fill_order_form(
    client: &Client,
    sku: &str,
    quantity: u32,
    unit_price_cents: u64,
    note: &str,
) -> anyhow::Result<()> {
    // Prices are typed in currency units, as a person would.
    let price = format!("{}.{:02}", unit_price_cents / 100, unit_price_cents % 100);
    for (id, value) in [
        ("sku", sku.to_owned()),
        ("quantity", quantity.to_string()),
        ("unit_price", price),
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

pub(super) async fn submit_order_form(client: &Client) -> anyhow::Result<()> {
    client
        .find(Locator::Id("place-order"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Fills the order form, submits it and returns the new order's id (the row
/// the page inserts once the server took the order).
pub(super) async fn place_order_through_form(
    client: &Client,
    sku: &str,
    quantity: u32,
    unit_price_cents: u64,
    note: &str,
) -> anyhow::Result<String> {
    fill_order_form(client, sku, quantity, unit_price_cents, note).await?;
    let before = row_ids(client).await?;
    submit_order_form(client).await?;
    new_row_id(client, &before).await
}

/// The ids of the rows on the page, top to bottom.
pub(super) async fn row_ids(client: &Client) -> anyhow::Result<Vec<String>> {
    let ids = client
        .execute(
            "return [...document.querySelectorAll('#orders tbody tr[data-order-id]')].map(r => r.dataset.orderId);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(ids)?)
}

/// Waits for a row that was not among `before`; it must be pending or
/// already visible. Returns its id.
pub(super) async fn new_row_id(client: &Client, before: &[String]) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(id) = row_ids(client)
            .await?
            .into_iter()
            .find(|id| !before.contains(id))
        {
            let state = row_state(client, &id).await?;
            ensure!(
                state == "pending" || state == "visible",
                "a fresh order is pending (or already visible), not {state:?}"
            );
            return Ok(id);
        }
        ensure!(
            Instant::now() < deadline,
            "no new row within {WAIT:?} of submitting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The id of the top row, once there is one.
pub(super) async fn top_row_id(client: &Client) -> anyhow::Result<String> {
    new_row_id(client, &[]).await
}

pub(super) fn visible_row(id: &str) -> String {
    format!(r#"#orders tr[data-order-id="{id}"][data-state="visible"]"#)
}

pub(super) async fn wait_for(
    client: &Client,
    css: &str,
) -> anyhow::Result<fantoccini::elements::Element> {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waited {WAIT:?} for `{css}`"))
}

/// Subscribes to the page's sightline.js (the module instance app.js uses)
/// and keeps every notice in `window.__notices`.
pub(super) async fn record_notices(client: &Client) -> anyhow::Result<()> {
    let done = client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               window.__notices = [];
               import('/static/sightline.js').then(
                 (m) => { m.subscribe((n) => window.__notices.push(n)); done(true); },
                 (e) => done(String(e)));"#,
            vec![],
        )
        .await?;
    ensure!(done == json!(true), "could not subscribe: {done}");
    Ok(())
}

/// The notices `record_notices` kept.
pub(super) async fn notices(client: &Client) -> anyhow::Result<Vec<Value>> {
    let list = client
        .execute("return window.__notices || [];", vec![])
        .await?;
    Ok(list.as_array().cloned().unwrap_or_default())
}

/// EventSources open in the current tab (sightline.js counts them).
pub(super) async fn streams(client: &Client) -> anyhow::Result<i64> {
    let n = client
        .execute("return window.__sightlineStreams || 0;", vec![])
        .await?;
    n.as_i64().context("a number")
}

pub(super) async fn row_state(client: &Client, id: &str) -> anyhow::Result<String> {
    Ok(client
        .find(Locator::Css(&format!(
            r#"#orders tr[data-order-id="{id}"]"#
        )))
        .await?
        .attr("data-state")
        .await?
        .unwrap_or_default())
}

/// The browser's session, for API calls as the same user.
pub(super) async fn session_user(client: &Client, username: &str) -> anyhow::Result<TestUser> {
    // Chromium keeps the `__Host-`, `Secure` cookie on http://127.0.0.1.
    let cookie = client
        .get_named_cookie(sightline::web::extract::session::SECURE_COOKIE_NAME)
        .await?;
    Ok(TestUser {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        token: cookie.value().to_owned(),
    })
}

/// Waits until `condition` (a JavaScript expression) holds in the page.
pub(super) async fn wait_until(client: &Client, what: &str, condition: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let holds = client
            .execute(&format!("return Boolean({condition});"), vec![])
            .await?;
        if holds == json!(true) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a stopped instance has let go of its port.
pub(super) async fn wait_until_port_free(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "port {port} is still taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(super) async fn screenshot(client: &Client, name: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    let png = client.screenshot().await?;
    std::fs::write(dir.join(format!("browser-{name}.png")), png)?;
    Ok(())
}
