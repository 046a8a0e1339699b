//! Every order's journey (`GET /api/orders/{id}/journey`, `sightline
//! journey`, `/status`): its stages are the pipeline's, in the order they
//! happened, and add up to what a client measures from the 201 to the
//! notice — in each bus and each read-store mode; only the owner sees it;
//! bad input gets a 400.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::{ReadStoreKind, Role};

use crate::helpers::nats::{TestStream, nats_settings};
use crate::helpers::{
    TestApp, TestUser, WAIT, assert_error, spawn_app, spawn_app_with, spawn_instance,
    test_settings, visible_id,
};

/// How far the journey's committed → sent may be from the client's 201 →
/// notice: the response's way back after the commit, and the notice's way
/// from being sent to the client, both on loopback.
const TOLERANCE_MS: f64 = 15.0;

fn stage_names(journey: &Value) -> Vec<String> {
    journey["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_owned())
        .collect()
}

fn at(stage: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = stage["at"].as_str().expect("at");
    // RFC 3339 with microseconds, UTC.
    assert!(
        text.ends_with('Z') && text.split('.').nth(1).is_some_and(|f| f.len() == 7),
        "{text}"
    );
    chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

async fn journey(app: &TestApp, user: &TestUser, path: &str) -> (StatusCode, Value) {
    let response = app.get(user, path).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads the order's journey until its notice's `sent` is there (written
/// in batches, a moment after sending).
async fn journey_once_sent(app: &TestApp, user: &TestUser, id: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (status, body) = journey(app, user, &format!("/api/orders/{id}/journey")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if stage_names(&body).last().map(String::as_str) == Some("sent") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the journey never reached `sent`")
}

/// Places an order with the user's stream open, measures 201 → notice, and
/// checks the journey against it. Returns the journey.
async fn placed_and_checked(app: &TestApp, web: &TestApp, expected: &[&str]) -> Value {
    let user = web.new_user().await;
    let (mut events, _) = web.open_events_ready(&user).await;
    let response = web
        .place_order(
            &user,
            &json!({ "items": [{ "sku": "JOURNEY", "quantity": 1, "unit_price_cents": 700 }] }),
        )
        .await;
    let created = Instant::now();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let frame = events.next_order_visible().await;
    let measured = created.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(visible_id(&frame), id);

    let journey = journey_once_sent(web, &user, &id).await;
    assert_eq!(journey["id"], id.as_str());
    assert_eq!(journey["version"], 1);
    assert_eq!(stage_names(&journey), expected, "{journey}");
    let stages = journey["stages"].as_array().unwrap();
    let times: Vec<_> = stages.iter().map(at).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "stages out of time order: {journey}"
    );
    let sent = stages.last().unwrap();
    assert_eq!(sent["via"], "stream", "{journey}");
    // Which instance sent it is for operators (the CLI below), not the owner.
    assert!(sent.get("instance").is_none(), "{journey}");
    // The steps add up to the whole (by construction), and the whole is what
    // the client saw, within the two loopback hops it does not include.
    let total = (*times.last().unwrap() - times[0])
        .num_microseconds()
        .unwrap() as f64
        / 1000.0;
    let steps: f64 = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap() as f64 / 1000.0)
        .sum();
    assert!((steps - total).abs() < 0.01);
    eprintln!("journey committed → sent {total:.1} ms; client 201 → notice {measured:.1} ms");
    assert!(
        (total - measured).abs() <= TOLERANCE_MS,
        "journey committed → sent {total:.1} ms, client 201 → notice {measured:.1} ms: {journey}"
    );
    // The operator's view of the same journey.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["journey", &id])
        .env("DATABASE_URL", &app.settings.database_url)
        .env(
            "READ_STORE",
            match app.settings.read_store {
                ReadStoreKind::Elasticsearch => "elasticsearch",
                ReadStoreKind::Postgres => "postgres",
            },
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sightline journey failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for stage in expected {
        assert!(stdout.contains(stage), "{stage} missing from:\n{stdout}");
    }
    assert!(stdout.contains("total "), "{stdout}");
    assert!(stdout.contains("by stream from "), "{stdout}");
    journey
}

const TWO_STORES: [&str; 8] = [
    "committed",
    "claimed",
    "published",
    "delivered_to_projector",
    "indexed",
    "searchable",
    "noticed",
    "sent",
];
const SAME_DATABASE: [&str; 4] = ["committed", "searchable", "noticed", "sent"];

/// The in-process bus, in whichever read-store mode the run uses.
#[tokio::test]
async fn a_journey_has_every_stage_in_order_and_adds_up_to_201_to_notice() {
    let app = spawn_app().await;
    let expected: &[&str] = match app.settings.read_store {
        ReadStoreKind::Elasticsearch => &TWO_STORES,
        ReadStoreKind::Postgres => &SAME_DATABASE,
    };
    placed_and_checked(&app, &app, expected).await;
}

/// NATS between the relay (with the web) and a projector instance.
#[tokio::test]
async fn a_journey_over_nats_has_every_stage_in_order_and_adds_up_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let with_roles = |roles: Vec<Role>| {
        let mut s = settings.clone();
        s.roles = roles;
        s
    };
    let web = spawn_app_with(with_roles(vec![Role::Web, Role::Relay])).await;
    let _projector = spawn_instance(with_roles(vec![Role::Projector])).await;
    let journey = placed_and_checked(&web, &web, &TWO_STORES).await;
    // The bus hop is real: handed over (PubAck) before the projector had it.
    let stages = journey["stages"].as_array().unwrap();
    assert!(at(&stages[2]) <= at(&stages[3]), "{journey}");
}

#[tokio::test]
async fn only_the_owner_sees_a_journey_and_bad_input_is_a_400() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let other = app.new_user().await;
    let order = app.place_simple_order(&owner, "MINE").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_visible(&owner, &id).await;

    // Another user cannot tell it from an order that does not exist.
    let theirs = app
        .get(&other, &format!("/api/orders/{id}/journey"))
        .send()
        .await
        .unwrap();
    let theirs = assert_error(theirs, StatusCode::NOT_FOUND, "not_found").await;
    let nobody = app
        .get(
            &other,
            &format!("/api/orders/{}/journey", uuid::Uuid::new_v4()),
        )
        .send()
        .await
        .unwrap();
    let nobody = assert_error(nobody, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(theirs, nobody);
    // Without a session: 401, as every /api/orders route.
    let anonymous = reqwest::Client::new()
        .get(app.url(&format!("/api/orders/{id}/journey")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    for bad in [
        "version=0",
        "version=-1",
        "version=two",
        "version=99999999999",
    ] {
        let response = app
            .get(&owner, &format!("/api/orders/{id}/journey?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].is_string() && body["code"].is_string(),
            "{bad}: {body}"
        );
    }
    // A malformed id names nothing, as on every /api/orders/{id} route.
    let bad_id = app
        .get(&owner, "/api/orders/not-a-uuid/journey")
        .send()
        .await
        .unwrap();
    assert_error(bad_id, StatusCode::NOT_FOUND, "not_found").await;

    // A version that does not exist (yet): 404; an earlier one: its own.
    let (status, _) = journey(&app, &owner, &format!("/api/orders/{id}/journey?version=2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.cancel_order(&owner, &id).await.status(), StatusCode::OK);
    let (_, latest) = tokio::time::timeout(WAIT, async {
        loop {
            let (status, body) = journey(&app, &owner, &format!("/api/orders/{id}/journey")).await;
            if status == StatusCode::OK
                && body["version"] == 2
                && stage_names(&body).contains(&"noticed".to_owned())
            {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the cancel's journey never reached its notice");
    let (status, first) =
        journey(&app, &owner, &format!("/api/orders/{id}/journey?version=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["version"], 1);
    assert!(at(&first["stages"][0]) < at(&latest["stages"][0]));
    // Still the owner's only.
    let (status, _) = journey(&app, &other, &format!("/api/orders/{id}/journey?version=1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Operators see the slowest journeys of the last minutes on `/status`.
#[tokio::test]
async fn status_lists_the_slowest_journeys() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "SLOW").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_visible(&user, &id).await;
    // Another test's orders may be slower: look for this one among the
    // few listed, or for the list itself.
    let page = tokio::time::timeout(WAIT, async {
        loop {
            let page = app.text_of("/status").await;
            if page.contains("Slowest journeys") && page.contains("Longest step") {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("/status never listed a journey");
    assert!(page.contains("noticed") || page.contains("sent"), "{page}");
}
