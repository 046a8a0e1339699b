//! Resuming the event stream at its edges: a client cut off after any event,
//! a replay far longer than memory, cursors the log cannot vouch for, the
//! privacy of stream ids, and retention.

use serde_json::Value;
use sightline::config::ReadStoreKind;
use sightline::operations::retention;
use sightline::visibility::notice_log::{self, NewNotice};
use uuid::Uuid;

use crate::binary::cli;
use crate::events_api::position;
use crate::helpers::{
    SseFrame, SseStream, TestApp, TestUser, spawn_app, spawn_instance, visible_id,
};

/// A client as `EventSource` lives: it adopts every id it is given (`ready`'s
/// too) the moment the event is dispatched, and reconnects with the last one.
struct Client {
    last_id: Option<String>,
    notices: Vec<String>,
}

impl Client {
    /// Opens a connection with the client's last id and checks the ids on it
    /// strictly increase; returns the stream and the opening event.
    async fn connect(&mut self, app: &TestApp, user: &TestUser) -> (SseStream, SseFrame) {
        let mut stream = app.open_events(user, self.last_id.as_deref()).await;
        let opening = stream.next_event().await;
        assert_eq!(
            opening.event.as_deref(),
            Some("ready"),
            "a valid cursor {:?} got {opening:?}",
            self.last_id
        );
        self.adopt(&opening);
        (stream, opening)
    }

    fn adopt(&mut self, frame: &SseFrame) {
        if let Some(id) = &frame.id {
            if let Some(last) = &self.last_id {
                assert!(
                    position(id) >= position(last),
                    "id went back from {last} to {id}"
                );
            }
            self.last_id = Some(id.clone());
        }
        if frame.event.as_deref() == Some("order-visible") {
            self.notices.push(visible_id(frame));
        }
    }
}

/// The order ids of a user's notices, in stream order.
async fn stream_of(app: &TestApp, user: &TestUser) -> Vec<String> {
    sqlx::query_scalar("SELECT order_id::text FROM notices WHERE user_id = $1 ORDER BY user_seq")
        .bind(app.user_id(user).await)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

async fn place_visible(app: &TestApp, user: &TestUser, count: usize) -> Vec<String> {
    let mut ids = vec![];
    for n in 0..count {
        let order = app.place_simple_order(user, &format!("AWAY-{n}")).await;
        let id = order["id"].as_str().unwrap().to_owned();
        app.wait_until_visible(user, &id).await;
        ids.push(id);
    }
    ids
}

/// Replays N missed notices, cuts the connection after each k = 0..N events
/// (k = 0: right after `ready`), reconnects with the last id the client saw:
/// over both connections the client has every notice exactly once, in order.
/// `ready` carrying the head made a cut right after it lose the replay.
#[tokio::test]
async fn a_client_cut_off_after_any_event_of_a_replay_gets_every_notice_once_in_order() {
    const N: usize = 4;
    let app = spawn_app().await;
    for k in 0..=N {
        let user = app.new_user().await;
        let (first, ready) = app.open_events_ready(&user).await;
        drop(first);
        let mut client = Client {
            last_id: Some(ready),
            notices: vec![],
        };
        place_visible(&app, &user, N).await;
        let missed = stream_of(&app, &user).await;

        let (mut stream, _) = client.connect(&app, &user).await;
        for _ in 0..k {
            let frame = stream.next_order_visible().await;
            client.adopt(&frame);
        }
        drop(stream);

        let (mut stream, _) = client.connect(&app, &user).await;
        // A live sentinel: once it arrives, nothing replayed is still on its way.
        let sentinel = app.place_simple_order(&user, "SENTINEL").await;
        loop {
            let frame = stream.next_order_visible().await;
            client.adopt(&frame);
            if visible_id(&frame) == sentinel["id"].as_str().unwrap() {
                break;
            }
        }
        client.notices.pop();
        assert_eq!(
            client.notices, missed,
            "cut after {k} events: every missed notice, once, in order"
        );
    }
}

/// `Last-Event-ID: 0` on 200,000 notices: replayed page by page from the
/// log (a stream never holds more than a page), every one once, in order.
/// A client cut off meanwhile (the hub's buffer overflowing as it catches
/// up) reconnects with its last id, as `EventSource` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_200000_notices_streams_them_all_in_order() {
    const TOTAL: usize = 200_000;
    let app = spawn_app().await;
    let user = app.new_user().await;
    let user_id = app.user_id(&user).await;
    let orders: Vec<Uuid> = (0..TOTAL).map(|_| Uuid::new_v4()).collect();
    for chunk in orders.chunks(20_000) {
        let batch: Vec<NewNotice> = chunk
            .iter()
            .map(|&order_id| NewNotice::placed(user_id, order_id))
            .collect();
        assert_eq!(
            notice_log::record(&app.db, &batch).await.unwrap().len(),
            chunk.len()
        );
    }

    let mut client = Client {
        last_id: Some("0".to_owned()),
        notices: Vec::with_capacity(TOTAL),
    };
    let mut connections = 0;
    while client.notices.len() < TOTAL {
        connections += 1;
        assert!(connections < 50, "the replay makes no progress");
        let (mut stream, _) = client.connect(&app, &user).await;
        while client.notices.len() < TOTAL {
            match stream.next_frame().await {
                Some(frame) if frame.is_dispatched() => client.adopt(&frame),
                Some(_) => {}
                None => break,
            }
        }
    }
    let expected: Vec<String> = orders.iter().map(Uuid::to_string).collect();
    assert!(
        client.notices == expected,
        "not every notice once, in order"
    );
}

