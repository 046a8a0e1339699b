//! The pages, driven by a real browser (headless Chromium through
//! chromedriver): `harness` starts the browser, `page` holds the steps a
//! person takes on a page. The forms' plain HTTP behaviour is tested without
//! a browser in `pages_without_browser`.
//!
//! No test sleeps for consistency: the browser tests wait for the page itself
//! to say an order is visible (`data-state="visible"`), with generous timeouts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::Locator;
use serde_json::json;
use sightline::config::{RefreshMode, Role};
use uuid::Uuid;

mod harness;
mod page;
mod screens;

use harness::{Browser, Cdp, with_browser, with_two_browsers};
use page::*;

use crate::helpers::{spawn_app, spawn_app_with, spawn_instance, test_settings};

/// How long anything in a browser may take to happen.
pub(super) const WAIT: Duration = Duration::from_secs(60);
pub(super) const PASSWORD: &str = "correct horse battery";

/// The connection indicator once the page's stream is up.
pub(super) const LIVE: &str = r#"#connection[data-state="live"]"#;

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
        // The row appears once the server took the order: saving, then confirmed.
        let row = wait_for(&client, "#orders tbody tr[data-order-id]")
            .await
            .context("no row after submitting")?;
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
        let text = visible.text().await?;
        ensure!(
            text.contains("$25.00") && text.contains("Confirmed"),
            "total is 2 × $12.50, with its currency, and the order is Confirmed: {text}"
        );
        client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(
                r#"//*[@id="announcements"][contains(., "Confirmed")]"#,
            ))
            .await
            .context("the confirmation was announced")?;
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
        // no row, the field is marked with the server's words.
        fill_order_form(&client, "   ", 1, 100, "").await?;
        submit_order_form(&client).await?;
        let sku = wait_for(&client, r#"#sku[aria-invalid="true"]"#).await?;
        ensure!(sku.attr("aria-describedby").await?.as_deref() == Some("sku-error"));
        let message = client.find(Locator::Id("sku-error")).await?.text().await?;
        ensure!(
            message == "SKU is required",
            "the server's message is shown: {message}"
        );
        let rows = client
            .find_all(Locator::Css("#orders tbody tr[data-order-id]"))
            .await?;
        ensure!(rows.len() == 1, "invalid input never becomes a row");
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
        let id = place_order_through_form(&client, "POLL-WIDGET", 3, 99, "").await?;
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
        let id = place_order_through_form(&client, "NO-ES-WIDGET", 1, 500, "no EventSource here")
            .await?;
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
async fn slow_search_turns_rows_delayed_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
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

        let id = place_order_through_form(&client, "SLOW-WIDGET", 1, 4200, "search is slow today")
            .await?;
        wait_for(
            &client,
            &format!(r#"#orders tr[data-order-id="{id}"][data-state="delayed"]"#),
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
        ensure!(row.text().await?.contains("Taking longer than usual"));
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
// Every client gets its notices: across a dropped stream, across tabs, and
// only its own

/// The stream's server goes away mid-session (its instance stops gracefully:
/// the stream ends with a retry hint) and comes back on the same address.
/// While the page is cut off, two orders become visible: one placed in the
/// page (its notice held back until the page was disconnected) and one placed
/// through the API. The page's EventSource reconnects with Last-Event-ID and
/// both notices are replayed: the page's row flips to visible, and the module
/// hands both to subscribers — the API one can only have come from the
/// replay, since nothing else tells the page about it.
#[tokio::test]
async fn stream_dropped_mid_session_resumes_without_missing_a_notice_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let settings = test_settings().await;
    // The pipeline, and an API that stays up, on an instance of their own.
    let pipeline = spawn_app_with(settings.clone()).await;
    // The page's instance: web only, over the same data; restarted below
    // with the same settings on the same port.
    let mut web_settings = settings.clone();
    web_settings.roles = vec![Role::Web];
    let web = spawn_instance(web_settings.clone()).await;
    web_settings.bind_addr = format!("127.0.0.1:{}", web.port).parse().unwrap();

    with_browser(Browser::JavaScript, "resume", async |client| {
        let username = sign_up_through_form(&client, &web).await?;
        wait_for(&client, LIVE).await?;
        record_notices(&client).await?;

        // Placed in the page; search gets it, but its notice is not recorded
        // until the page has been cut off.
        let hold = pipeline.hold_notices().await;
        let held = place_order_through_form(&client, "HELD-BACK", 1, 700, "its notice comes after the drop").await?;
        wait_for(
            &client,
            &format!(r#"#orders tr[data-order-id="{held}"]"#),
        )
        .await?;
        pipeline.wait_until_projector_blocked().await;

        // The stream's server goes away.
        web.stop();
        wait_for(&client, r#"#connection[data-state="reconnecting"]"#).await?;
        screenshot(&client, "resume-1-disconnected").await?;

        // Meanwhile: an order through the API, with the page's own session,
        // and the held notice is recorded.
        let user = session_user(&client, &username).await?;
        let away = pipeline.place_simple_order(&user, "WHILE-AWAY").await;
        let away = away["id"].as_str().context("order without id")?.to_owned();
        hold.release().await;
        pipeline.wait_until_visible(&user, &held).await;
        pipeline.wait_until_visible(&user, &away).await;
        // The page cannot have heard of either yet.
        ensure!(
            row_state(&client, &held).await? != "visible",
            "the held order is not visible in the page while it is cut off"
        );
        ensure!(
            notices(&client).await?.is_empty(),
            "no notice reached the page while it was cut off"
        );

        // The server comes back, same settings, same address.
        wait_until_port_free(web.port).await?;
        let _back = spawn_instance(web_settings.clone()).await;
        wait_for(&client, LIVE).await?;
        wait_for(&client, &visible_row(&held)).await?;
        wait_until(
            &client,
            "both notices replayed to the page",
            &format!(
                "(window.__notices || []).filter(n => n.id === '{held}' || n.id === '{away}').length >= 2"
            ),
        )
        .await?;
        screenshot(&client, "resume-2-replayed").await?;

        let seen = notices(&client).await?;
        let ids: Vec<&str> = seen.iter().filter_map(|n| n["id"].as_str()).collect();
        let mut expected = vec![held.as_str(), away.as_str()];
        let mut got = ids.clone();
        expected.sort_unstable();
        got.sort_unstable();
        ensure!(got == expected, "each notice once, nothing else: {seen:?}");
        ensure!(
            seen.iter().all(|n| n["kind"] == "order-visible"),
            "{seen:?}"
        );
        let cursors: Vec<i64> = seen
            .iter()
            // Cursors are `<position>-<chain>`; the position orders them.
            .map(|n| {
                n["cursor"]
                    .as_str()
                    .and_then(|c| c.split('-').next()?.parse().ok())
                    .unwrap_or(-1)
            })
            .collect();
        ensure!(
            cursors.windows(2).all(|w| w[0] < w[1]) && cursors[0] > 0,
            "replayed in log order: {cursors:?}"
        );
        // The same EventSource came back (that is what sends Last-Event-ID).
        ensure!(streams(&client).await? == 1, "one stream in the page");
        let announced = client
            .find(Locator::Id("announcements"))
            .await?
            .text()
            .await?;
        ensure!(
            announced.contains("HELD-BACK") || announced.contains("WHILE-AWAY"),
            "announced: {announced:?}"
        );
        // The order placed elsewhere while the page was cut off is on the
        // page too: its replayed notice brought it.
        wait_for(&client, &visible_row(&away)).await?;
        Ok(())
    })
    .await;
}

/// Two tabs of one session share ONE event stream (the first tab opens it and
/// rebroadcasts over BroadcastChannel): an order placed in tab A is visible
/// in A, tab B hears its notice too, and shows it visible after a reload.
/// When A (the stream's owner) closes, B takes the stream over.
#[tokio::test]
async fn two_tabs_of_one_user_both_see_the_order() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "two-tabs", async |client| {
        sign_up_through_form(&client, &app).await?;
        wait_for(&client, LIVE).await?;
        let tab_a = client.window().await?;
        let tab_b = client.new_window(true).await?.handle;
        client.switch_to_window(tab_b.clone()).await?;
        client.goto(&app.url("/orders")).await?;
        // Live through A's stream.
        wait_for(&client, LIVE).await?;
        record_notices(&client).await?;
        let in_b = streams(&client).await?;
        client.switch_to_window(tab_a.clone()).await?;
        let in_a = streams(&client).await?;
        ensure!(
            (in_a, in_b) == (1, 0),
            "one EventSource for the browser, in the first tab (A: {in_a}, B: {in_b})"
        );

        let id = place_order_through_form(&client, "TWO-TABS", 1, 999, "placed in tab A").await?;
        wait_for(&client, &visible_row(&id)).await?;
        screenshot(&client, "two-tabs-1-a-visible").await?;

        client.switch_to_window(tab_b.clone()).await?;
        // B heard the notice over the channel.
        wait_until(
            &client,
            "tab B hears the notice",
            &format!(
                "(window.__notices || []).some(n => n.id === '{id}' && n.kind === 'order-visible')"
            ),
        )
        .await?;
        // The module in B agrees at once...
        let answer = client
            .execute_async(
                r#"const [id, done] = arguments;
                   import('/static/sightline.js')
                     .then((m) => m.whenVisible(id, { timeoutMs: 20000 }))
                     .then(done, (e) => done({ failure: String(e) }));"#,
                vec![json!(id)],
            )
            .await?;
        ensure!(answer["visible"] == true, "whenVisible in tab B: {answer}");
        // ...and after a reload B lists it as visible.
        client.refresh().await?;
        wait_for(&client, &visible_row(&id)).await?;
        wait_for(&client, LIVE).await?;
        screenshot(&client, "two-tabs-2-b-reloaded").await?;
        ensure!(streams(&client).await? == 0, "B reloaded as a listener");
        client.switch_to_window(tab_a.clone()).await?;
        ensure!(streams(&client).await? == 1, "A still holds the one stream");

        // A closes: the lock passes to B, which opens the stream.
        client.close_window().await?;
        client.switch_to_window(tab_b).await?;
        wait_until(
            &client,
            "B opens the stream",
            "window.__sightlineStreams === 1",
        )
        .await?;
        wait_for(&client, LIVE).await?;
        let second =
            place_order_through_form(&client, "TAB-B", 2, 450, "placed after A closed").await?;
        wait_for(&client, &visible_row(&second)).await?;
        screenshot(&client, "two-tabs-3-b-took-over").await?;
        Ok(())
    })
    .await;
}

/// Alice and Bob in two separate browsers: while Alice's orders become
/// visible in her page, Bob's page gets no row, no announcement and no
/// notice. Then one of Bob's own orders reaches his stream — after where
/// Alice's would have been, as the stream is in commit order — and it is the
/// only notice he ever got.
#[tokio::test]
async fn another_users_tab_receives_nothing() {
    let app = spawn_app().await;
    with_two_browsers("other-user", async |alice, bob| {
        sign_up_through_form(&alice, &app).await?;
        let bob_name = sign_up_through_form(&bob, &app).await?;
        wait_for(&alice, LIVE).await?;
        wait_for(&bob, LIVE).await?;
        record_notices(&bob).await?;

        for (sku, quantity) in [("ALICE-1", 1), ("ALICE-2", 2)] {
            let id = place_order_through_form(&alice, sku, quantity, 500, "only for alice").await?;
            wait_for(&alice, &visible_row(&id)).await?;
        }
        screenshot(&alice, "other-user-1-alice").await?;

        let nothing_in_bobs_page = async || -> anyhow::Result<()> {
            let rows = bob.find_all(Locator::Css("#orders tbody tr")).await?;
            ensure!(rows.is_empty(), "Bob's table has {} rows", rows.len());
            let announced = bob.find(Locator::Id("announcements")).await?.text().await?;
            ensure!(announced.trim().is_empty(), "Bob was told {announced:?}");
            ensure!(
                bob.find(Locator::Id("empty")).await.is_ok(),
                "Bob's page still says he has no orders"
            );
            Ok(())
        };
        nothing_in_bobs_page().await?;
        ensure!(notices(&bob).await?.is_empty(), "Bob got a notice");

        let bob_user = session_user(&bob, &bob_name).await?;
        let own = app.place_simple_order(&bob_user, "BOB-1").await;
        let own = own["id"].as_str().context("order without id")?.to_owned();
        wait_until(
            &bob,
            "Bob's own notice",
            &format!("(window.__notices || []).some(n => n.id === '{own}')"),
        )
        .await?;
        let seen = notices(&bob).await?;
        ensure!(
            seen.len() == 1 && seen[0]["id"] == own.as_str(),
            "Bob heard only of his own order: {seen:?}"
        );
        // His own order, placed elsewhere (the API), is the one row his page
        // gains.
        wait_for(&bob, &visible_row(&own)).await?;
        let rows = bob.find_all(Locator::Css("#orders tbody tr")).await?;
        ensure!(rows.len() == 1, "Bob's page shows only his own order");
        screenshot(&bob, "other-user-2-bob").await?;
        Ok(())
    })
    .await;
}

/// sightline.js as another frontend would use it, run in the /orders page:
/// placeOrder (a retry with the same id places nothing twice; a 4xx rejects
/// with the server's code), whenVisible over the stream and over long polls,
/// subscribe, an unknown order, and aborting.
#[tokio::test]
async fn sightline_js_module_works_for_other_frontends() {
    let app = spawn_app().await;
    with_browser(Browser::JavaScript, "module", async |client| {
        sign_up_through_form(&client, &app).await?;
        wait_for(&client, LIVE).await?;
        let result = client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                (async () => {
                  const m = await import('/static/sightline.js');
                  const heard = [];
                  const stop = m.subscribe((n) => heard.push(n));
                  const body = {
                    items: [{ sku: 'MODULE-1', quantity: 2, unit_price_cents: 300 }],
                    note: 'from sightline.js',
                  };
                  const order = await m.placeOrder(body);
                  const again = await m.placeOrder({ ...body, id: order.id });
                  const visible = await m.whenVisible(order.id, { timeoutMs: 20000 });
                  const already = await m.whenVisible(order.id);
                  for (let i = 0; i < 100 && !heard.some((n) => n.id === order.id); i++) {
                    await new Promise((r) => setTimeout(r, 50));
                  }
                  const polledOrder = await m.placeOrder({
                    items: [{ sku: 'MODULE-POLL', quantity: 1, unit_price_cents: 100 }],
                  });
                  const polled = await m.whenVisible(polledOrder.id, { transport: 'poll', timeoutMs: 20000 });
                  const errorOf = async (promise) => {
                    try {
                      await promise;
                      return null;
                    } catch (e) {
                      return { name: e.name, status: e.status, code: e.code, error: e.error, field: e.field };
                    }
                  };
                  const invalid = await errorOf(m.placeOrder({ items: [] }));
                  const unknown = await errorOf(m.whenVisible(m.newOrderId()));
                  const controller = new AbortController();
                  const pending = errorOf(m.whenVisible(polledOrder.id, { signal: controller.signal }));
                  controller.abort();
                  const aborted = await pending;
                  stop();
                  return {
                    order, again, visible, already, polledOrder, polled, invalid, unknown, aborted,
                    heard: heard.filter((n) => n.id === order.id),
                  };
                })().then(done, (e) => done({ failure: String((e && e.stack) || e) }));"#,
                vec![],
            )
            .await?;
        ensure!(result.get("failure").is_none(), "{result}");
        let id = result["order"]["id"].as_str().context("no id")?;
        ensure!(Uuid::parse_str(id).is_ok(), "a client-made UUID: {id}");
        ensure!(result["order"]["total_cents"] == 600, "{result}");
        ensure!(result["again"]["id"] == id, "same id, same order: {result}");
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = $1")
            .bind(Uuid::parse_str(id)?)
            .fetch_one(&app.db)
            .await?;
        ensure!(stored == 1, "placed once");
        for key in ["visible", "already", "polled"] {
            ensure!(result[key]["visible"] == true, "{key}: {result}");
        }
        ensure!(result["visible"]["id"] == id && result["visible"]["version"] == 1);
        let heard = result["heard"].as_array().context("heard")?;
        ensure!(
            heard.len() == 1
                && heard[0]["kind"] == "order-visible"
                && heard[0]["version"] == 1
                && heard[0]["status"] == "placed",
            "subscribe got the notice once: {heard:?}"
        );
        ensure!(
            result["invalid"]["status"] == 422
                && result["invalid"]["code"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("invalid"))
                && result["invalid"]["error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
            "a 4xx carries the server's answer: {result}"
        );
        ensure!(
            result["unknown"]["status"] == 404 && result["unknown"]["code"] == "not_found",
            "{result}"
        );
        ensure!(result["aborted"]["name"] == "AbortError", "{result}");
        // What the module placed is the page's order too.
        client.refresh().await?;
        wait_for(&client, &visible_row(id)).await?;
        screenshot(&client, "module-1-placed-by-the-module").await?;
        Ok(())
    })
    .await;
}
