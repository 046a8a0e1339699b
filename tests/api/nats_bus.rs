//! `BUS=nats` end to end on the real three-node cluster: a web + relay
//! instance publishes, projector-only instances consume the shared durable
//! consumer. The relay and the projectors really are apart: with no
//! projector running, published events wait in the stream (and nothing is
//! searchable); once projectors start, each order becomes visible with one
//! notice, and the stream holds each event once.

use std::collections::HashMap;
use std::time::Duration;

use sightline::config::Role;

use uuid::Uuid;

use crate::binary::cli;
use crate::direct_writes::{Owner, insert_order, one_item};
use crate::es_proxy::{EsProxy, Hold};
use crate::helpers::nats::{TestStream, nats_settings, stream_state};
use crate::helpers::{
    TestApp, WAIT, metric_value, order_ids, spawn_app_with, spawn_instance, test_settings,
    visible_id,
};

const ORDERS: usize = 12;

#[tokio::test]
async fn relay_and_projectors_in_separate_instances_deliver_every_order_once_needs_elasticsearch() {
    // A bus carries events to a separate read store; the same-database mode publishes none.
    crate::helpers::require_elasticsearch();
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let with_roles = |roles: Vec<Role>| {
        let mut s = settings.clone();
        s.roles = roles;
        s
    };
    let web = spawn_app_with(with_roles(vec![Role::Web, Role::Relay])).await;
    let user = web.new_user().await;
    let (mut events, _) = web.open_events_ready(&user).await;

    // No projector yet: the relay publishes and marks the event relayed
    // (not published: nothing made it searchable), the stream keeps it.
    let first = web.place_simple_order(&user, "BEFORE-PROJECTORS").await;
    let token = first["consistency_token"].as_str().unwrap().to_owned();
    let first = first["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(WAIT, async {
        while web
            .count("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")
            .await
            > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay never marked the event relayed");
    assert_eq!(stream_state(&settings).await.messages, 1);
    assert_eq!(
        web.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        1
    );
    assert!(
        !web.visibility(&user, &first).await,
        "nothing is searchable before a projector runs"
    );
    // The user's own read still shows it (read-your-writes from the write side).
    let (source, list) = web
        .list(&user, &format!("/api/orders?consistency_token={token}"))
        .await;
    assert!(order_ids(&list).contains(&first), "{source}: {list}");

    // Two projector processes' worth of consumers on the same durable.
    let _projector1 = spawn_instance(with_roles(vec![Role::Projector])).await;
    let _projector2 = spawn_instance(with_roles(vec![Role::Projector])).await;
    let mut placed = vec![first];
    for n in 1..ORDERS {
        let order = web.place_simple_order(&user, &format!("NATS-{n}")).await;
        placed.push(order["id"].as_str().unwrap().to_owned());
    }

    // Every order announced once; listed when announced.
    let mut seen: HashMap<String, usize> = HashMap::new();
    tokio::time::timeout(WAIT, async {
        while seen.len() < ORDERS {
            let notice = events.next_order_visible().await;
            let id = visible_id(&notice);
            *seen.entry(id.clone()).or_default() += 1;
            let (_, list) = web.list(&user, "/api/orders").await;
            assert!(
                order_ids(&list).contains(&id),
                "announced {id} is not listed"
            );
        }
    })
    .await
    .expect("not every order was announced");
    for id in &placed {
        assert_eq!(seen.get(id), Some(&1), "order {id}: one notice");
    }
    assert_eq!(
        web.count("SELECT count(*) FROM notices WHERE kind = 'order-visible'")
            .await,
        ORDERS as i64
    );

    // The stream holds each event once; the consumer has nothing left.
    let state = tokio::time::timeout(WAIT, async {
        loop {
            let state = stream_state(&settings).await;
            if state.pending == 0 && state.ack_pending == 0 {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the consumer never drained");
    assert_eq!(state.messages, ORDERS as u64);
    assert_eq!(
        web.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        0,
        "the projectors mark what they made searchable published"
    );

    // /metrics shows the bus (sampled every 2 s).
    tokio::time::timeout(WAIT, async {
        loop {
            let metrics = web.metrics_text().await;
            if metric_value(&metrics, "sightline_bus_stream_messages") == Some(ORDERS as f64)
                && metric_value(&metrics, "sightline_bus_consumer_pending") == Some(0.0)
            {
                assert!(
                    metric_value(&metrics, "sightline_bus_node_up{node=\"sightline-nats-1\"}")
                        == Some(1.0),
                    "{metrics}"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("/metrics never showed the bus");
    let status = web.text_of("/status").await;
    assert!(status.contains("NATS: 3/3 nodes up"), "{status}");
    let ready: serde_json::Value = web.json_of("/readyz").await;
    assert_eq!(ready["bus"], "up", "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
}

/// A long passing failure (here a refresh held for several `ack_wait`s)
/// dead-letters nothing: the batch in hand and every event that arrives
/// meanwhile are kept alive with progress acks, so none is redelivered
/// until it counts as undeliverable (`NATS_MAX_DELIVER=2`).
#[tokio::test]
async fn a_long_stall_dead_letters_nothing_that_arrives_meanwhile_needs_elasticsearch() {
    // A bus carries events to a separate read store; the same-database mode publishes none.
    crate::helpers::require_elasticsearch();
    const MEANWHILE: usize = 5;
    let mut settings = nats_settings(test_settings().await);
    let proxy = EsProxy::start(&settings.elasticsearch_url);
    settings.elasticsearch_url = proxy.url.clone();
    settings.nats_ack_wait_secs = 1;
    settings.nats_max_deliver = 2;
    let _stream = TestStream(settings.clone());
    let app = spawn_app_with(settings.clone()).await;
    let user = app.new_user().await;
    let first = app.place_simple_order(&user, "BEFORE").await;
    app.wait_until_visible(&user, first["id"].as_str().unwrap())
        .await;

    proxy.hold_refreshes(Hold::BeforeForwarding);
    let before = proxy.seen().refreshes_arrived;
    app.place_simple_order(&user, "HELD").await;
    proxy
        .wait_until("the held batch's refresh", |s| s.refreshes_arrived > before)
        .await;
    for n in 0..MEANWHILE {
        app.place_simple_order(&user, &format!("MEANWHILE-{n}"))
            .await;
    }
    // Several ack_waits pass (the bus's own timer: nothing to wait on, as
    // nothing should happen): unheld, they would be delivered again each.
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.open();

    let total = (MEANWHILE + 2) as i64;
    tokio::time::timeout(WAIT, async {
        while app
            .count("SELECT count(*) FROM notices WHERE kind = 'order-visible'")
            .await
            < total
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("not every order became visible");
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM notices").await, total);
}

/// A poison event (a schema version this build cannot read) is parked by the
/// NATS projector, and `outbox retry` right away — well within the stream's
/// duplicate window — reaches a projector again (parked a second time, one
/// more attempt counted) instead of being swallowed as a duplicate of its
/// first publish and left waiting forever.
#[tokio::test]
async fn an_event_retried_within_the_duplicate_window_is_delivered_again_needs_elasticsearch() {
    // A bus carries events to a separate read store; the same-database mode publishes none.
    crate::helpers::require_elasticsearch();
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let app = spawn_app_with(settings.clone()).await;
    let user = app.new_user().await;
    let owner = Owner {
        id: app.user_id(&user).await,
        username: user.username.clone(),
    };
    let mut tx = app.db.begin().await.unwrap();
    let outbox_id = insert_order(&mut tx, &owner, Uuid::new_v4(), one_item("FUTURE"), 99)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let attempts = async |app: &TestApp| -> Option<i32> {
        sqlx::query_scalar("SELECT attempts FROM dead_letters WHERE outbox_id = $1")
            .bind(outbox_id)
            .fetch_optional(&app.db)
            .await
            .unwrap()
    };
    let parked_with = async |app: &TestApp, n: i32| {
        tokio::time::timeout(WAIT, async {
            while attempts(app).await != Some(n) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never parked with {n} attempt(s)"));
    };
    parked_with(&app, 1).await;

    let (ok, _, stderr) = cli(&settings, &["outbox", "retry", &outbox_id.to_string()]).await;
    assert!(ok, "{stderr}");
    parked_with(&app, 2).await;
    assert_eq!(
        stream_state(&settings).await.messages,
        2,
        "the retry was stored as a message of its own"
    );
}

/// A projector process works on more than one batch at once
/// (`PROJECTOR_CONCURRENCY`): an order placed while the batch ahead of it
/// waits for its refresh's answer is written to the read store meanwhile,
/// instead of waiting in the process for that batch to end; both become
/// visible, with one notice each, once the refreshes answer.
#[tokio::test]
async fn an_order_is_projected_while_the_batch_ahead_waits_for_its_refresh_needs_elasticsearch() {
    // A bus carries events to a separate read store; the same-database mode publishes none.
    crate::helpers::require_elasticsearch();
    let mut settings = nats_settings(test_settings().await);
    let proxy = EsProxy::start(&settings.elasticsearch_url);
    settings.elasticsearch_url = proxy.url.clone();
    settings.projector_concurrency = 2;
    let _stream = TestStream(settings.clone());
    let app = spawn_app_with(settings.clone()).await;
    let user = app.new_user().await;
    let warm = app.place_simple_order(&user, "WARM").await;
    app.wait_until_visible(&user, warm["id"].as_str().unwrap())
        .await;

    // The first order's batch: Elasticsearch has refreshed, but the answer
    // is held, so its projector still waits for it.
    proxy.hold_refreshes(Hold::AfterForwarding);
    let before = proxy.seen();
    let ahead = app.place_simple_order(&user, "AHEAD").await;
    proxy
        .wait_until("the first batch's refresh", |s| {
            s.refreshes_done > before.refreshes_done
        })
        .await;
    let behind = app.place_simple_order(&user, "BEHIND").await;
    // With one batch at a time this write would wait for the held answer.
    proxy
        .wait_for_bulk_with(behind["id"].as_str().unwrap())
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM notices WHERE kind = 'order-visible'")
            .await,
        1,
        "a notice was recorded before its refresh answered"
    );

    proxy.open();
    for order in [&ahead, &behind] {
        app.wait_until_visible(&user, order["id"].as_str().unwrap())
            .await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM notices WHERE kind = 'order-visible'")
            .await,
        3
    );
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
}