/// Opens a stream resuming from `cursor` and returns its opening event.
async fn opening(app: &TestApp, user: &TestUser, cursor: &str) -> (SseStream, SseFrame) {
    let mut stream = app.open_events(user, Some(cursor)).await;
    let frame = stream.next_event().await;
    (stream, frame)
}

async fn assert_reset(app: &TestApp, user: &TestUser, cursor: &str, reason: &str) {
    let (_, frame) = opening(app, user, cursor).await;
    assert_eq!(frame.event.as_deref(), Some("reset"), "{cursor}: {frame:?}");
    assert_eq!(frame.json()["reason"], reason, "{cursor}: {frame:?}");
    // A fresh cursor to continue from: the user's head.
    let head: String = sqlx::query_scalar(
        "SELECT last_seq || '-' || last_chain FROM notice_streams WHERE user_id = $1",
    )
    .bind(app.user_id(user).await)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(frame.id.as_deref(), Some(head.as_str()));
    assert_eq!(frame.json()["cursor"], Value::String(head));
}

/// The ids of every notice of a user's stream, in order.
async fn cursors_of(app: &TestApp, user: &TestUser) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT user_seq || '-' || chain FROM notices WHERE user_id = $1 ORDER BY user_seq",
    )
    .bind(app.user_id(user).await)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// A cursor the log cannot vouch for gets `reset`, never a partial replay:
