//! The real binary, killed with SIGKILL in the middle of a relay batch while
//! clients are placing orders, then started again on the same database and
//! index: nothing lost, nothing duplicated — clients retrying the same order
//! id included.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::Settings;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{NOTICE_RECORD_LOCK, order_ids, remove_test_data, test_settings};
use crate::services;

const USERS: usize = 4;
const ORDERS: usize = 200;
/// Placed (and answered) before the kill is prepared.
const WARM_UP: usize = 50;
/// Placed after the notice lock is taken, before waiting for the relay to block on it.
const BEFORE_BLOCK: usize = 60;
/// The server is killed once this many orders have been answered.
const KILL_AT: usize = 110;
const CONCURRENCY: usize = 8;
const DEADLINE: Duration = Duration::from_secs(120);

/// Removes the test's database and indices at the end, however it ends.
struct TestData(Settings);

impl Drop for TestData {
    fn drop(&mut self) {
        remove_test_data(&self.0);
    }
}

/// `sightline serve` as a child process.
struct Server {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    async fn start(settings: &Settings, log: &PathBuf) -> Server {
        let port = free_port();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sightline"))
            .arg("serve")
            .env("DATABASE_URL", &settings.database_url)
            .env("ELASTICSEARCH_URL", &settings.elasticsearch_url)
            .env("INDEX_PREFIX", &settings.index_prefix)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            // Small batches: many of them, so the relay is busy throughout.
            .env("RELAY_BATCH_SIZE", "20")
            .env("RELAY_POLL_MS", "500")
            // 50 orders per user as fast as they go, retries included:
            // a script's pace, not what this test is about.
            .env("WRITE_BURST", "0")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the sightline binary");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", server.base)).send().await
                && r.status() == StatusCode::OK
            {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("sightline serve exited with {status} (log in {log:?})");
            }
            assert!(Instant::now() < deadline, "sightline serve never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn kill(&mut self) {
        self.child.start_kill().unwrap(); // SIGKILL
        self.child.wait().await.unwrap();
    }
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn new_user(&self, base: &str) -> (String, String) {
        let username = format!("k{}", &Uuid::new_v4().simple().to_string()[..12]);
        let credentials = json!({ "username": username, "password": "correct horse battery" });
        let response = self
            .http
            .post(format!("{base}/api/users"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let response = self
            .http
            .post(format!("{base}/api/sessions"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (username, body["token"].as_str().unwrap().to_owned())
    }

    async fn place(
        &self,
        base: &str,
        token: &str,
        order: &Order,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{base}/api/orders"))
            .bearer_auth(token)
            .json(&json!({ "id": order.id, "items": [
                { "sku": order.sku, "quantity": 1, "unit_price_cents": 100 }
            ]}))
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await?))
    }

    async fn get(&self, base: &str, token: &str, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}

#[derive(Clone, Debug)]
struct Order {
    id: Uuid,
    user: usize,
    sku: String,
}

/// What a client knows about its order after the kill.
#[derive(Debug)]
enum Outcome {
    /// 201 with this body.
    Created(Value),
    /// No answer (the server died under the request, or was already gone).
    Unknown,
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

async fn es_count(settings: &Settings, query: Value) -> i64 {
    let url = format!(
        "{}/{}orders/_count",
        settings.elasticsearch_url.trim_end_matches('/'),
        settings.index_prefix
    );
    let response = reqwest::Client::new()
        .post(url)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["count"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn after_sigkill_mid_batch_nothing_is_lost_or_duplicated() {
    let _serial = services::serial().await;
    let settings = test_settings().await;
    let _data = TestData(settings.clone());
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sigkill-{}log", settings.index_prefix));
    eprintln!("faults: server log in {}", log.display());

    let mut server = Server::start(&settings, &log).await;
    let db = PgPoolOptions::new()
        .max_connections(4)
        .connect(&settings.database_url)
        .await
        .unwrap();
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    });
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(client.new_user(&server.base).await);
    }
    let tokens: Arc<Vec<String>> = Arc::new(users.iter().map(|(_, t)| t.clone()).collect());
    let orders: Vec<Order> = (0..ORDERS)
        .map(|i| Order {
            id: Uuid::new_v4(),
            user: i % USERS,
            sku: format!("KILL-{i}"),
        })
        .collect();

    // Warm-up: these are placed and answered before anything happens.
    let outcomes: Arc<Mutex<HashMap<Uuid, Outcome>>> = Arc::default();
    let place_all = |batch: Vec<Order>, base: String| {
        let (client, tokens, outcomes) = (client.clone(), tokens.clone(), outcomes.clone());
        futures::stream::iter(batch)
            .map(move |order| {
                let (client, tokens, outcomes, base) = (
                    client.clone(),
                    tokens.clone(),
                    outcomes.clone(),
                    base.clone(),
                );
                async move {
                    let outcome = match client.place(&base, &tokens[order.user], &order).await {
                        Ok((StatusCode::CREATED, body)) => Outcome::Created(body),
                        Ok((status, body)) => {
                            panic!("placing {} answered {status}: {body}", order.id)
                        }
                        Err(_) => Outcome::Unknown,
                    };
                    outcomes.lock().unwrap().insert(order.id, outcome);
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
    };
    place_all(orders[..WARM_UP].to_vec(), server.base.clone()).await;
    assert!(
        outcomes
            .lock()
            .unwrap()
            .values()
            .all(|o| matches!(o, Outcome::Created(_))),
        "a warm-up order went unanswered"
    );
    // ...and relayed, so the kill lands in the middle of the log, not at its start.
    let deadline = Instant::now() + DEADLINE;
    while count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )
    .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the warm-up orders were never published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Hold the notice-recording lock: the projector's next batch gets written
    // to Elasticsearch and refreshed, then blocks before recording its
    // notices — with its outbox rows claimed and not yet marked published.
    let mut hold = PgConnection::connect(&settings.database_url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(NOTICE_RECORD_LOCK)
        .execute(&mut hold)
        .await
        .unwrap();
    // A few more orders, so there is a batch to block on even if the relay
    // had caught up with the warm-up.
    place_all(orders[WARM_UP..BEFORE_BLOCK].to_vec(), server.base.clone()).await;
    let deadline = Instant::now() + DEADLINE;
    while count(
        &db,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the relay never reached the held lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The relay is stuck mid-batch. Place the rest, and kill the server part
    // way through: some requests in flight, the others refused.
    let rest = tokio::spawn(place_all(
        orders[BEFORE_BLOCK..].to_vec(),
        server.base.clone(),
    ));
    let deadline = Instant::now() + DEADLINE;
    while outcomes.lock().unwrap().len() < KILL_AT && !rest.is_finished() {
        assert!(Instant::now() < deadline, "orders are not being answered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill().await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(NOTICE_RECORD_LOCK)
        .execute(&mut hold)
        .await
        .unwrap();
    hold.close().await.unwrap();
    rest.await.unwrap();

    // The kill came mid-batch: events unpublished, some of them already
    // searchable without their notices.
    let unpublished = count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )
    .await;
    let notices = count(&db, "SELECT count(*) FROM notices").await;
    let searchable = es_count(&settings, json!({ "match_all": {} })).await;
    let committed_before = count(&db, "SELECT count(*) FROM orders").await;
    let (created, unknown): (Vec<Uuid>, Vec<Uuid>) = {
        let outcomes = outcomes.lock().unwrap();
        let created = orders
            .iter()
            .filter(|o| matches!(outcomes[&o.id], Outcome::Created(_)))
            .map(|o| o.id)
            .collect();
        let unknown = orders
            .iter()
            .filter(|o| matches!(outcomes[&o.id], Outcome::Unknown))
            .map(|o| o.id)
            .collect();
        (created, unknown)
    };
    eprintln!(
        "faults: killed with {committed_before} orders committed ({} answered 201, {} unanswered), \
         {unpublished} events unpublished, {searchable} searchable, {notices} notices",
        created.len(),
        unknown.len()
    );
    assert!(unpublished > 0, "the kill did not leave a backlog");
    assert!(
        !unknown.is_empty(),
        "no request was in flight or refused at the kill"
    );
    assert!(
        searchable > notices,
        "the kill did not catch a batch between searchable and noticed"
    );

    // Start again on the same database and index.
    let mut server = Server::start(&settings, &log).await;
    let base = server.base.clone();

    // Clients retry what they never heard back about: two racing retries per
    // order. Exactly one creates it if the first attempt did not commit.
    let by_id: HashMap<Uuid, Order> = orders.iter().map(|o| (o.id, o.clone())).collect();
    for id in &unknown {
        let order = &by_id[id];
        let existed = count(
            &db,
            &format!("SELECT count(*) FROM orders WHERE id = '{id}'"),
        )
        .await
            == 1;
        let token = &tokens[order.user];
        let (a, b) = tokio::join!(
            client.place(&base, token, order),
            client.place(&base, token, order)
        );
        let statuses = [a.unwrap().0, b.unwrap().0];
        let creations = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK),
            "retrying {id}: {statuses:?}"
        );
        assert_eq!(
            creations,
            if existed { 0 } else { 1 },
            "retrying {id} (committed before the kill: {existed}): {statuses:?}"
        );
    }
    // Clients retry some orders they did hear back about: the same order, 200.
    for id in created.iter().step_by(4) {
        let first = match &outcomes.lock().unwrap()[id] {
            Outcome::Created(body) => body.clone(),
            Outcome::Unknown => unreachable!(),
        };
        let order = &by_id[id];
        let (status, body) = client
            .place(&base, &tokens[order.user], order)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "a retry of {id} after the kill");
        assert_eq!(body["id"], first["id"]);
        assert_eq!(body["consistency_token"], first["consistency_token"]);
        assert_eq!(body["placed_at"], first["placed_at"]);
    }

    // Every order is now committed, once; wait until all are visible.
    assert_eq!(
        count(&db, "SELECT count(*) FROM orders").await,
        ORDERS as i64
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM outbox").await,
        ORDERS as i64
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let visible = count(
            &db,
            "SELECT count(DISTINCT order_id) FROM notices WHERE kind = 'order-visible'",
        )
        .await;
        let unpublished = count(
            &db,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await;
        if visible == ORDERS as i64 && unpublished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart only {visible} of {ORDERS} orders became visible ({unpublished} unpublished)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Exactly one notice per order, nothing parked.
    assert_eq!(
        count(&db, "SELECT count(*) FROM notices").await,
        ORDERS as i64
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 0);

    // Searchable exactly once, listed once, counted once — per user.
    assert_eq!(
        es_count(&settings, json!({ "match_all": {} })).await,
        ORDERS as i64
    );
    for (u, (_, token)) in users.iter().enumerate() {
        let mine: HashSet<String> = orders
            .iter()
            .filter(|o| o.user == u)
            .map(|o| o.id.to_string())
            .collect();
        let user_id: Uuid = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
            .bind(orders.iter().find(|o| o.user == u).unwrap().id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(
            es_count(&settings, json!({ "term": { "user_id": user_id } })).await,
            mine.len() as i64
        );
        let mut listed = Vec::new();
        let mut path = "/api/orders?limit=20".to_owned();
        loop {
            let page = client.get(&base, token, &path).await;
            listed.extend(order_ids(&page));
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/orders?limit=20&cursor={cursor}"),
                None => break,
            }
        }
        let distinct: HashSet<String> = listed.iter().cloned().collect();
        assert_eq!(distinct.len(), listed.len(), "an order is listed twice");
        assert_eq!(distinct, mine);
        let summary = client.get(&base, token, "/api/summary").await;
        assert_eq!(summary["orders_placed"], mine.len() as i64, "{summary}");
    }

    server.kill().await;
    db.close().await;
}
