//! Several instances over one database: web-only instances serving clients,
//! one pipeline instance projecting. A client connected to either instance
//! gets its notices, and resuming on the other misses none.

use reqwest::StatusCode;
use sightline::config::Role;

use crate::helpers::{spawn_app_with, test_settings, visible_id};

#[tokio::test]
async fn notices_reach_clients_on_every_web_instance_and_resume_across_them() {
    let settings = test_settings().await;
    let with_roles = |roles: Vec<Role>| {
        let mut s = settings.clone();
        s.roles = roles;
        s
    };
    // Two pipeline instances share the outbox (SKIP LOCKED) and the notice log.
    let pipeline = spawn_app_with(with_roles(vec![Role::Relay, Role::Projector])).await;
    let _second_pipeline =
        crate::helpers::spawn_instance(with_roles(vec![Role::Relay, Role::Projector])).await;
    let web1 = spawn_app_with(with_roles(vec![Role::Web])).await;
    let web2 = spawn_app_with(with_roles(vec![Role::Web])).await;

    // The pipeline instance serves operations only.
    let health = web1
        .http
        .get(pipeline.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let api = web1
        .http
        .get(pipeline.url("/api/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);

    // One session works on both web instances (sessions live in PostgreSQL).
    let user = web1.new_user().await;
    let (mut on_web1, _) = web1.open_events_ready(&user).await;

    // Placed through web2, announced on web1.
    let first = web2.place_simple_order(&user, "VIA-WEB2").await;
    let notice = on_web1.next_order_visible().await;
    assert_eq!(visible_id(&notice), first["id"].as_str().unwrap());
    let cursor = notice.id.clone().unwrap();
    // ...and listed by web2 right then.
    let (_, list) = web2.list(&user, "/api/orders").await;
    assert!(list.to_string().contains(first["id"].as_str().unwrap()));

    // The client leaves web1; two orders are placed while it is away.
    drop(on_web1);
    let second = web1.place_simple_order(&user, "AWAY-1").await;
    let third = web2.place_simple_order(&user, "AWAY-2").await;
    web1.wait_until_visible(&user, third["id"].as_str().unwrap())
        .await;
    web1.wait_until_visible(&user, second["id"].as_str().unwrap())
        .await;

    // It resumes on web2 with the cursor web1 gave it: both, once each, in order.
    let mut on_web2 = web2.open_events(&user, Some(&cursor)).await;
    let ready = on_web2.next_event().await;
    assert_eq!(ready.event.as_deref(), Some("ready"), "{ready:?}");
    let mut replayed = vec![
        visible_id(&on_web2.next_order_visible().await),
        visible_id(&on_web2.next_order_visible().await),
    ];
    replayed.sort();
    let mut expected = vec![
        second["id"].as_str().unwrap().to_owned(),
        third["id"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(replayed, expected);

    // And live notices keep coming on web2, each once, whichever pipeline
    // instance projected it.
    let mut live = vec![];
    for n in 0..6 {
        let order = web1.place_simple_order(&user, &format!("LIVE-{n}")).await;
        live.push(order["id"].as_str().unwrap().to_owned());
    }
    let mut received = vec![];
    for _ in 0..live.len() {
        received.push(visible_id(&on_web2.next_order_visible().await));
    }
    received.sort();
    live.sort();
    assert_eq!(received, live);
    assert_eq!(
        web1.count("SELECT count(*) FROM notices").await,
        web1.count("SELECT count(*) FROM orders").await
    );
}

#[tokio::test]
async fn a_relay_without_its_projector_is_refused_at_start() {
    let mut settings = test_settings().await;
    settings.roles = vec![Role::Relay];
    let error = match sightline::startup::Application::build(settings).await {
        Ok(_) => panic!("a relay-only instance must not start"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("relay,projector"), "{error}");
}
