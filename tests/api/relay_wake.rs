//! Writes wake the relay after they are answered, not from inside their
//! transactions (`outbox::wake`): with the relay's safety poll an hour away,
//! orders placed and cancelled still become visible, each write's notice
//! arriving on the owner's stream.

use crate::helpers::{WAIT, spawn_app_with, test_settings, visible_id};

#[tokio::test]
async fn writes_wake_the_relay_without_its_safety_poll() {
    let mut settings = test_settings().await;
    // Only a NOTIFY can wake the relay now.
    settings.relay_poll_ms = 3_600_000;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (mut stream, _) = app.open_events_ready(&user).await;

    for round in 0..3 {
        let order = app
            .place_simple_order(&user, &format!("WAKE-{round}"))
            .await;
        let id = order["id"].as_str().unwrap();
        let frame = tokio::time::timeout(WAIT, stream.next_order_visible())
            .await
            .unwrap_or_else(|_| panic!("order {round} not visible within {WAIT:?}"));
        assert_eq!(visible_id(&frame), id);
    }
    let order = app.place_simple_order(&user, "WAKE-CANCEL").await;
    let id = order["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(WAIT, stream.next_order_visible())
        .await
        .expect("placed order visible");
    let cancelled = app.cancel_order(&user, &id).await;
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    let frame = tokio::time::timeout(WAIT, stream.next_order_visible())
        .await
        .expect("the cancellation's notice within the wait");
    assert_eq!(visible_id(&frame), id);
    assert_eq!(frame.json()["status"], "cancelled", "{frame:?}");
}
