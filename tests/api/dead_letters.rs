//! Poison events: an event Elasticsearch refuses, or one this version cannot
//! read, is parked in `dead_letters` with its error; the pipeline goes on; the
//! owner hears `order-failed`; and `sightline outbox dead` / `outbox retry`
//! list and retry it.

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::binary::cli;
use crate::direct_writes::{Owner, insert_order, one_item};
use crate::helpers::{SseFrame, SseStream, TestApp, TestUser, WAIT, order_ids, visible_id};

/// A sku of 40 000 characters: the keyword sub-field `skus.raw` refuses terms
/// over 32 766 bytes, so Elasticsearch rejects the document (400).
fn immense_sku() -> String {
    "X".repeat(40_000)
}

/// Runs `sightline outbox <args>` against the test's database; asserts it
/// exits successfully and returns its standard output.
async fn outbox_cli(app: &TestApp, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(&app.settings, &[&["outbox"], args].concat()).await;
    assert!(ok, "sightline outbox {args:?} failed: {stderr}\n{stdout}");
    stdout
}

async fn owner(app: &TestApp, user: &TestUser) -> Owner {
    Owner {
        id: app.user_id(user).await,
        username: user.username.clone(),
    }
}

/// Commits an order written by SQL (see `direct_writes`); returns its outbox id.
async fn commit_direct_order(
    app: &TestApp,
    owner: &Owner,
    id: Uuid,
    sku: &str,
    schema_version: i32,
) -> i64 {
    let mut tx = app.db.begin().await.unwrap();
    let outbox_id = insert_order(&mut tx, owner, id, one_item(sku), schema_version)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outbox_id
}

/// Reads dispatched events until each `(kind, order id)` of `wanted` has
/// arrived, in any order; anything else, or anything twice, fails the test.
/// Returns the frames in `wanted`'s order.
async fn wait_for_notices(events: &mut SseStream, wanted: &[(&str, &str)]) -> Vec<SseFrame> {
    let mut got: Vec<Option<SseFrame>> = vec![None; wanted.len()];
    while got.iter().any(Option::is_none) {
        let frame = events.next_event().await;
        let kind = frame.event.clone().unwrap_or_default();
        let id = frame.json()["id"].as_str().unwrap_or_default().to_owned();
        let slot = wanted
            .iter()
            .position(|(k, i)| *k == kind && *i == id)
            .unwrap_or_else(|| panic!("unexpected event: {frame:?}"));
        assert!(got[slot].is_none(), "{kind} for {id} arrived twice");
        got[slot] = Some(frame);
    }
    got.into_iter().map(Option::unwrap).collect()
}

