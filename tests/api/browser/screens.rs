//! The orders page as a person meets it, on a desktop (1280 px) and a phone
//! (390 px): no sideways scrolling on any page from 320 to 1440 px, one
//! understandable state per order, rows the script adds that look and work
//! like the server's, orders placed elsewhere appearing, every broken rule
//! next to its field, search that matches as you type and survives search
//! being down — and axe-core, a checker nobody here wrote, finding no serious
//! or critical accessibility problem on any page with rows in every state.
//!
//! Screenshots of every state at both widths go to `test-artifacts/`
//! (`browser-screen-<width>-<state>.png`), axe-core's findings to
//! `test-artifacts/axe-<page>.json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use uuid::Uuid;

use super::harness::{Browser, Cdp, with_browser, with_two_browsers};
use super::page::*;
use super::{LIVE, PASSWORD};
use crate::direct_writes::{Owner, insert_order, one_item};
use crate::helpers::{TcpProxy, spawn_app, spawn_app_with, test_read_store, test_settings};
use sightline::config::ReadStoreKind;

/// A screen a person uses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Screen {
    pub width: u32,
    pub height: u32,
}

pub(super) const DESKTOP: Screen = Screen {
    width: 1280,
    height: 900,
};
pub(super) const PHONE: Screen = Screen {
    width: 390,
    height: 844,
};

/// Makes the page `screen` wide, as a phone (touch, the viewport meta tag
/// honoured) below 640 px.
pub(super) async fn use_screen(client: &Client, screen: Screen) -> anyhow::Result<()> {
    client
        .issue_cmd(Cdp::new(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": screen.width,
                "height": screen.height,
                "deviceScaleFactor": 1,
                "mobile": screen.width < 640,
            }),
        ))
        .await?;
    Ok(())
}

/// The page is no wider than the screen: nothing to scroll sideways to.
async fn assert_no_sideways_scroll(client: &Client, what: &str) -> anyhow::Result<()> {
    let sizes = client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await?;
    // Numbers, or the check would hold for nothing (0 <= 0).
    let (scroll, inner) = (
        sizes[0].as_i64().context("scrollWidth is a number")?,
        sizes[1].as_i64().context("innerWidth is a number")?,
    );
    ensure!(inner > 0, "{what}: a screen {inner} px wide");
    ensure!(
        scroll <= inner,
        "{what}: the page is {scroll} px wide on a {inner} px screen"
    );
    Ok(())
}

/// The element is wholly on screen (after the page scrolled it into view).
async fn assert_in_viewport(client: &Client, css: &str) -> anyhow::Result<()> {
    let inside = client
        .execute(
            "const e = document.querySelector(arguments[0]);
             if (!e) return 'missing';
             const r = e.getBoundingClientRect();
             return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth
                 && r.top >= 0 && r.bottom <= window.innerHeight
               ? 'inside' : JSON.stringify([r.left, r.top, r.right, r.bottom, window.innerWidth, window.innerHeight]);",
            vec![json!(css)],
        )
        .await?;
    ensure!(
        inside == json!("inside"),
        "`{css}` is not on screen: {inside}"
    );
    Ok(())
}

async fn shot(client: &Client, screen: Screen, state: &str) -> anyhow::Result<()> {
    screenshot(client, &format!("screen-{}-{state}", screen.width)).await
}

