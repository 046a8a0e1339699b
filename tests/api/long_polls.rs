//! `GET /api/orders/{id}/visibility?wait=N&version=V`: a long poll about a
//! version waits for that version, whether the hub's memory or the log
//! answers it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sightline::config::Role;

use crate::helpers::{TestApp, TestUser, WAIT, spawn_app_with, spawn_instance, test_settings};

async fn poll(app: &TestApp, user: &TestUser, path: String) -> Value {
    let response = app.get(user, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// After a cancel, `wait=30&version=2` used to answer at once with version 1
/// (from the hub's memory, and from the log on an instance that had not seen
/// the order). Here version 2's notice is held back while both polls are
/// asked; they must still be waiting when it is released, and answer with it.
#[tokio::test]
async fn a_long_poll_about_a_version_waits_for_that_version_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let settings = test_settings().await;
    let app = spawn_app_with(settings.clone()).await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "CANCEL-ME").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_visible(&user, &id).await;
    // A web instance started now has not seen the order: the log answers there.
    let mut web = settings.clone();
    web.roles = vec![Role::Web];
    let fresh = spawn_instance(web).await;

    let hold = app.hold_notices().await;
    let cancelled = app.cancel_order(&user, &id).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    app.wait_until_projector_blocked().await;

    let path = format!("/api/orders/{id}/visibility?wait=30&version=2");
    let from_memory = tokio::spawn({
        let (url, token) = (app.url(&path), user.token.clone());
        async move { get_json(&url, &token).await }
    });
    let from_log = tokio::spawn({
        let (url, token) = (fresh.url(&path), user.token.clone());
        async move { get_json(&url, &token).await }
    });
    // Without a version, the answer is immediate: version 1 is visible.
    let now = poll(&app, &user, format!("/api/orders/{id}/visibility?wait=30")).await;
    assert_eq!(
        (now["visible"].clone(), now["version"].clone()),
        (true.into(), 1.into())
    );

    // Neither poll may answer while version 2's notice is held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !from_memory.is_finished(),
        "answered before version 2 was visible: {:?}",
        from_memory.await
    );
    assert!(
        !from_log.is_finished(),
        "answered from the log before version 2 was visible: {:?}",
        from_log.await
    );
    hold.release().await;
    for poll in [from_memory, from_log] {
        let body = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
        assert_eq!(body["visible"], true, "{body}");
        assert_eq!(body["version"], 2, "{body}");
        assert_eq!(body["status"], "cancelled", "{body}");
    }
}

/// A long poll that runs out answers with the state then (the visible
/// version 1), and a version below 1 is a bad request.
#[tokio::test]
async fn a_long_poll_that_runs_out_answers_with_the_current_state() {
    let settings = test_settings().await;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let order = app.place_simple_order(&user, "WAITED").await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_until_visible(&user, &id).await;
    let started = std::time::Instant::now();
    let body = poll(
        &app,
        &user,
        format!("/api/orders/{id}/visibility?wait=1&version=2"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(body["visible"], true, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    // It ran out: it waited its second for version 2, and not much more.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "a poll with wait=1 answered after {took:?}"
    );
    let response = app
        .get(&user, &format!("/api/orders/{id}/visibility?version=0"))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(response, StatusCode::BAD_REQUEST, "bad_query").await;
}

async fn get_json(url: &str, token: &str) -> Value {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}
