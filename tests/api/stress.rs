//! Never skip, never stall: many writers commit out of outbox-id order —
//! fast ones through the API, slow ones that hold their transaction open for
//! seconds, some that roll back — and every committed order still becomes
//! searchable exactly once, nothing rolled back shows anywhere, each SSE stream
//! carries each of its notices once in cursor order, and orders committed
//! while a slow transaction is open do not wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;
use uuid::Uuid;

use crate::direct_writes::{Owner, insert_order, one_item};
use crate::helpers::{SseFrame, SseStream, TestApp, TestUser, spawn_app_with, test_settings};

const FAST_WRITERS: usize = 8;
/// Each fast writer places at least this many orders, and goes on until the
/// slow writers are done (so there are always commits while one is open).
const FAST_ORDERS_EACH: usize = 25;
const SLOW_WRITERS: usize = 3;
const SLOW_TRANSACTIONS_EACH: usize = 2;
const ROLLBACK_WRITERS: usize = 2;
const ROLLBACKS_EACH: usize = 5;
/// Bound on every wait for the pipeline (generous: the machine is shared).
const DEADLINE: Duration = Duration::from_secs(180);

/// What one slow transaction saw.
struct SlowRecord {
    order_id: Uuid,
    /// Fast orders acknowledged (committed) after its insert and before it committed.
    committed_while_open: Vec<Uuid>,
    /// The notice head and the database clock right before its COMMIT.
    head_before_commit: i64,
    clock_before_commit: DateTime<Utc>,
}

/// Every dispatched SSE frame of one stream, collected in the background.
struct Collector {
    frames: Arc<Mutex<Vec<SseFrame>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn start(mut stream: SseStream) -> Self {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(frame) = stream.next_frame().await {
                if frame.is_dispatched() {
                    sink.lock().unwrap().push(frame);
                }
            }
        });
        Collector { frames, task }
    }

    fn ids(&self) -> Vec<String> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.json()["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn owner_of(app: &TestApp, user: &TestUser) -> Owner {
    Owner {
        id: app.user_id(user).await,
        username: user.username.clone(),
    }
}

/// Polls until every order in `ids` has its `order-visible` notice.
async fn all_visible(db: &PgPool, ids: &[Uuid]) -> bool {
    let visible: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT order_id) FROM notices
         WHERE kind = 'order-visible' AND order_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(db)
    .await
    .unwrap();
    visible == ids.len() as i64
}

async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every id of the user's list, following `next_cursor` to the end.
async fn listed_ids(app: &TestApp, user: &TestUser) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/api/orders?limit=100".to_owned();
    loop {
        let (source, page) = app.list(user, &path).await;
        assert_eq!(source, "read-model");
        ids.extend(crate::helpers::order_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/orders?limit=100&cursor={cursor}"),
            None => return ids,
        }
    }
}

/// How many documents the read model holds for `query` (Elasticsearch `_count`).
async fn es_count(app: &TestApp, query: Value) -> i64 {
    let url = format!(
        "{}/{}orders/_count",
        app.settings.elasticsearch_url.trim_end_matches('/'),
        app.settings.index_prefix
    );
    let response = reqwest::Client::new()
        .post(url)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["count"].as_i64().unwrap()
}

