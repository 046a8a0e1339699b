//! A background task that dies is never silent (issue 22): the instance
//! turns unready naming the task, stops, and `run_until_stopped` returns an
//! error naming it (which `main` turns into a non-zero exit). The tasks are
//! made to panic through `supervision::TaskFaults`, as a bug would.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sightline::config::ReadStoreKind;

use crate::helpers::{TestApp, WAIT, spawn_app, test_read_store};

/// Polls `/readyz` until it answers 503; returns its body.
async fn until_unready(app: &TestApp) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = app.http.get(app.url("/readyz")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return response.json().await.unwrap();
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed ready after a background task died"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_dying_task_makes_the_instance_unready_and_exit_with_it(task: &'static str) {
    let app = spawn_app().await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert!(body.get("failed_task").is_none(), "{body}");

    app.task_faults.panic(task);

    let body = until_unready(&app).await;
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(body["postgres"], "up", "PostgreSQL is fine: {body}");
    assert_eq!(body["failed_task"]["name"], task, "{body}");
    let error = body["failed_task"]["error"].as_str().unwrap();
    assert!(error.contains("panicked"), "{error}");

    let exit = app.stopped(Duration::from_secs(30)).await;
    let error = exit.expect_err("an instance whose task died must stop with an error");
    assert!(error.contains(task), "the error names the task: {error}");
    // Stopped: nothing listens any more.
    assert!(app.http.get(app.url("/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_panicking_notice_hub_makes_the_instance_unready_and_stop_with_an_error() {
    a_dying_task_makes_the_instance_unready_and_exit_with_it("notice hub").await;
}

#[tokio::test]
async fn a_panicking_lag_monitor_makes_the_instance_unready_and_stop_with_an_error() {
    a_dying_task_makes_the_instance_unready_and_exit_with_it("lag monitor").await;
}

#[tokio::test]
async fn a_panicking_relay_makes_the_instance_unready_and_stop_with_an_error() {
    // The same-database mode runs no relay: the relay's place is taken by
    // the order's own transaction there.
    let task = match test_read_store() {
        ReadStoreKind::Elasticsearch => "relay",
        ReadStoreKind::Postgres => "relay waker",
    };
    a_dying_task_makes_the_instance_unready_and_exit_with_it(task).await;
}

#[tokio::test]
async fn a_stop_asked_for_is_not_a_death() {
    let app = spawn_app().await;
    app.stop();
    assert_eq!(app.stopped(Duration::from_secs(30)).await, Ok(()));
}