fn row(id: &str) -> String {
    format!(r#"#orders tr[data-order-id="{id}"]"#)
}

async fn text_of(client: &Client, css: &str) -> anyhow::Result<String> {
    Ok(client.find(Locator::Css(css)).await?.text().await?)
}

/// Waits until the element's text is `expected`.
async fn wait_for_text(client: &Client, css: &str, expected: &str) -> anyhow::Result<()> {
    wait_until(
        client,
        &format!("`{css}` to read {expected:?}"),
        &format!(
            "document.querySelector({}) && document.querySelector({}).textContent.trim() === {}",
            json!(css),
            json!(css),
            json!(expected)
        ),
    )
    .await
}

/// Presses Tab until `css` has the focus (at most 40 times).
async fn tab_to(client: &Client, css: &str) -> anyhow::Result<()> {
    for _ in 0..40 {
        let focused = client
            .execute(
                "return document.activeElement && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await?;
        if focused == json!(true) {
            return Ok(());
        }
        press(client, &Key::Tab).await?;
    }
    bail!("Tab never reached `{css}`")
}

async fn press(client: &Client, keys: &str) -> anyhow::Result<()> {
    client
        .find(Locator::Css(":focus"))
        .await?
        .send_keys(keys)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------

/// The whole life of two orders on each screen: a two-item order placed
/// through the form appears as *Saving…*, turns *Confirmed* where the person
/// can see it, with its currency; the counters follow without a reload; the
/// row the script added has a Cancel that offers an undo, then cancels
/// (*Cancelled*, announced). On a phone the rows are cards.
#[tokio::test]
async fn the_orders_page_works_on_a_phone_and_a_desktop() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "screens", async |client| {
        for screen in [DESKTOP, PHONE] {
            use_screen(&client, screen).await?;
            // A fresh user per screen: counters start at zero each time.
            client.delete_all_cookies().await?;
            client.goto(&app.url("/signup")).await?;
            shot(&client, screen, "signup").await?;
            sign_up_through_form(&client, &app).await?;
            wait_for(&client, LIVE).await?;
            assert_no_sideways_scroll(&client, "empty orders page").await?;
            wait_for_text(&client, "#summary-placed", "0").await?;
            shot(&client, screen, "empty").await?;

            // Two item lines; the price in dollars.
            fill_order_form(&client, "PHONE-CASE-EXTRA-LONG-NAME-42", 2, 1250, "gift").await?;
            client.find(Locator::Id("add-item")).await?.click().await?;
            wait_for(&client, "#sku-2").await?;
            client.find(Locator::Id("sku-2")).await?.send_keys("CABLE").await?;
            let qty = client.find(Locator::Id("quantity-2")).await?;
            qty.clear().await?;
            qty.send_keys("3").await?;
            client.find(Locator::Id("unit_price-2")).await?.send_keys("1.99").await?;
            shot(&client, screen, "two-items").await?;
            submit_order_form(&client).await?;
            let id = top_row_id(&client).await?;
            shot(&client, screen, "saving").await?;

            let confirmed = wait_for(&client, &visible_row(&id)).await?;
            let text = confirmed.text().await?;
            ensure!(text.contains("Confirmed"), "one state a person reads: {text}");
            ensure!(
                text.contains("PHONE-CASE-EXTRA-LONG-NAME-42") && text.contains("CABLE"),
                "both items are on the row: {text}"
            );
            ensure!(text.contains("$30.97"), "2 × $12.50 + 3 × $1.99, with its symbol: {text}");
            assert_in_viewport(&client, &format!("{} .badge", row(&id))).await?;
            assert_no_sideways_scroll(&client, "orders page with a row").await?;
            let display = client
                .execute(
                    "return getComputedStyle(document.querySelector(arguments[0])).display;",
                    vec![json!(row(&id))],
                )
                .await?;
            let cards = screen.width < 640;
            ensure!(
                (display == json!("block")) == cards,
                "rows are {} at {} px, display {display}",
                if cards { "cards" } else { "table rows" },
                screen.width
            );
            // The counters follow the notice, no reload.
            wait_for_text(&client, "#summary-placed", "1").await?;
            ensure!(text_of(&client, "#summary-spent").await?.contains("$30.97"));
            shot(&client, screen, "confirmed").await?;

            // The live row's Cancel: an undo first, then cancelled.
            client
                .find(Locator::Css(&format!("{} .cancel-form button", row(&id))))
                .await?
                .click()
                .await?;
            let undo = wait_for(&client, &format!("{} button.undo", row(&id))).await?;
            ensure!(undo.text().await? == "Undo");
            ensure!(text_of(&client, &format!("{} .badge", row(&id))).await? == "Cancelling…");
            shot(&client, screen, "cancelling").await?;
            wait_for(&client, &format!(r#"{}[data-status="cancelled"]"#, row(&id))).await?;
            wait_for_text(&client, &format!("{} .badge", row(&id)), "Cancelled").await?;
            wait_until(
                &client,
                "the cancel to be announced",
                "document.getElementById('announcements').textContent.toLowerCase().includes('cancelled')",
            )
            .await?;
            wait_for(&client, &visible_row(&id)).await?;
            wait_for_text(&client, "#summary-cancelled", "1").await?;
            ensure!(
                text_of(&client, &format!("{} .badge", row(&id))).await? == "Cancelled",
                "a cancelled order never reads as confirmed"
            );
            shot(&client, screen, "cancelled").await?;
            let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
                .bind(Uuid::parse_str(&id)?)
                .fetch_one(&app.db)
                .await?;
            ensure!(status == "cancelled", "the server cancelled it");
        }
        Ok(())
    })
    .await;
}

/// Every page, with long words in it, fits every width from 320 to 1440 px.
#[tokio::test]
async fn no_page_scrolls_sideways_from_320_to_1440_px() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "widths", async |client| {
        sign_up_through_form(&client, &app).await?;
        let username = text_of(&client, ".who strong").await?;
        let user = session_user(&client, &username).await?;
        // 64 characters, the longest a SKU may be, and not one space.
        let long = "A-VERY-LONG-SKU-WITHOUT-ANY-SPACES-0123456789ABCDEFGHIJKLMNOPQRS";
        assert_eq!(long.len(), 64);
        let body = json!({
            "items": [{ "sku": long, "quantity": 1000, "unit_price_cents": 10_000_000 }],
            "note": "a note that goes on and on without a break: ".to_owned() + &"x".repeat(200),
        });
        let placed: Value = app.place_order(&user, &body).await.json().await?;
        app.wait_until_visible(&user, placed["id"].as_str().context("id")?)
            .await;
        for width in [320, 390, 640, 1024, 1280, 1440] {
            use_screen(&client, Screen { width, height: 800 }).await?;
            for path in ["/orders", "/status", "/orders?q=zzz"] {
                client.goto(&app.url(path)).await?;
                assert_no_sideways_scroll(&client, &format!("{path} at {width} px")).await?;
            }
        }
        client.delete_all_cookies().await?;
        for width in [320, 1440] {
            use_screen(&client, Screen { width, height: 800 }).await?;
            for path in ["/signup", "/login"] {
                client.goto(&app.url(path)).await?;
                assert_no_sideways_scroll(&client, &format!("{path} at {width} px")).await?;
            }
        }
        Ok(())
    })
    .await;
}

/// Two pages of one user are open (two browsers: another device); an order
/// placed over the API shows on both, in its place, and the counters follow.
#[tokio::test]
async fn an_order_placed_elsewhere_appears_on_every_open_page() {
    let app = spawn_app().await;
    with_two_browsers("elsewhere", async |first, second| {
        use_screen(&second, PHONE).await?;
        let username = sign_up_through_form(&first, &app).await?;
        second.goto(&app.url("/login")).await?;
        second.find(Locator::Id("username")).await?.send_keys(&username).await?;
        second.find(Locator::Id("password")).await?.send_keys(PASSWORD).await?;
        second
            .find(Locator::Css("#login-form button[type=submit]"))
            .await?
            .click()
            .await?;
        for page in [&first, &second] {
            wait_for(page, LIVE).await?;
        }
        // One order from the first page, then one over the API.
        let from_page = place_order_through_form(&first, "FROM-PAGE", 1, 500, "").await?;
        wait_for(&second, &visible_row(&from_page)).await?;
        let user = session_user(&first, &username).await?;
        let placed: Value = app
            .place_order(
                &user,
                &json!({ "items": [{ "sku": "FROM-API", "quantity": 2, "unit_price_cents": 250 }] }),
            )
            .await
            .json()
            .await?;
        let from_api = placed["id"].as_str().context("id")?.to_owned();
        for page in [&first, &second] {
            let row = wait_for(page, &visible_row(&from_api)).await?;
            ensure!(row.text().await?.contains("FROM-API"));
            // Newest first: the API's order is above the page's.
            let order = page
                .execute(
                    "return [...document.querySelectorAll('#orders tbody tr')].map(r => r.dataset.orderId);",
                    vec![],
                )
                .await?;
            ensure!(
                order == json!([from_api, from_page]),
                "rows in the list's order: {order}"
            );
            let cancel = row.find(Locator::Css(".cancel-form button")).await?;
            ensure!(cancel.is_displayed().await?, "an inserted row has its Cancel");
            wait_for_text(page, "#summary-placed", "2").await?;
            wait_until(
                page,
                "the new order to be announced",
                "document.getElementById('announcements').textContent.includes('FROM-API')",
            )
            .await?;
        }
        screenshot(&second, "screen-390-from-elsewhere").await?;
        Ok(())
    })
    .await;
}

/// Invalid input never becomes a row: each broken rule is next to its field
/// (`aria-invalid`, `aria-describedby`), in plain words; what the script
/// cannot read goes to the server, which answers the same way, values kept.
/// All by keyboard.
#[tokio::test]
async fn invalid_orders_never_become_rows_and_the_form_works_by_keyboard() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "invalid", async |client| {
        use_screen(&client, PHONE).await?;
        sign_up_through_form(&client, &app).await?;
        wait_for(&client, LIVE).await?;

        // By keyboard: SKU blank (spaces), quantity 0, price too high.
        client.find(Locator::Id("sku")).await?.click().await?;
        press(&client, "   ").await?;
        press(&client, &Key::Tab).await?;
        press(&client, &format!("{}a{}0", Key::Control, Key::Null)).await?;
        tab_to(&client, "#unit_price").await?;
        press(&client, "200000").await?;
        press(&client, &Key::Enter).await?;
        for (field, message) in [
            ("sku", "SKU is required"),
            ("quantity", "Quantity must be between 1 and 1,000"),
            ("unit_price", "Price must be between $0.00 and $100,000.00"),
        ] {
            let input = wait_for(&client, &format!(r#"#{field}[aria-invalid="true"]"#)).await?;
            let described = input.attr("aria-describedby").await?.unwrap_or_default();
            ensure!(
                described == format!("{field}-error"),
                "{field} is described by its message"
            );
            let shown = text_of(&client, &format!("#{described}")).await?;
            ensure!(shown == message, "{field}: {shown:?}");
        }
        let alert = client.find(Locator::Id("form-error")).await?;
        ensure!(
            alert.attr("role").await?.as_deref() == Some("alert"),
            "errors are assertive"
        );
        ensure!(
            client
                .find_all(Locator::Css("#orders tbody tr"))
                .await?
                .is_empty(),
            "no row for an invalid order"
        );
        shot(&client, PHONE, "invalid").await?;
        use_screen(&client, DESKTOP).await?;
        shot(&client, DESKTOP, "invalid").await?;
        use_screen(&client, PHONE).await?;

        // Something the script cannot read as an amount: the form's own
        // round trip, the same words, the values kept.
        let sku = client.find(Locator::Id("sku")).await?;
        sku.clear().await?;
        sku.send_keys("KEYBOARD-1").await?;
        let quantity = client.find(Locator::Id("quantity")).await?;
        quantity.clear().await?;
        quantity.send_keys("2").await?;
        let price = client.find(Locator::Id("unit_price")).await?;
        price.clear().await?;
        price.send_keys("twelve").await?;
        press(&client, &Key::Enter).await?;
        let price = wait_for(&client, r#"#unit_price[aria-invalid="true"]"#).await?;
        ensure!(
            price.prop("value").await?.as_deref() == Some("twelve"),
            "the value is kept"
        );
        ensure!(
            text_of(&client, "#unit_price-error").await? == "Price must be an amount such as 12.50"
        );
        ensure!(
            client
                .find_all(Locator::Css("#orders tbody tr"))
                .await?
                .is_empty()
        );

        // Fixed, by keyboard: Enter places it.
        price.clear().await?;
        price.send_keys("12.50").await?;
        press(&client, &Key::Enter).await?;
        let id = top_row_id(&client).await?;
        wait_for(&client, &visible_row(&id)).await?;
        ensure!(
            client
                .find_all(Locator::Css(r#"input[aria-invalid="true"]"#))
                .await?
                .is_empty(),
            "the marks are gone once the order is placed"
        );

        // Cancel by keyboard, then Undo by keyboard: the order is kept.
        tab_to(&client, &format!("{} .cancel-form button", row(&id))).await?;
        press(&client, &Key::Enter).await?;
        wait_for(&client, &format!("{} button.undo:focus", row(&id))).await?;
        press(&client, &Key::Enter).await?;
        wait_until(
            &client,
            "the undo to be announced",
            "document.getElementById('announcements').textContent.includes('kept')",
        )
        .await?;
        // Past the undo window: still placed, still Confirmed.
        tokio::time::sleep(Duration::from_secs(6)).await;
        ensure!(text_of(&client, &format!("{} .badge", row(&id))).await? == "Confirmed");
        let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(Uuid::parse_str(&id)?)
            .fetch_one(&app.db)
            .await?;
        ensure!(status == "placed", "undo kept the order");
        Ok(())
    })
    .await;
}

/// "wid" finds WIDGET-42 as it is typed, without a reload; the no-JS search
/// form finds it too.
#[tokio::test]
async fn search_matches_the_beginnings_of_words_as_you_type() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "search", async |client| {
        sign_up_through_form(&client, &app).await?;
        let username = text_of(&client, ".who strong").await?;
        let user = session_user(&client, &username).await?;
        let widget = app.place_simple_order(&user, "WIDGET-42").await;
        let gadget = app.place_simple_order(&user, "GADGET-7").await;
        for order in [&widget, &gadget] {
            app.wait_until_visible(&user, order["id"].as_str().context("id")?)
                .await;
        }
        client.goto(&app.url("/orders")).await?;
        wait_for(&client, LIVE).await?;
        client.execute("window.__samePage = true;", vec![]).await?;
        client.find(Locator::Id("q")).await?.send_keys("wid").await?;
        let (widget_id, gadget_id) = (
            widget["id"].as_str().context("id")?,
            gadget["id"].as_str().context("id")?,
        );
        wait_until(
            &client,
            "only the widget to be listed",
            &format!(
                "[...document.querySelectorAll('#orders tbody tr')].map(r => r.dataset.orderId).join() === {}",
                json!(widget_id)
            ),
        )
        .await?;
        ensure!(
            client.execute("return window.__samePage === true;", vec![]).await? == json!(true),
            "results came without a page load"
        );
        ensure!(client.current_url().await?.query().unwrap_or_default().contains("q=wid"));

        // Without JavaScript: the same rule, server-rendered.
        let page = app
            .get(&user, "/orders?q=gad")
            .send()
            .await?
            .text()
            .await?;
        ensure!(page.contains(gadget_id) && !page.contains(widget_id), "no-JS search by prefix");
        Ok(())
    })
    .await;
}

/// Search goes down (its connections refused, as in an outage): a reload
/// still lists the user's orders, from the write side, saying so; the
/// indicator tells the truth; an order placed meanwhile is saved; when search
/// is back the page recovers by itself and the order turns Confirmed.
#[tokio::test]
async fn with_search_down_the_page_shows_the_write_sides_orders_and_recovers_by_itself_needs_elasticsearch()
 {
    // About the separate read store going away: the same-database mode has none.
    crate::helpers::require_elasticsearch();
    let mut settings = test_settings().await;
    let target = url::Url::parse(&settings.elasticsearch_url).unwrap();
    let proxy = TcpProxy::start(format!(
        "{}:{}",
        target.host_str().unwrap_or("127.0.0.1"),
        target.port().unwrap_or(9200)
    ))
    .await;
    settings.elasticsearch_url = format!("http://127.0.0.1:{}", proxy.port);
    let app = spawn_app_with(settings).await;
    with_browser(Browser::JavaScript, "search-down", async |client| {
        let username = sign_up_through_form(&client, &app).await?;
        wait_for(&client, LIVE).await?;
        let before = place_order_through_form(&client, "BEFORE-OUTAGE", 1, 100, "").await?;
        wait_for(&client, &visible_row(&before)).await?;

        proxy.refuse();
        let user = session_user(&client, &username).await?;
        let during = app.place_simple_order(&user, "DURING-OUTAGE").await;
        let during = during["id"].as_str().context("id")?.to_owned();
        client.goto(&app.url("/orders")).await?;
        let banner = wait_for(&client, "#search-banner").await?;
        ensure!(banner.is_displayed().await?, "the banner shows");
        ensure!(
            banner
                .text()
                .await?
                .contains("Search is catching up — your orders are safe")
        );
        let table = client.find(Locator::Id("orders")).await?;
        ensure!(table.attr("data-read-source").await?.as_deref() == Some("write-db"));
        wait_for(&client, &visible_row(&before)).await?;
        let saving = wait_for(&client, &row(&during)).await?;
        ensure!(
            saving.attr("data-state").await?.as_deref() != Some("visible"),
            "an order search has not got is not Confirmed"
        );
        wait_for(&client, r#"#connection[data-state="search-down"]"#).await?;
        ensure!(
            text_of(&client, "#summary-placed").await? == "—",
            "counters search cannot give are not shown as zeros"
        );
        shot(&client, DESKTOP, "search-down").await?;
        use_screen(&client, PHONE).await?;
        shot(&client, PHONE, "search-down").await?;
        use_screen(&client, DESKTOP).await?;

        proxy.allow();
        // No reload from here on: the page finds search back by itself.
        wait_for(&client, &visible_row(&during)).await?;
        wait_until(
            &client,
            "the banner to go",
            "document.getElementById('search-banner').hidden",
        )
        .await?;
        wait_for(&client, LIVE).await?;
        wait_for_text(&client, "#summary-placed", "2").await?;
        shot(&client, DESKTOP, "search-back").await?;
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// Accessibility, checked by axe-core

/// axe-core's source, installed by scripts/test (tests/browser-tools).
fn axe_source() -> anyhow::Result<String> {
    let path = std::env::var("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/browser-tools/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "axe-core is missing at {} (scripts/test installs it: cd tests/browser-tools && npm ci)",
            path.display()
        )
    })
}

/// Runs axe-core on the current page; writes its findings to
/// `test-artifacts/axe-<name>.json` and fails on any serious or critical one.
async fn axe(client: &Client, name: &str) -> anyhow::Result<()> {
    let ready = client
        .execute(
            &format!("{}\nreturn typeof window.axe;", axe_source()?),
            vec![],
        )
        .await?;
    ensure!(ready == json!("object"), "axe-core did not load: {ready}");
    let found = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] }).then(
               (r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.map((n) => n.target.join(' ')) }))),
               (e) => done(String(e)));",
            vec![],
        )
        .await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("axe-{name}.json")),
        serde_json::to_string_pretty(&found)?,
    )?;
    let violations = found
        .as_array()
        .with_context(|| format!("axe failed: {found}"))?;
    let serious: Vec<&Value> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    ensure!(
        serious.is_empty(),
        "axe-core on {name}: {}",
        serde_json::to_string_pretty(&serious)?
    );
    Ok(())
}