#[tokio::test]
async fn concurrent_slow_and_rolled_back_writers_skip_nothing_and_stall_nothing_needs_elasticsearch()
 {
    crate::helpers::require_elasticsearch();
    // Several relay batches in flight at once, so they race each other too.
    let mut settings = test_settings().await;
    settings.relay_concurrency = 4;
    // The fast writers write like scripts (~15 orders/s each): no write limit.
    settings.write_burst = 0;
    let app = Arc::new(spawn_app_with(settings).await);
    // Direct writers hold connections for seconds: a pool of their own.
    let direct = PgPoolOptions::new()
        .max_connections(16)
        .connect(&app.settings.database_url)
        .await
        .unwrap();

    let mut users = Vec::new();
    for _ in 0..FAST_WRITERS + SLOW_WRITERS + ROLLBACK_WRITERS {
        users.push(app.new_user().await);
    }
    let fast_users = &users[..FAST_WRITERS];
    let slow_users = &users[FAST_WRITERS..FAST_WRITERS + SLOW_WRITERS];
    let rollback_users = &users[FAST_WRITERS + SLOW_WRITERS..];

    // One stream per user, opened before any load.
    let mut collectors = Vec::new();
    for user in &users {
        let (stream, _) = app.open_events_ready(user).await;
        collectors.push(Collector::start(stream));
    }

    // Fast orders, in the order their 201 came back.
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let slow_done = Arc::new(AtomicBool::new(false));

    let mut fast_tasks = Vec::new();
    for (w, user) in fast_users.iter().cloned().enumerate() {
        let (app, acked, slow_done) = (app.clone(), acked.clone(), slow_done.clone());
        fast_tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while mine.len() < FAST_ORDERS_EACH || !slow_done.load(Ordering::SeqCst) {
                let id = Uuid::new_v4();
                let response = app
                    .place_order(
                        &user,
                        &json!({ "id": id, "items": [
                            { "sku": format!("FAST-{w}-{}", mine.len()), "quantity": 1, "unit_price_cents": 100 }
                        ]}),
                    )
                    .await;
                assert_eq!(response.status(), StatusCode::CREATED);
                acked.lock().unwrap().push(id);
                mine.push(id);
                // Pacing, so the run stays a few hundred orders long.
                let pause = rand::rng().random_range(20..100);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            mine
        }));
    }

    let mut slow_tasks = Vec::new();
    for (s, user) in slow_users.iter().enumerate() {
        let owner = owner_of(&app, user).await;
        let (direct, acked) = (direct.clone(), acked.clone());
        slow_tasks.push(tokio::spawn(async move {
            // Staggered, so slow transactions overlap each other and the fast load.
            tokio::time::sleep(Duration::from_millis(300 * s as u64)).await;
            let mut records = Vec::new();
            for n in 0..SLOW_TRANSACTIONS_EACH {
                let order_id = Uuid::new_v4();
                let mut tx = direct.begin().await.unwrap();
                insert_order(
                    &mut tx,
                    &owner,
                    order_id,
                    one_item(&format!("SLOW-{s}-{n}")),
                    2,
                )
                .await
                .unwrap();
                let opened_at = acked.lock().unwrap().len();
                // The transaction stays open for 2–3 s (this is the load, not a wait).
                let hold = rand::rng().random_range(2000..3000);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                let count = acked.lock().unwrap().len();
                let committed_while_open = if count > opened_at {
                    acked.lock().unwrap()[opened_at..count].to_vec()
                } else {
                    // On a very busy machine: wait for the first fast commit.
                    wait_until("a fast order committed while a slow one is open", || {
                        let acked = acked.clone();
                        async move { acked.lock().unwrap().len() > opened_at }
                    })
                    .await;
                    let acked = acked.lock().unwrap();
                    acked[opened_at..].to_vec()
                };
                // Orders committed after this one's insert must become
                // visible while it is still open: no stall behind it.
                wait_until(
                    "orders committed while a slow transaction is open become visible \
                     before it commits (the pipeline stalls behind open transactions)",
                    || all_visible(&direct, &committed_while_open),
                )
                .await;
                let (head_before_commit, clock_before_commit): (i64, DateTime<Utc>) =
                    sqlx::query_as("SELECT coalesce(max(seq), 0), clock_timestamp() FROM notices")
                        .fetch_one(&direct)
                        .await
                        .unwrap();
                tx.commit().await.unwrap();
                records.push(SlowRecord {
                    order_id,
                    committed_while_open,
                    head_before_commit,
                    clock_before_commit,
                });
            }
            records
        }));
    }

    let mut rollback_tasks = Vec::new();
    for (r, user) in rollback_users.iter().enumerate() {
        let owner = owner_of(&app, user).await;
        let direct = direct.clone();
        rollback_tasks.push(tokio::spawn(async move {
            let mut rolled_back = Vec::new();
            for n in 0..ROLLBACKS_EACH {
                let order_id = Uuid::new_v4();
                let mut tx = direct.begin().await.unwrap();
                insert_order(
                    &mut tx,
                    &owner,
                    order_id,
                    one_item(&format!("ROLLBACK-{r}-{n}")),
                    2,
                )
                .await
                .unwrap();
                let hold = rand::rng().random_range(200..2500);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.rollback().await.unwrap();
                rolled_back.push(order_id);
            }
            rolled_back
        }));
    }

    // Join the slow writers first (whatever their outcome), then let the fast
    // ones stop, so a failing slow writer cannot leave the fast ones running.
    let mut slow_results = Vec::new();
    for task in slow_tasks {
        slow_results.push(task.await);
    }
    slow_done.store(true, Ordering::SeqCst);
    let mut fast_orders: Vec<Vec<Uuid>> = Vec::new();
    for task in fast_tasks {
        fast_orders.push(task.await.expect("a fast writer failed"));
    }
    let slow_records: Vec<Vec<SlowRecord>> = slow_results
        .into_iter()
        .map(|r| r.expect("a slow writer failed"))
        .collect();
    // Each rolled-back order with the user who wrote it.
    let mut rolled_back_by: Vec<(Uuid, &TestUser)> = Vec::new();
    for (task, user) in rollback_tasks.into_iter().zip(rollback_users) {
        let ids = task.await.expect("a rolling-back writer failed");
        rolled_back_by.extend(ids.into_iter().map(|id| (id, user)));
    }
    assert_eq!(rolled_back_by.len(), ROLLBACK_WRITERS * ROLLBACKS_EACH);
    let rolled_back: HashSet<String> = rolled_back_by
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();

    // What each user committed.
    let mut expected: Vec<HashSet<String>> = vec![HashSet::new(); users.len()];
    for (w, ids) in fast_orders.iter().enumerate() {
        expected[w].extend(ids.iter().map(Uuid::to_string));
    }
    for (s, records) in slow_records.iter().enumerate() {
        expected[FAST_WRITERS + s].extend(records.iter().map(|r| r.order_id.to_string()));
    }
    let committed: usize = expected.iter().map(HashSet::len).sum();
    eprintln!(
        "stress: {committed} orders committed ({} slow), {} rolled back",
        SLOW_WRITERS * SLOW_TRANSACTIONS_EACH,
        rolled_back.len()
    );

    // Every committed order's notice reaches its owner's stream.
    wait_until(
        "every committed order's notice arrives on its stream",
        || {
            let done = collectors.iter().zip(&expected).all(|(collector, want)| {
                let got: HashSet<String> = collector.ids().into_iter().collect();
                want.is_subset(&got)
            });
            async move { done }
        },
    )
    .await;

    // A sentinel per user: once it arrives, nothing else is on its way.
    let mut sentinels = Vec::new();
    for user in &users {
        let order = app.place_simple_order(user, "SENTINEL").await;
        sentinels.push(order["id"].as_str().unwrap().to_owned());
    }
    wait_until("every sentinel arrives", || {
        let done = collectors
            .iter()
            .zip(&sentinels)
            .all(|(collector, sentinel)| collector.ids().contains(sentinel));
        async move { done }
    })
    .await;

    let mut seq_of: HashMap<String, i64> = HashMap::new();
    for ((collector, want), sentinel) in collectors.iter().zip(&expected).zip(&sentinels) {
        let frames = collector.frames.lock().unwrap().clone();
        let mut last_seq = 0i64;
        let mut seen = HashSet::new();
        for frame in &frames {
            assert_eq!(frame.event.as_deref(), Some("order-visible"), "{frame:?}");
            // Ids are the user's own cursors, `<position>-<chain>`.
            let position: i64 = frame
                .id
                .as_deref()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                position > last_seq,
                "stream ids not strictly increasing: {frames:?}"
            );
            last_seq = position;
            let id = frame.json()["id"].as_str().unwrap().to_owned();
            assert!(
                !rolled_back.contains(&id),
                "a rolled-back order was announced"
            );
            assert!(
                want.contains(&id) || &id == sentinel,
                "the stream carried an order not committed by this user: {id}"
            );
            assert!(seen.insert(id.clone()), "{id} announced twice");
            // The global log order, for the stall check below.
            let seq: i64 = sqlx::query_scalar(
                "SELECT seq FROM notices WHERE order_id = $1::uuid AND kind = 'order-visible'",
            )
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
            seq_of.insert(id, seq);
        }
        assert_eq!(seen.len(), want.len() + 1, "notices missing from a stream");
        assert_eq!(
            frames.last().map(|f| f.json()["id"].clone()),
            Some(json!(sentinel))
        );
    }
    for collector in &collectors {
        collector.task.abort();
    }

    // No stall: what committed while a slow transaction was open was visible
    // before that transaction committed (cursor and clock both say so).
    for record in slow_records.iter().flatten() {
        assert!(!record.committed_while_open.is_empty());
        let slow_seq = seq_of[&record.order_id.to_string()];
        assert!(slow_seq > record.head_before_commit);
        for id in &record.committed_while_open {
            let seq = seq_of[&id.to_string()];
            assert!(
                seq <= record.head_before_commit && seq < slow_seq,
                "{id} (committed while {} was open) became visible only after it committed",
                record.order_id
            );
        }
        let latest_visible_at: DateTime<Utc> =
            sqlx::query_scalar("SELECT max(visible_at) FROM notices WHERE order_id = ANY($1)")
                .bind(&record.committed_while_open)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert!(latest_visible_at < record.clock_before_commit);
    }

    // Every committed event is published; nothing parked.
    let total = (committed + sentinels.len()) as i64;
    wait_until("the outbox is drained", || async {
        app.count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await
            == 0
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, total);
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, total);
    // Exactly one order-visible notice per committed order, none other.
    assert_eq!(
        app.count("SELECT count(*) FROM notices WHERE kind = 'order-visible'")
            .await,
        total
    );
    assert_eq!(app.count("SELECT count(*) FROM notices").await, total);

    // Searchable exactly once: Elasticsearch's count and the list pages.
    assert_eq!(es_count(&app, json!({ "match_all": {} })).await, total);
    for ((user, want), sentinel) in users.iter().zip(&expected).zip(&sentinels) {
        let user_id = app.user_id(user).await;
        assert_eq!(
            es_count(&app, json!({ "term": { "user_id": user_id } })).await,
            want.len() as i64 + 1
        );
        let listed = listed_ids(&app, user).await;
        let distinct: HashSet<String> = listed.iter().cloned().collect();
        assert_eq!(distinct.len(), listed.len(), "an order is listed twice");
        let mut want = want.clone();
        want.insert(sentinel.clone());
        assert_eq!(distinct, want);
        let summary: Value = app
            .get(user, "/api/summary")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(summary["orders_placed"], want.len() as i64, "{summary}");
    }

    // Nothing rolled back shows anywhere.
    let rolled_back_ids: Vec<String> = rolled_back.iter().cloned().collect();
    assert_eq!(
        es_count(&app, json!({ "ids": { "values": rolled_back_ids } })).await,
        0
    );
    let rolled: Vec<Uuid> = rolled_back.iter().map(|id| id.parse().unwrap()).collect();
    for table in [
        "orders WHERE id",
        "outbox WHERE aggregate_id",
        "notices WHERE order_id",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} = ANY($1)"))
            .bind(&rolled)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(n, 0, "a rolled-back order left a trace in {table}");
    }
    // Not even to the user who wrote it (anyone else gets 404 regardless).
    for (id, writer) in &rolled_back_by {
        let response = app
            .get(writer, &format!("/api/orders/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "rolled-back order {id}, read by its writer"
        );
    }
    direct.close().await;
}
