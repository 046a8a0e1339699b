//! `sightline rebuild` (a fresh index from the event log, swapped in under
//! the live one) and `sightline outbox prune` (retention), run in-process
//! against each test's own database and index prefix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::operations::rebuild::{self, RebuildOptions, RebuildReport};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, WAIT, order_ids, spawn_app};

/// Polls a `count(*)` until it is `expected` (fails after [`WAIT`]).
async fn wait_for_count(app: &TestApp, sql: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = app.count(sql).await;
        if n == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} stayed at {n}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the relay has handled every event committed so far.
async fn wait_for_relay(app: &TestApp) {
    wait_for_count(
        app,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT parked",
        0,
    )
    .await;
}

fn es(app: &TestApp, path: &str) -> String {
    format!(
        "{}/{path}",
        app.settings.elasticsearch_url.trim_end_matches('/')
    )
}

/// The index behind an alias (`orders` or `summaries`).
async fn alias_target(app: &TestApp, name: &str) -> String {
    let alias = format!("{}{name}", app.settings.index_prefix);
    let body: serde_json::Map<String, Value> = app
        .http
        .get(es(app, &format!("_alias/{alias}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body.len(), 1, "{alias} points at {body:?}");
    body.keys().next().unwrap().clone()
}

async fn index_exists(app: &TestApp, index: &str) -> bool {
    app.http.head(es(app, index)).send().await.unwrap().status() == StatusCode::OK
}

async fn doc_count(app: &TestApp, index: &str) -> i64 {
    app.http
        .post(es(app, &format!("{index}/_refresh")))
        .send()
        .await
        .unwrap();
    let body: Value = app
        .http
        .get(es(app, &format!("{index}/_count")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["count"].as_i64().expect("a count")
}

async fn get_json(app: &TestApp, user: &TestUser, path: &str) -> Value {
    let response = app.get(user, path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

/// Everything a user can read from the read model: the list, a search, the summary.
async fn read_model_view(app: &TestApp, user: &TestUser) -> Vec<Value> {
    vec![
        get_json(app, user, "/api/orders?limit=100").await,
        get_json(app, user, "/api/orders?limit=100&q=GADGET").await,
        get_json(app, user, "/api/summary").await,
    ]
}

/// Every order the list shows, following `next_cursor`.
async fn list_all(app: &TestApp, user: &TestUser) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/api/orders?limit=100".to_owned();
    loop {
        let (_, page) = app.list(user, &path).await;
        ids.extend(order_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/orders?limit=100&cursor={cursor}"),
            None => return ids,
        }
    }
}

async fn place(app: &TestApp, user: &TestUser, sku: &str, note: &str) -> String {
    let response = app
        .place_order(
            user,
            &json!({
                "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 250 }],
                "note": note
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Appends an event of a kind nothing decodes and waits until the relay has
/// parked it.
async fn park_an_undecodable_event(app: &TestApp, user: &TestUser) {
    let before = app.count("SELECT count(*) FROM outbox WHERE parked").await;
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, schema_version, aggregate_id,
                             aggregate_version, user_id, payload)
         VALUES ($1, 'OrderShipped', 1, $2, 2, $3, '{}')",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(app.user_id(user).await)
    .execute(&app.db)
    .await
    .unwrap();
    wait_for_count(app, "SELECT count(*) FROM outbox WHERE parked", before + 1).await;
}

fn options(batch_size: i64) -> RebuildOptions {
    RebuildOptions {
        batch_size,
        ..RebuildOptions::default()
    }
}

fn print_rate(report: &RebuildReport) {
    println!("{report}");
}

#[tokio::test]
async fn a_rebuild_swaps_in_an_identical_index_and_sends_no_notices_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let sku = if i % 2 == 0 { "GADGET-1" } else { "WIDGET-2" };
        ids.push(place(&app, &user, sku, &format!("order number {i}")).await);
    }
    let response = app.cancel_order(&user, &ids[1]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // And an event nothing can decode: the relay parks it (one order-failed notice).
    park_an_undecodable_event(&app, &user).await;
    for id in &ids {
        app.wait_until_visible(&user, id).await;
    }
    wait_for_relay(&app).await;
    wait_for_count(&app, "SELECT count(*) FROM notices", 8).await;

    let before = read_model_view(&app, &user).await;
    assert_eq!(order_ids(&before[0]).len(), 6);
    let old_orders = alias_target(&app, "orders").await;
    let old_summaries = alias_target(&app, "summaries").await;
    assert!(old_orders.ends_with("orders_v1"), "{old_orders}");

    let report = rebuild::run(&app.settings, options(4), false)
        .await
        .unwrap();
    print_rate(&report);

    assert!(report.swapped && !report.resumed && !report.old_deleted);
    assert_eq!(report.previous_orders_index, old_orders);
    assert!(report.orders_index.ends_with("orders_v2"), "{report:?}");
    assert!(
        report.summaries_index.ends_with("summaries_v2"),
        "{report:?}"
    );
    assert_eq!(alias_target(&app, "orders").await, report.orders_index);
    assert_eq!(
        alias_target(&app, "summaries").await,
        report.summaries_index
    );
    assert_eq!(report.orders, 6);
    assert_eq!(report.replayed, 8);
    assert_eq!((report.undecodable, report.rejected), (1, 0));
    assert!(
        index_exists(&app, &old_orders).await,
        "the old index is kept"
    );
    assert!(index_exists(&app, &old_summaries).await);

    // Same answers from the new index, and nobody was told anything.
    assert_eq!(read_model_view(&app, &user).await, before);
    assert_eq!(app.count("SELECT count(*) FROM notices").await, 8);
    assert_eq!(
        app.count("SELECT count(*) FROM rebuilds WHERE outcome = 'swapped'")
            .await,
        1
    );

    // The pipeline goes on, into the new index.
    let later = place(&app, &user, "GADGET-3", "after the rebuild").await;
    app.wait_until_visible(&user, &later).await;
    let (_, list) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(order_ids(&list)[0], later);
    assert_eq!(doc_count(&app, &report.orders_index).await, 7);
    assert_eq!(doc_count(&app, &old_orders).await, 6);

    // A second rebuild goes to v3 and may delete the old index.
    let again = rebuild::run(
        &app.settings,
        RebuildOptions {
            delete_old: true,
            ..RebuildOptions::default()
        },
        false,
    )
    .await
    .unwrap();
    assert!(again.orders_index.ends_with("orders_v3"), "{again:?}");
    assert!(again.old_deleted);
    assert!(!index_exists(&app, &report.orders_index).await);
    assert_eq!(doc_count(&app, &again.orders_index).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_while_a_rebuild_runs_are_all_searchable_after_it_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut seeded = Vec::new();
    for i in 0..20 {
        seeded.push(place(&app, &user, "GADGET-1", &format!("seed {i}")).await);
    }
    wait_for_relay(&app).await;

    let done = AtomicBool::new(false);
    let started = tokio::sync::Notify::new();
    let placing = async {
        let mut placed = Vec::new();
        // Places orders from before the rebuild starts until after it ends
        // (at a pace the small-batched rebuild can overtake, and at most 200).
        while !done.load(Ordering::SeqCst) && placed.len() < 200 {
            placed.push(place(&app, &user, "WIDGET-2", "during the rebuild").await);
            if placed.len() == 1 {
                started.notify_one();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        placed
    };
    let rebuilding = async {
        started.notified().await;
        // Small batches: many steps, so the placing interleaves with all of them.
        let report = rebuild::run(&app.settings, options(5), false).await;
        done.store(true, Ordering::SeqCst);
        report
    };
    let (placed, report) = tokio::join!(placing, rebuilding);
    let report = report.unwrap();
    print_rate(&report);
    assert!(report.swapped);
    assert!(
        placed.len() >= 2,
        "placed {} during the rebuild",
        placed.len()
    );

    for id in seeded.iter().chain(&placed) {
        app.wait_until_visible(&user, id).await;
    }
    wait_for_relay(&app).await;
    let all = seeded.len() + placed.len();
    let listed = list_all(&app, &user).await;
    for id in seeded.iter().chain(&placed) {
        assert!(
            listed.contains(id),
            "order {id} is missing after the rebuild"
        );
    }
    assert_eq!(listed.len(), all);
    assert_eq!(
        alias_target(&app, "orders").await,
        report.orders_index,
        "still swapped"
    );
    assert_eq!(doc_count(&app, &report.orders_index).await, all as i64);
    let summary = get_json(&app, &user, "/api/summary").await;
    assert_eq!(summary["orders_placed"], all);
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_into_the_same_index_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    for i in 0..12 {
        place(&app, &user, "GADGET-1", &format!("order {i}")).await;
    }
    wait_for_relay(&app).await;
    let before = read_model_view(&app, &user).await;
    let live = alias_target(&app, "orders").await;

    let stopped = rebuild::run(
        &app.settings,
        RebuildOptions {
            batch_size: 5,
            stop_after_batches: Some(1),
            ..RebuildOptions::default()
        },
        false,
    )
    .await
    .unwrap();
    print_rate(&stopped);
    assert!(!stopped.swapped);
    assert_eq!(stopped.replayed, 5);
    assert!(stopped.last_outbox_id > 0);
    assert_eq!(
        alias_target(&app, "orders").await,
        live,
        "nothing swapped yet"
    );
    assert!(index_exists(&app, &stopped.orders_index).await);
    assert_eq!(
        app.count("SELECT count(*) FROM rebuilds WHERE finished_at IS NULL")
            .await,
        1
    );

    // No pruning under an unfinished rebuild: it still needs the events.
    let refused = sightline::outbox::prune(&app.db, Utc::now(), 100)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("interrupted"), "{refused:#}");

    let resumed = rebuild::run(&app.settings, options(5), false)
        .await
        .unwrap();
    print_rate(&resumed);
    assert!(resumed.resumed && resumed.swapped, "{resumed:?}");
    assert_eq!(resumed.rebuild_id, stopped.rebuild_id);
    assert_eq!(resumed.orders_index, stopped.orders_index);
    assert_eq!(resumed.replayed, 7, "continued after the first batch");
    assert_eq!(alias_target(&app, "orders").await, resumed.orders_index);
    assert_eq!(doc_count(&app, &resumed.orders_index).await, 12);
    assert_eq!(read_model_view(&app, &user).await, before);
    assert_eq!(
        app.count("SELECT count(*) FROM rebuilds WHERE finished_at IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn prune_deletes_only_old_published_events_and_a_rebuild_then_refuses_to_shrink_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(place(&app, &user, "GADGET-1", &format!("order {i}")).await);
    }
    wait_for_relay(&app).await;
    // Two of them were published long ago.
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '40 days',
                           created_at = now() - interval '40 days'
         WHERE aggregate_id = ANY($1::uuid[])",
    )
    .bind(
        ids[..2]
            .iter()
            .map(|id| id.parse::<Uuid>().unwrap())
            .collect::<Vec<_>>(),
    )
    .execute(&app.db)
    .await
    .unwrap();

    // An old event the relay parks (nothing can decode it).
    park_an_undecodable_event(&app, &user).await;
    sqlx::query("UPDATE outbox SET created_at = now() - interval '40 days' WHERE parked")
        .execute(&app.db)
        .await
        .unwrap();

    // An old event the relay has not published: hold the relay off with the
    // rebuild lock (exclusive), as a rebuild's final pass does.
    let mut hold = PgConnection::connect(&app.settings.database_url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(sightline::locks::REBUILD)
        .execute(&mut hold)
        .await
        .unwrap();
    let pending = place(&app, &user, "GADGET-9", "held back").await;
    sqlx::query(
        "UPDATE outbox SET created_at = now() - interval '40 days' WHERE aggregate_id = $1",
    )
    .bind(pending.parse::<Uuid>().unwrap())
    .execute(&app.db)
    .await
    .unwrap();

    let cutoff = sightline::outbox::parse_cutoff("30d", Utc::now()).unwrap();
    let plan = sightline::outbox::prune_plan(&app.db, cutoff)
        .await
        .unwrap();
    assert_eq!(
        plan,
        sightline::outbox::PrunePlan {
            deletable: 2,
            unpublished: 1,
            parked: 1
        }
    );
    let deleted = sightline::outbox::prune(&app.db, cutoff, 1).await.unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        2,
        "the parked and the unpublished event stay"
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 1);

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(sightline::locks::REBUILD)
        .execute(&mut hold)
        .await
        .unwrap();
    hold.close().await.unwrap();
    app.wait_until_visible(&user, &pending).await;
    wait_for_relay(&app).await;
    // Pruned events stay pruned; nothing else is old enough.
    assert_eq!(
        sightline::outbox::prune(&app.db, cutoff, 100)
            .await
            .unwrap(),
        0
    );

    // The log no longer holds two of the four orders: a rebuild would lose
    // them, so it refuses to swap...
    let live = alias_target(&app, "orders").await;
    let refused = rebuild::run(&app.settings, options(100), false)
        .await
        .unwrap_err();
    assert!(format!("{refused:#}").contains("pruned"), "{refused:#}");
    assert_eq!(alias_target(&app, "orders").await, live);
    let (_, list) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(order_ids(&list).len(), 4);

    // ...unless told to.
    let shrunk = rebuild::run(
        &app.settings,
        RebuildOptions {
            allow_fewer: true,
            ..options(100)
        },
        false,
    )
    .await
    .unwrap();
    assert!(shrunk.swapped && shrunk.resumed, "{shrunk:?}");
    assert_eq!(shrunk.orders, 2);
    let (_, list) = app.list(&user, "/api/orders?limit=100").await;
    assert_eq!(order_ids(&list).len(), 2);
}
