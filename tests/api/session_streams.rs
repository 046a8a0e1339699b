//! A stream lives no longer than its session (auth::session_watch): signing
//! out on one instance ends that session's streams and waiting polls on
//! every instance, with a last `session-ended` event, while the user's other
//! sessions go on; a session's end ends its streams too; and a reconnect
//! after either gets 401. Two web instances share one database here, as in
//! production.

use std::time::Duration;

use reqwest::StatusCode;
use sightline::config::Role;

use crate::helpers::{SseFrame, SseStream, TestApp, TestUser, spawn_app_with, test_settings};

/// Two instances over one database: `a` runs everything, `b` only the web.
async fn two_instances() -> (TestApp, TestApp) {
    let settings = test_settings().await;
    let a = spawn_app_with(settings.clone()).await;
    let mut web = settings;
    web.roles = vec![Role::Web];
    let b = spawn_app_with(web).await;
    (a, b)
}

/// A second session of `user` (another browser), logged in on `app`.
async fn second_session(app: &TestApp, user: &TestUser) -> TestUser {
    let response = app.log_in(&user.username, &user.password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    TestUser {
        username: user.username.clone(),
        password: user.password.clone(),
        token: body["token"].as_str().unwrap().to_owned(),
    }
}

/// The frames up to the end of the stream, which must come within `within`
/// (a session's end is seen within one sweep, 5 s, or at once on sign-out).
async fn until_closed(stream: &mut SseStream, within: Duration) -> Vec<SseFrame> {
    tokio::time::timeout(within, async {
        let mut frames = vec![];
        while let Some(frame) = stream.next_frame().await {
            frames.push(frame);
        }
        frames
    })
    .await
    .expect("the stream was still open")
}

fn session_ended(frames: &[SseFrame]) -> Option<String> {
    frames
        .iter()
        .find(|f| f.event.as_deref() == Some("session-ended"))
        .map(|f| f.json()["reason"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn signing_out_on_one_instance_ends_that_sessions_stream_on_another_and_no_other() {
    let (a, b) = two_instances().await;
    let user = a.new_user().await;
    let other_browser = second_session(&a, &user).await;
    let (mut signed_out, _) = b.open_events_ready(&user).await;
    let (mut stays, _) = b.open_events_ready(&other_browser).await;

    let response = a.delete(&user, "/api/sessions").send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let frames = until_closed(&mut signed_out, Duration::from_secs(3)).await;
    assert_eq!(
        session_ended(&frames).as_deref(),
        Some("signed_out"),
        "{frames:?}"
    );
    // Its reconnect is refused; the other browser's stream still delivers.
    let again = b.get(&user, "/api/events").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let id = a.place_simple_order(&other_browser, "SKU-STAYS").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let notice = stays.next_order_visible().await;
    assert_eq!(notice.json()["id"], id);
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_stream_and_waiting_poll_of_the_user() {
    let (a, b) = two_instances().await;
    let user = a.new_user().await;
    let other_browser = second_session(&a, &user).await;
    let (mut first, _) = b.open_events_ready(&user).await;
    let (mut second, _) = a.open_events_ready(&other_browser).await;
    // A long poll about an order that will not change, waiting on `b`.
    let id = a.place_simple_order(&user, "SKU-POLL").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.wait_until_visible(&user, &id).await;
    let poll = {
        let request = b.get(
            &other_browser,
            &format!("/api/orders/{id}/visibility?wait=30&version=9"),
        );
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    // Let the poll start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let response = a
        .delete(&user, "/api/sessions?all=true")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    for stream in [&mut first, &mut second] {
        let frames = until_closed(stream, Duration::from_secs(3)).await;
        assert_eq!(
            session_ended(&frames).as_deref(),
            Some("signed_out"),
            "{frames:?}"
        );
    }
    let answered = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the poll kept waiting after sign-out everywhere")
        .unwrap();
    crate::helpers::assert_error(answered, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_stream_ends_when_its_session_expires_and_cannot_resume() {
    let (a, b) = two_instances().await;
    let user = a.new_user().await;
    let (mut stream, cursor) = b.open_events_ready(&user).await;
    // The session reaches its end (as idle or absolute expiry leaves it):
    // no request, no NOTIFY; the watch's sweep finds it.
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1")
        .bind(a.user_id(&user).await)
        .execute(&a.db)
        .await
        .unwrap();
    let frames = until_closed(&mut stream, Duration::from_secs(12)).await;
    assert_eq!(
        session_ended(&frames).as_deref(),
        Some("expired"),
        "{frames:?}"
    );
    let resumed = b
        .get(&user, "/api/events")
        .header("Last-Event-ID", cursor)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::UNAUTHORIZED);
}