/// older than the retention bound, from the future, from a history the log
/// no longer has (a restored backup), or from another database.
#[tokio::test]
async fn cursors_the_log_cannot_vouch_for_get_reset() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let user_id = app.user_id(&user).await;
    let ids = place_visible(&app, &user, 3).await;
    let cursors = cursors_of(&app, &user).await;

    // Older than the retention bound (30 days by default): the first two
    // notices were recorded 31 days ago. A client whose first missed notice
    // is that old gets reset; one that missed only the recent one resumes.
    sqlx::query(
        "UPDATE notices SET visible_at = now() - interval '31 days'
         WHERE user_id = $1 AND user_seq <= 2",
    )
    .bind(user_id)
    .execute(&app.db)
    .await
    .unwrap();
    assert_reset(&app, &user, "0", "too_old").await;
    assert_reset(&app, &user, &cursors[0], "too_old").await;
    let (mut stream, ready) = opening(&app, &user, &cursors[1]).await;
    assert_eq!(ready.event.as_deref(), Some("ready"));
    assert_eq!(ready.id.as_deref(), Some(cursors[1].as_str()));
    assert_eq!(visible_id(&stream.next_order_visible().await), ids[2]);

    // From the future, or a position with another history's chain.
    let head = position(&cursors[2]);
    assert_reset(&app, &user, &format!("{}-0123abcd", head + 5), "unknown").await;
    assert_reset(&app, &user, &format!("{head}-0123abcd"), "unknown").await;
    assert_reset(&app, &user, &format!("{}-0123abcd", head - 1), "unknown").await;

    // A backup taken after the second notice is restored: the third is gone,
    // and new orders get positions 3, 4 the client's cursor also names.
    sqlx::query("DELETE FROM notices WHERE user_id = $1 AND user_seq = 3")
        .bind(user_id)
        .execute(&app.db)
        .await
        .unwrap();
    let second = cursors[1].split_once('-').unwrap().1.to_owned();
    sqlx::query("UPDATE notice_streams SET last_seq = 2, last_chain = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(&second)
        .execute(&app.db)
        .await
        .unwrap();
    place_visible(&app, &user, 2).await;
    assert_eq!(position(&cursors_of(&app, &user).await[3]), 4);
    // The client saw the lost third notice: its cursor names a history this
    // log does not hold. Replaying "after 3" would skip the new third.
    assert_reset(&app, &user, &cursors[2], "unknown").await;

    // Another database: a cursor another deployment gave a user there.
    let other = spawn_app().await;
    let stranger = other.new_user().await;
    place_visible(&other, &stranger, 2).await;
    let foreign = cursors_of(&other, &stranger).await[1].clone();
    assert_reset(&app, &user, &foreign, "unknown").await;
}

/// A user's ids are positions in their own stream: nothing in them moves
/// when other users' orders become visible.
#[tokio::test]
async fn stream_ids_reveal_nothing_of_other_users() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let (mut alices, _) = app.open_events_ready(&alice).await;
    app.place_simple_order(&alice, "ALICE-1").await;
    let first = alices.next_order_visible().await.id.unwrap();

    place_visible(&app, &bob, 3).await;

    let (_, head) = app.open_events_ready(&alice).await;
    assert_eq!(head, first, "Bob's orders moved Alice's head");
    app.place_simple_order(&alice, "ALICE-2").await;
    let second = alices.next_order_visible().await.id.unwrap();
    assert_eq!(position(&second), position(&first) + 1);
}