async fn visibility_body(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let response = app
        .get(user, &format!("/api/orders/{id}/visibility"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Polls `dead_letters` until `condition` holds for (count, attempts of `outbox_id`).
async fn wait_for_dead_letters(
    app: &TestApp,
    outbox_id: i64,
    condition: impl Fn(i64, i32) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        loop {
            let count = app.count("SELECT count(*) FROM dead_letters").await;
            let attempts: i32 = sqlx::query_scalar(
                "SELECT coalesce(max(attempts), 0) FROM dead_letters WHERE outbox_id = $1",
            )
            .bind(outbox_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
            if condition(count, attempts) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("dead_letters never reached the expected state");
}

#[tokio::test]
async fn an_event_elasticsearch_rejects_is_parked_the_pipeline_goes_on_and_a_retry_delivers_it_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    let app = crate::helpers::spawn_app().await;
    let user = app.new_user().await;
    let owner = owner(&app, &user).await;
    let (mut events, _) = app.open_events_ready(&user).await;

    // The poison: a real order whose event Elasticsearch refuses for good.
    let poison = Uuid::new_v4();
    let poison_id = poison.to_string();
    let outbox_id = commit_direct_order(&app, &owner, poison, &immense_sku(), 2).await;
    // An ordinary order placed after it.
    let after = app.place_simple_order(&user, "AFTER-POISON").await;
    let after_id = after["id"].as_str().unwrap().to_owned();

    // The owner hears that the poison failed, and the later order still
    // becomes visible (in whichever order the two arrive).
    let frames = wait_for_notices(
        &mut events,
        &[("order-failed", &poison_id), ("order-visible", &after_id)],
    )
    .await;
    let data = frames[0].json();
    assert!(
        data["error"].as_str().is_some_and(|e| !e.is_empty()),
        "order-failed without an error: {data}"
    );
    assert!(
        !data.to_string().contains("document_parsing_exception"),
        "order-failed leaks Elasticsearch internals: {data}"
    );
    app.wait_until_visible(&user, &after_id).await;
    let (_, list) = app.list(&user, "/api/orders").await;
    assert_eq!(order_ids(&list), vec![after_id.clone()]);

    // Parked, with Elasticsearch's reason, out of the relay's way. (The
    // relay parks in its own transaction, which commits just after the
    // notices are recorded.)
    wait_for_dead_letters(&app, outbox_id, |count, _| count == 1).await;
    let (dead_id, error): (i64, String) =
        sqlx::query_as("SELECT outbox_id, error FROM dead_letters")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(dead_id, outbox_id);
    assert!(error.contains("skus.raw"), "dead letter error: {error}");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE id = {outbox_id} AND parked AND published_at IS NULL"
        ))
        .await,
        1
    );

    // Its journey stops at `parked`, with the reason its owner was told
    // (Elasticsearch's own words stay with operators: `sightline journey`).
    let journey = app
        .user_json(&user, &format!("/api/orders/{poison_id}/journey"))
        .await;
    let parked = journey["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "parked")
        .unwrap_or_else(|| panic!("no parked stage: {journey}"));
    assert_eq!(parked["reason"], data["error"], "{journey}");
    assert!(!journey.to_string().contains("exception"), "{journey}");
    let (ok, printed, _) = crate::binary::cli(&app.settings, &["journey", &poison_id]).await;
    assert!(
        ok && printed.contains("parked") && printed.contains("skus.raw"),
        "{printed}"
    );

    // The poll says so too.
    let body = visibility_body(&app, &user, &poison_id).await;
    assert_eq!(body["visible"], false, "{body}");
    assert_eq!(body["failed"], true, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );

    // `sightline outbox dead` lists it.
    let listed = outbox_cli(&app, &["dead"]).await;
    let line = listed
        .lines()
        .find(|l| l.starts_with(&format!("{outbox_id}\t")))
        .unwrap_or_else(|| panic!("outbox dead does not list {outbox_id}:\n{listed}"));
    assert!(line.contains(&poison_id), "{line}");
    assert!(line.contains("skus.raw"), "{line}");

    // Fix the payload, retry: the normal notice follows and the dead letter goes.
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_set(payload, '{items,0,sku}', '\"FIXED-SKU\"')
         WHERE id = $1",
    )
    .bind(outbox_id)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE order_items SET sku = 'FIXED-SKU' WHERE order_id = $1")
        .bind(poison)
        .execute(&app.db)
        .await
        .unwrap();
    let retried = outbox_cli(&app, &["retry", &outbox_id.to_string()]).await;
    assert!(retried.contains(&outbox_id.to_string()), "{retried}");

    let visible = events.next_order_visible().await;
    assert_eq!(visible_id(&visible), poison_id);
    let body = visibility_body(&app, &user, &poison_id).await;
    assert_eq!(body["visible"], true, "{body}");
    assert_eq!(body["failed"], false, "{body}");
    // The notice is recorded before the relay's own transaction marks the
    // event published (and drops the dead letter): wait for that commit.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while app.count("SELECT count(*) FROM dead_letters").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried event never left the dead-letter table"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        outbox_cli(&app, &["dead"])
            .await
            .contains("no dead letters")
    );
    let (_, list) = app.list(&user, "/api/orders?q=FIXED-SKU").await;
    assert_eq!(order_ids(&list), vec![poison_id.clone()]);
    let summary: Value = app.user_json(&user, "/api/summary").await;
    assert_eq!(summary["orders_placed"], 2, "{summary}");

    // A retry of a retried event is refused: it is no longer dead.
    let (ok, _, _) = cli(&app.settings, &["outbox", "retry", &outbox_id.to_string()]).await;
    assert!(!ok, "retrying a published event succeeded");
}

#[tokio::test]
async fn an_event_of_an_unknown_future_version_is_parked_not_a_crash_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = crate::helpers::spawn_app().await;
    let user = app.new_user().await;
    let owner = owner(&app, &user).await;
    let (mut events, _) = app.open_events_ready(&user).await;

    let future = Uuid::new_v4();
    let future_id = future.to_string();
    let outbox_id = commit_direct_order(&app, &owner, future, "FROM-THE-FUTURE", 99).await;
    let after = app.place_simple_order(&user, "AFTER-FUTURE").await;
    let after_id = after["id"].as_str().unwrap().to_owned();

    let frames = wait_for_notices(
        &mut events,
        &[("order-failed", &future_id), ("order-visible", &after_id)],
    )
    .await;
    assert!(
        frames[0].json()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    app.wait_until_visible(&user, &after_id).await;

    // The owner's notice is recorded in the projector's batch; the relay
    // parks the event when that batch comes back, a moment later.
    wait_for_dead_letters(&app, outbox_id, |count, _| count == 1).await;
    let error: String = sqlx::query_scalar("SELECT error FROM dead_letters WHERE outbox_id = $1")
        .bind(outbox_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(error.contains("v99"), "dead letter error: {error}");
    assert!(visibility_body(&app, &user, &future_id).await["failed"] == true);
    let listed = outbox_cli(&app, &["dead"]).await;
    assert!(listed.contains(&future_id), "{listed}");

    // The process is still serving.
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Retrying what this version still cannot read parks it again, with one
    // more attempt counted and no second notice.
    outbox_cli(&app, &["retry", &outbox_id.to_string()]).await;
    wait_for_dead_letters(&app, outbox_id, |count, attempts| {
        count == 1 && attempts == 2
    })
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM notices WHERE order_id = '{future}'"
        ))
        .await,
        1
    );
    assert!(
        !visibility_body(&app, &user, &future_id).await["visible"]
            .as_bool()
            .unwrap()
    );
}