/// axe-core finds no serious or critical problem on /signup, /login, /status
/// and /orders with rows in every state (Confirmed, Cancelled, Couldn't be
/// processed, Taking longer than usual, Saving…, Not placed), on both screens.
#[tokio::test]
async fn axe_core_finds_no_serious_problem_on_any_page() {
    let mut settings = test_settings().await;
    settings.lag_slo_ms = 6000;
    // Five writes, then the sixth is refused: a "Not placed" row.
    settings.write_burst = 5;
    settings.write_rate_per_min = 1;
    let app = spawn_app_with(settings).await;
    with_browser(Browser::JavaScript, "axe", async |client| {
        client.goto(&app.url("/signup")).await?;
        axe(&client, "signup").await?;
        client.goto(&app.url("/login")).await?;
        axe(&client, "login").await?;
        let username = sign_up_through_form(&client, &app).await?;
        wait_for(&client, LIVE).await?;
        let user = session_user(&client, &username).await?;

        let confirmed = place_order_through_form(&client, "CONFIRMED", 1, 100, "").await?;
        wait_for(&client, &visible_row(&confirmed)).await?;
        let cancelled = place_order_through_form(&client, "CANCELLED", 1, 100, "").await?;
        wait_for(&client, &visible_row(&cancelled)).await?;
        app.cancel_order(&user, &cancelled).await;
        wait_for(&client, &format!(r#"{}[data-status="cancelled"][data-state="visible"]"#, row(&cancelled))).await?;
        // With a separate read store there are three more states: an order
        // search refuses, one taking longer, one still saving. The
        // same-database mode has no projection, so none of them.
        let pipeline = test_read_store() == ReadStoreKind::Elasticsearch;
        let mut hold = None;
        let mut saving = None;
        if pipeline {
            // Search refuses this one for good: its owner hears order-failed.
            let failed = Uuid::new_v4();
            let owner = Owner {
                id: app.user_id(&user).await,
                username: username.clone(),
            };
            let mut tx = app.db.begin().await?;
            // 40,000 characters: Elasticsearch refuses a keyword that long.
            insert_order(&mut tx, &owner, failed, one_item(&"X".repeat(40_000)), 2).await?;
            tx.commit().await?;
            wait_for(&client, &format!(r#"{}[data-state="failed"]"#, row(&failed.to_string()))).await?;

            // Notices held: one order turns "Taking longer than usual", the
            // next is still "Saving…" while axe looks.
            hold = Some(app.hold_notices().await);
            let delayed = place_order_through_form(&client, "DELAYED", 1, 100, "").await?;
            wait_for(&client, &format!(r#"{}[data-state="delayed"]"#, row(&delayed))).await?;
            saving = Some(place_order_through_form(&client, "SAVING", 1, 100, "").await?);
        } else {
            for sku in ["FOURTH", "FIFTH"] {
                let id = place_order_through_form(&client, sku, 1, 100, "").await?;
                wait_for(&client, &visible_row(&id)).await?;
            }
        }
        // The sixth write: refused (429), a "Not placed" row.
        fill_order_form(&client, "REFUSED", 1, 100, "").await?;
        submit_order_form(&client).await?;
        wait_for(&client, r#"#orders tr[data-state="rejected"]"#).await?;
        let states = client
            .execute(
                "return [...new Set([...document.querySelectorAll('#orders tbody tr')].map(r => r.dataset.state + '/' + r.dataset.status))].sort();",
                vec![],
            )
            .await?;
        let expected = if pipeline {
            json!([
                "delayed/placed",
                "failed/placed",
                "pending/placed",
                "rejected/placed",
                "visible/cancelled",
                "visible/placed"
            ])
        } else {
            json!(["rejected/placed", "visible/cancelled", "visible/placed"])
        };
        ensure!(states == expected, "rows in every state: {states}");
        shot(&client, DESKTOP, "every-state").await?;
        axe(&client, "orders-1280").await?;
        use_screen(&client, PHONE).await?;
        shot(&client, PHONE, "every-state").await?;
        axe(&client, "orders-390").await?;
        if let Some(saving) = saving {
            ensure!(
                row_state(&client, &saving).await? == "pending",
                "the Saving… row was still saving while axe looked"
            );
        }
        if let Some(hold) = hold {
            hold.release().await;
        }
        use_screen(&client, DESKTOP).await?;
        client.goto(&app.url("/status")).await?;
        axe(&client, "status").await?;
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// An order's journey

/// `describeJourney` (app.js) on journeys of the contract's shapes, in the
/// page, without the server: the sentence a person reads.
async fn journey_sentences(client: &Client) -> anyhow::Result<Value> {
    let result = client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            (async () => {
              const m = await import('/static/app.js');
              const at = (s) => `2026-12-06T01:23:${s}Z`;
              const committed = { stage: 'committed', at: at('45.123456') };
              const full = [
                committed,
                { stage: 'claimed', at: at('45.124900') },
                { stage: 'published', at: at('45.125800') },
                { stage: 'delivered_to_projector', at: at('45.126300') },
                { stage: 'indexed', at: at('45.147600') },
                { stage: 'searchable', at: at('45.156100') },
                { stage: 'noticed', at: at('45.157000') },
                { stage: 'sent', at: at('45.161500'), via: 'stream', instance: 'web-1' },
              ];
              const say = (stages, options) => {
                const d = m.describeJourney({ id: 'x', version: 1, stages }, options);
                return { text: m.journeyText(d), reason: d.reason, state: d.state };
              };
              return {
                full: say(full),
                inFlight: say(full.slice(0, 3)),
                sameDatabase: say([
                  committed,
                  { stage: 'searchable', at: at('45.123456') },
                  { stage: 'noticed', at: at('45.124000') },
                  { stage: 'sent', at: at('45.129000'), via: 'poll', instance: 'web-2' },
                ], { action: 'cancelled' }),
                retrying: say([...full.slice(0, 3), { stage: 'retrying', at: at('45.200000'), reason: 'elasticsearch_unreachable' }]),
                parked: say([...full.slice(0, 4), { stage: 'parked', at: at('45.300000'), reason: 'the order could not be made searchable' }]),
                parkedForOperators: say([...full.slice(0, 4), { stage: 'parked', at: at('45.300000'), reason: 'document_parsing_exception: failed to parse field [items.sku]' }]),
              };
            })().then(done, (e) => done({ failure: String((e && e.stack) || e) }));"#,
            vec![],
        )
        .await?;
    ensure!(result.get("failure").is_none(), "{result}");
    Ok(result)
}

/// A confirmed order's state opens its journey, by keyboard: the total from
/// committed to sent and the parts a customer understands (saved, indexed,
/// searchable, sent — which add up to the total), every stage's offset, on a
/// desktop and a phone, with nothing to scroll sideways and nothing axe-core
/// calls serious; Enter again closes it.
#[tokio::test]
async fn an_orders_state_opens_its_journey_on_a_phone_and_a_desktop() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "journey", async |client| {
        sign_up_through_form(&client, &app).await?;
        wait_for(&client, LIVE).await?;

        // The words, from journeys of every shape the contract allows.
        let said = journey_sentences(&client).await?;
        for (shape, text) in [
            ("full", "Confirmed 38 ms after you placed it: saved 3 ms · indexed 21 ms · searchable 9 ms · sent 5 ms"),
            ("inFlight", "On its way: saved 2 ms so far"),
            ("sameDatabase", "Confirmed 6 ms after you cancelled it: saved and searchable at once · sent 6 ms"),
            ("retrying", "On its way: saved 2 ms · indexing 75 ms so far"),
            ("parked", "Set aside 177 ms after you placed it: saved 3 ms · indexing 174 ms"),
        ] {
            ensure!(said[shape]["text"] == text, "{shape}: {}", said[shape]);
        }
        ensure!(said["retrying"]["reason"] == "Search couldn't be reached — trying again.", "{said}");
        ensure!(
            said["parked"]["reason"] == "It was set aside: the order could not be made searchable.",
            "{said}"
        );
        ensure!(
            said["parkedForOperators"]["reason"] == "It was set aside: search refused what the order contains.",
            "{said}"
        );

        let pipeline = test_read_store() == ReadStoreKind::Elasticsearch;
        let words: &[&str] = if pipeline {
            &["saved", "indexed", "searchable", "sent"]
        } else {
            &["saved and searchable", "sent"]
        };
        for screen in [DESKTOP, PHONE] {
            use_screen(&client, screen).await?;
            let id = place_order_through_form(&client, "JOURNEY-42", 1, 1250, "").await?;
            wait_for(&client, &visible_row(&id)).await?;
            let toggle_css = format!("{} button.journey-toggle", row(&id));
            let toggle = client.find(Locator::Css(&toggle_css)).await?;
            ensure!(toggle.attr("aria-expanded").await?.as_deref() == Some("false"));
            ensure!(
                toggle.text().await?.starts_with("Confirmed"),
                "the state is the button's visible name"
            );

            // By keyboard: Tab to the state, Enter opens its journey.
            tab_to(&client, &toggle_css).await?;
            press(&client, &Key::Enter).await?;
            let panel_css = format!("#journey-{id}");
            wait_for(&client, &format!(r#"{panel_css}[data-journey-state="confirmed"]"#))
                .await
                .context("the journey reached sent")?;
            ensure!(toggle.attr("aria-expanded").await?.as_deref() == Some("true"));
            ensure!(toggle.attr("aria-controls").await?.as_deref() == Some(&format!("journey-{id}")[..]));

            let shown = client
                .execute(
                    "const panel = document.querySelector(arguments[0]);
                     panel.scrollIntoView({ block: 'center' });
                     return {
                       summary: panel.querySelector('.journey-summary').textContent,
                       total: Number(panel.querySelector('.journey-total').value),
                       totalText: panel.querySelector('.journey-total').textContent,
                       parts: [...panel.querySelectorAll('.journey-part')].map((p) => ({
                         word: p.dataset.word, ms: Number(p.querySelector('data').value), text: p.textContent })),
                       stages: [...panel.querySelectorAll('.journey-stages li')].map((li) => ({
                         stage: li.dataset.stage, text: li.textContent })),
                     };",
                    vec![json!(panel_css)],
                )
                .await?;
            let summary = shown["summary"].as_str().context("summary")?;
            ensure!(
                summary.starts_with("Confirmed ") && summary.contains(" after you placed it: "),
                "{summary}"
            );
            let total = shown["total"].as_i64().context("total")?;
            ensure!(
                shown["totalText"] == format!("{total} ms"),
                "the total as shown is its value: {shown}"
            );
            // Plausible: on its way for a moment, not for ages.
            ensure!((0..30_000).contains(&total), "{shown}");
            let parts = shown["parts"].as_array().context("parts")?;
            let shown_words: Vec<&str> = parts.iter().filter_map(|p| p["word"].as_str()).collect();
            ensure!(shown_words == words, "the parts a customer understands: {shown}");
            let mut sum = 0;
            for part in parts {
                let ms = part["ms"].as_i64().context("ms")?;
                ensure!(ms >= 0, "{shown}");
                let text = part["text"].as_str().context("text")?;
                ensure!(
                    text == format!("{} {ms} ms", part["word"].as_str().unwrap_or_default())
                        || (ms == 0 && text.ends_with(" at once")),
                    "each part shows its value: {text}"
                );
                sum += ms;
            }
            ensure!(sum == total, "the parts add up to the total: {shown}");
            let stages = shown["stages"].as_array().context("stages")?;
            ensure!(
                stages.first().is_some_and(|s| s["stage"] == "committed" && s["text"].as_str().is_some_and(|t| t.ends_with("0 ms")))
                    && stages.last().is_some_and(|s| s["stage"] == "sent"),
                "every stage, from committed to sent: {shown}"
            );
            ensure!(stages.len() >= if pipeline { 6 } else { 4 }, "{shown}");
            ensure!(
                // The stream's notice, or the page's first question
                // (`visibility?wait=0`) when the order was visible by then.
                stages.iter().any(|s| s["text"].as_str().is_some_and(|t| {
                    // (Which instance sent it is for operators: not shown.)
                    (t.starts_with("Sent to your browser — over the live stream ")
                        || t.starts_with("Sent to your browser — over a long poll "))
                        && !t.contains(" by ")
                })),
                "how it was sent, in words: {shown}"
            );
            assert_no_sideways_scroll(&client, &format!("an open journey at {} px", screen.width)).await?;
            assert_in_viewport(&client, &format!("{panel_css} .journey-summary")).await?;
            shot(&client, screen, "journey").await?;
            axe(&client, &format!("orders-journey-{}", screen.width)).await?;

            // Enter again closes it; the focus stays on the state.
            press(&client, &Key::Enter).await?;
            wait_until(
                &client,
                "the journey to close",
                &format!("!document.querySelector({})", json!(panel_css)),
            )
            .await?;
            ensure!(toggle.attr("aria-expanded").await?.as_deref() == Some("false"));
            ensure!(
                client.execute("return document.activeElement.matches(arguments[0]);", vec![json!(toggle_css)]).await?
                    == json!(true),
                "the focus stays on the state"
            );
        }
        Ok(())
    })
    .await;
}