/// `sightline prune`'s work: notices older than the bound, expired sessions,
/// and inbox rows of events that cannot come again go; a resume inside the
/// bound still replays completely, one outside it gets `reset`.
#[tokio::test]
async fn pruning_never_breaks_a_resume_inside_the_retention_bound() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let user_id = app.user_id(&user).await;
    let ids = place_visible(&app, &user, 4).await;
    let cursors = cursors_of(&app, &user).await;
    // The first two orders are 40 days old: notices, events, inbox rows.
    let old: Vec<Uuid> = ids[..2].iter().map(|id| id.parse().unwrap()).collect();
    for sql in [
        "UPDATE notices SET visible_at = now() - interval '40 days' WHERE order_id = ANY($1)",
        "UPDATE outbox SET published_at = now() - interval '40 days',
                           created_at = now() - interval '40 days' WHERE aggregate_id = ANY($1)",
        "UPDATE projector_inbox SET applied_at = now() - interval '40 days'
          WHERE event_id IN (SELECT event_id FROM outbox WHERE aggregate_id = ANY($1))",
    ] {
        sqlx::query(sql).bind(&old).execute(&app.db).await.unwrap();
    }
    // The second one's event is parked (unpublished): `outbox retry` may
    // deliver it again, so its inbox row must stay or it would count twice.
    sqlx::query("UPDATE outbox SET published_at = NULL, parked = true WHERE aggregate_id = $1")
        .bind(old[1])
        .execute(&app.db)
        .await
        .unwrap();
    let parked_event: Uuid =
        sqlx::query_scalar("SELECT event_id FROM outbox WHERE aggregate_id = $1")
            .bind(old[1])
            .fetch_one(&app.db)
            .await
            .unwrap();
    // Another session of the user, expired.
    let expired = app.new_user().await;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 hour' WHERE user_id = $1")
        .bind(app.user_id(&expired).await)
        .execute(&app.db)
        .await
        .unwrap();

    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    let plan = retention::plan(&app.db, cutoff).await.unwrap();
    assert_eq!(
        plan,
        retention::PruneReport {
            notices: 2,
            journeys: 2,
            sessions: 1,
            inbox: 1
        }
    );
    // The subcommand (30 days by default): counts without --yes, then deletes.
    let counted = prune_cli(&app, &[]).await;
    assert!(
        counted.contains("would delete 2 notices")
            && counted.contains("the journeys of 2 events")
            && counted.contains(", 1 expired sessions, 1 inbox"),
        "{counted}"
    );
    assert_eq!(cursors_of(&app, &user).await, cursors);
    let pruned = prune_cli(&app, &["--yes", "--batch-size", "1"]).await;
    assert!(
        pruned.contains("deleted 2 notices")
            && pruned.contains("the journeys of 2 events")
            && pruned.contains(", 1 expired sessions, 1 inbox"),
        "{pruned}"
    );
    // Their journeys went with them (the owner gets 404, as for an order
    // that is not theirs); the younger orders' stay.
    for (id, kept) in [(&ids[0], false), (&ids[1], false), (&ids[2], true)] {
        let status = app
            .get(&user, &format!("/api/orders/{id}/journey"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), if kept { 200 } else { 404 }, "order {id}");
    }
    assert_eq!(cursors_of(&app, &user).await, cursors[2..].to_vec());
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM projector_inbox WHERE event_id = '{parked_event}'"
        ))
        .await,
        1,
        "the inbox row of an event that may be delivered again was pruned"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE expires_at < now()")
            .await,
        0
    );

    // A pruned order is still visible, also where the hub never saw it
    // (an instance started now answers from the database); one whose event
    // is parked is not.
    let mut web = app.settings.clone();
    web.roles = vec![sightline::config::Role::Web];
    let fresh = spawn_instance(web).await;
    let polled: Value = fresh
        .get(&user, &format!("/api/orders/{}/visibility", ids[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(polled["visible"], true, "{polled}");
    assert_eq!(polled["version"], 1, "{polled}");
    // (The same-database read model lists every committed order, so there
    // a parked event hides nothing.)
    let parked_hides = crate::helpers::test_read_store() == ReadStoreKind::Elasticsearch;
    assert_eq!(fresh.visibility(&user, &ids[1]).await, !parked_hides);
    assert!(fresh.visibility(&user, &ids[2]).await);

    // Inside the bound: the client last saw the second notice (pruned), the
    // third is recent. It resumes and gets the third and fourth.
    let (mut stream, ready) = opening(&app, &user, &cursors[1]).await;
    assert_eq!(ready.event.as_deref(), Some("ready"), "{ready:?}");
    assert_eq!(visible_id(&stream.next_order_visible().await), ids[2]);
    assert_eq!(visible_id(&stream.next_order_visible().await), ids[3]);
    let (mut stream, _) = opening(&app, &user, &cursors[2]).await;
    assert_eq!(visible_id(&stream.next_order_visible().await), ids[3]);
    // Outside: it missed a notice that is gone.
    assert_reset(&app, &user, &cursors[0], "too_old").await;
    assert_reset(&app, &user, "0", "too_old").await;
    // The head survives pruning everything.
    sqlx::query("UPDATE notices SET visible_at = now() - interval '40 days' WHERE user_id = $1")
        .bind(user_id)
        .execute(&app.db)
        .await
        .unwrap();
    retention::prune(&app.db, cutoff, 1000).await.unwrap();
    let (_, head) = app.open_events_ready(&user).await;
    assert_eq!(head, cursors[3]);
    let (_, ready) = opening(&app, &user, &cursors[3]).await;
    assert_eq!(ready.event.as_deref(), Some("ready"), "{ready:?}");
}

/// Runs `sightline prune <args>` against the test's database; returns stdout.
async fn prune_cli(app: &TestApp, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(&app.settings, &[&["prune"], args].concat()).await;
    assert!(ok, "sightline prune {args:?} failed: {stderr}\n{stdout}");
    stdout
}
