//! The notice log without a global lock: recordings for different users
//! commit in any order, and the hubs still send every notice, each user's in
//! stream order. Driven through the real recording code and the real hub,
//! with transactions held open by hand so the interleavings are forced.

use std::time::Duration;

use futures::future::join_all;
use sightline::visibility::notice_log::{self, NewNotice, ORDER_VISIBLE};
use uuid::Uuid;

use crate::helpers::{SseStream, TestApp, WAIT, spawn_app, visible_id};

/// The next `order-visible` on `stream`: its order id and position.
async fn next_visible(stream: &mut SseStream) -> (String, i64) {
    loop {
        let frame = stream.next_event().await;
        if frame.event.as_deref() == Some("order-visible") {
            let id = frame.id.clone().expect("a notice carries an id");
            let position = id.split('-').next().unwrap().parse().unwrap();
            return (visible_id(&frame), position);
        }
    }
}

/// Waits until a session is waiting on an advisory lock (a recording held
/// at its user's lock).
async fn until_a_recording_waits(app: &TestApp) {
    tokio::time::timeout(WAIT, async {
        while app
            .count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            .await
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no recording came to wait for the held one");
}

/// A recording that took its global number first but commits last (another
/// user's recording commits in between) is sent when it commits: the hub
/// reads by transaction, so the later number it saw first does not make it
/// skip the earlier one. Before, one lock serialised every recording, so the
/// second could not even commit while the first was open.
#[tokio::test]
async fn a_notice_whose_recording_commits_late_is_still_sent() {
    let app = spawn_app().await;
    let (late_user, early_user) = (app.new_user().await, app.new_user().await);
    let (mut late_stream, _) = app.open_events_ready(&late_user).await;
    let (mut early_stream, _) = app.open_events_ready(&early_user).await;
    let (late_order, early_order) = (Uuid::new_v4(), Uuid::new_v4());

    let mut open = app.db.begin().await.unwrap();
    let held = notice_log::record_in(
        &mut open,
        &[NewNotice::placed(app.user_id(&late_user).await, late_order)],
    )
    .await
    .unwrap();
    let early_user_id = app.user_id(&early_user).await;
    let committed = tokio::time::timeout(
        WAIT,
        notice_log::record(&app.db, &[NewNotice::placed(early_user_id, early_order)]),
    )
    .await
    .expect("another user's recording waited for the open one")
    .unwrap();
    assert!(
        held[0].seq < committed[0].seq,
        "the held recording should hold the lower number ({} vs {})",
        held[0].seq,
        committed[0].seq
    );
    // Sent without waiting for the open recording.
    assert_eq!(
        next_visible(&mut early_stream).await.0,
        early_order.to_string()
    );

    open.commit().await.unwrap();
    notice_log::wake_hubs(&app.db).await;
    assert_eq!(
        next_visible(&mut late_stream).await,
        (late_order.to_string(), 1),
        "the notice that committed late never reached its stream"
    );
    // And a stream opened later replays it from the log, once.
    let mut resumed = app.open_events(&late_user, Some("0")).await;
    resumed.next_event().await; // ready
    assert_eq!(next_visible(&mut resumed).await.0, late_order.to_string());
}

/// One user's recordings wait for each other (the user's lock), so the
/// user's positions follow commit order: the second recording, started
/// while the first is open, is numbered after it and sent after it.
#[tokio::test]
async fn one_users_recordings_are_numbered_in_commit_order() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let user_id = app.user_id(&user).await;
    let (mut stream, _) = app.open_events_ready(&user).await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());

    let mut open = app.db.begin().await.unwrap();
    notice_log::record_in(&mut open, &[NewNotice::placed(user_id, first)])
        .await
        .unwrap();
    let db = app.db.clone();
    let waiting = tokio::spawn(async move {
        notice_log::record(&db, &[NewNotice::placed(user_id, second)]).await
    });
    until_a_recording_waits(&app).await;
    assert!(!waiting.is_finished(), "the second recording did not wait");
    open.commit().await.unwrap();
    notice_log::wake_hubs(&app.db).await;
    let recorded = waiting.await.unwrap().unwrap();
    assert_eq!(recorded[0].user_seq, 2);

    assert_eq!(next_visible(&mut stream).await, (first.to_string(), 1));
    assert_eq!(next_visible(&mut stream).await, (second.to_string(), 2));
}

/// Many recordings at once for a few users, each touching several of them:
/// every user's stream is numbered 1, 2, 3, … without a gap or a repeat,
/// its chain is the hash of exactly that history, and a stream open through
/// it all gets every notice once, in order. (Deadlock-free too: the users'
/// locks are always taken in one order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recordings_keep_every_stream_whole_and_in_order() {
    const USERS: usize = 3;
    const RECORDINGS: usize = 40;
    let app = spawn_app().await;
    let mut users = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..USERS {
        let user = app.new_user().await;
        let id = app.user_id(&user).await;
        streams.push(app.open_events_ready(&user).await.0);
        users.push(id);
    }
    // Each recording: one notice for each user, users in a varying order.
    let batches: Vec<Vec<NewNotice>> = (0..RECORDINGS)
        .map(|i| {
            (0..USERS)
                .map(|k| NewNotice::placed(users[(i + k) % USERS], Uuid::new_v4()))
                .collect()
        })
        .collect();
    let results = join_all(batches.iter().map(|batch| {
        let db = app.db.clone();
        async move { notice_log::record(&db, batch).await }
    }))
    .await;
    for result in results {
        assert_eq!(result.unwrap().len(), USERS);
    }

    for (user_id, stream) in users.iter().zip(&mut streams) {
        let rows: Vec<(i64, String, Uuid)> = sqlx::query_as(
            "SELECT user_seq, chain, order_id FROM notices WHERE user_id = $1 ORDER BY user_seq",
        )
        .bind(user_id)
        .fetch_all(&app.db)
        .await
        .unwrap();
        let positions: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(positions, (1..=RECORDINGS as i64).collect::<Vec<_>>());
        let mut chain = "0".to_owned();
        for (_, stored, order_id) in &rows {
            chain = notice_log::chain(&chain, *order_id, 1, ORDER_VISIBLE);
            assert_eq!(stored, &chain, "the chain does not follow the stream");
        }
        for (position, _, order_id) in &rows {
            assert_eq!(
                next_visible(stream).await,
                (order_id.to_string(), *position)
            );
        }
    }
}
