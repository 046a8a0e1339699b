//! `BUS=nats` on the real three-node cluster (`scripts/services start nats`)
//! while nodes and processes die: the stream's leader SIGKILLed during a
//! burst, two of three nodes stopped, the relay killed between PubAck and
//! marking, a projector killed before its ack. Every test ends with every
//! order searchable once and announced once, and the stream holding each
//! event once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sightline::config::{Role, Settings};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::nats::{TestStream, jetstream, nats_settings, stream_leader, stream_state};
use crate::helpers::{
    TestApp, TestUser, WAIT, metric_value, spawn_app_with, spawn_instance, test_settings,
    visible_id,
};
use crate::services::{self, SCRIPT};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

// ------------------------------------------------------------ the cluster

async fn script(action: &str, what: &str) {
    let output = tokio::process::Command::new(SCRIPT)
        .args([action, what])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
    assert!(
        output.status.success(),
        "`{SCRIPT} {action} {what}` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Nodes a test took down; dropping this starts them again (blocking), so
/// a failing test leaves the cluster whole.
#[must_use = "the nodes start again when this is dropped"]
struct NodesDown(Vec<u8>);

impl NodesDown {
    async fn end(mut self) {
        for node in std::mem::take(&mut self.0) {
            script("start", &format!("nats-{node}")).await;
        }
    }
}

impl Drop for NodesDown {
    fn drop(&mut self) {
        for node in &self.0 {
            eprintln!("faults: starting nats-{node} again after a failed test");
            let _ = std::process::Command::new(SCRIPT)
                .args(["start", &format!("nats-{node}")])
                .status();
        }
    }
}

async fn stop_nodes(nodes: &[u8]) -> NodesDown {
    for node in nodes {
        script("stop", &format!("nats-{node}")).await;
    }
    NodesDown(nodes.to_vec())
}

/// SIGKILLs a node (its pid from the pidfile `scripts/services` keeps).
fn kill_node(node: u8) -> NodesDown {
    let pidfile = PathBuf::from(REPO).join(format!(".local/nats-run/nats-{node}.pid"));
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("{pidfile:?}: {e}"))
        .trim()
        .to_owned();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid} (nats-{node}) failed");
    NodesDown(vec![node])
}

/// The fault tests' lock, with all three nodes running.
async fn serial() -> services::Serial {
    let serial = services::serial().await;
    script("start", "nats").await;
    serial
}

// ----------------------------------------------------- sightline processes

/// `sightline serve` with `BUS=nats` as a child process, so it can be
/// SIGKILLed.
struct Proc {
    child: Child,
    base: String,
}

async fn start_proc(settings: &Settings, roles: &str, extra: &[(&str, &str)]) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "nats-{}{}-{port}.log",
        settings.index_prefix,
        roles.replace(',', "-")
    ));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    command
        .arg("serve")
        .env("DATABASE_URL", &settings.database_url)
        .env("ELASTICSEARCH_URL", &settings.elasticsearch_url)
        .env("INDEX_PREFIX", &settings.index_prefix)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("ROLES", roles)
        .env("BUS", "nats")
        .env("NATS_URL", &settings.nats_url)
        .env("NATS_STREAM", &settings.nats_stream)
        .env("NATS_MAX_AGE_HOURS", "1")
        .env(
            "NATS_ACK_WAIT_SECS",
            settings.nats_ack_wait_secs.to_string(),
        )
        .env("RELAY_POLL_MS", "500")
        .env("WRITE_BURST", "0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut proc = Proc {
        child: command.spawn().expect("cannot start the sightline binary"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", proc.base)).send().await
            && r.status() == StatusCode::OK
        {
            return proc;
        }
        if let Some(status) = proc.child.try_wait().unwrap() {
            panic!("sightline serve ({roles}) exited with {status} (log in {log:?})");
        }
        assert!(Instant::now() < deadline, "sightline serve never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Proc {
    async fn kill(&mut self) {
        self.child.start_kill().unwrap(); // SIGKILL
        self.child.wait().await.unwrap();
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

// ---------------------------------------------------------------- checks

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 2;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places one order with a client-chosen id, retrying with that id (as a
/// browser does) until the server answers 201.
async fn place(app: &TestApp, user: &TestUser, sku: &str) -> Uuid {
    let id = Uuid::new_v4();
    let body =
        json!({ "id": id, "items": [{ "sku": sku, "quantity": 1, "unit_price_cents": 100 }] });
    for _ in 0..20 {
        if let Ok(r) = app.post(user, "/api/orders").json(&body).send().await
            && r.status() == StatusCode::CREATED
        {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("order {id} was never accepted");
}

async fn es_count(settings: &Settings) -> i64 {
    let base = settings.elasticsearch_url.trim_end_matches('/');
    let http = reqwest::Client::new();
    let _ = http
        .post(format!("{base}/{}orders/_refresh", settings.index_prefix))
        .send()
        .await;
    let body: Value = http
        .get(format!("{base}/{}orders/_count", settings.index_prefix))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["count"].as_i64().expect("a count")
}

/// Every order of `placed` searchable and announced exactly once, nothing
/// waiting in the outbox, the stream holding each event once.
async fn assert_delivered_once(settings: &Settings, db: &PgPool, placed: &[Uuid]) {
    let n = placed.len() as i64;
    wait_for("every order announced", async || {
        count(
            db,
            "SELECT count(*) FROM notices WHERE kind = 'order-visible'",
        )
        .await
            >= n
    })
    .await;
    wait_for("the outbox marked published", async || {
        count(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    for id in placed {
        let notices: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notices WHERE order_id = $1 AND kind = 'order-visible'",
        )
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
        assert_eq!(notices, 1, "order {id}: one notice");
    }
    assert_eq!(
        count(db, "SELECT count(*) FROM notices").await,
        n,
        "no other notice (no order-failed)"
    );
    assert_eq!(es_count(settings).await, n, "every order searchable");
    assert_eq!(
        stream_state(settings).await.messages,
        n as u64,
        "the stream holds each event once"
    );
}

fn node_of(server_name: &str) -> u8 {
    server_name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a node of scripts/services: {server_name}"))
}

// ----------------------------------------------------------------- tests

/// SIGKILL the stream's leader while clients place a burst of orders: a
/// new leader is elected, the relay's unacknowledged publishes are retried
/// (duplicates acknowledged as such), and every order arrives once. The
/// killed node, started again, catches up.
#[tokio::test]
async fn killing_the_stream_leader_during_a_burst_loses_and_duplicates_nothing() {
    const ORDERS: usize = 60;
    const KILL_AT: usize = 15;
    let _serial = serial().await;
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let app = spawn_app_with(settings.clone()).await;
    let user = app.new_user().await;
    let mut placed = vec![place(&app, &user, "WARM-UP").await];
    wait_for("the first order announced", async || {
        count(&app.db, "SELECT count(*) FROM notices").await == 1
    })
    .await;
    let leader = node_of(&stream_leader(&settings).await);

    let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel();
    let burst = {
        let (app, user) = (&app, &user);
        futures::future::join_all((0..4).map(move |client| {
            let answered = answered_tx.clone();
            async move {
                let mut ids = Vec::new();
                for n in 0..ORDERS / 4 {
                    ids.push(place(app, user, &format!("BURST-{client}-{n}")).await);
                    let _ = answered.send(());
                }
                ids
            }
        }))
    };
    let kill = async {
        for _ in 0..KILL_AT {
            answered_rx.recv().await;
        }
        kill_node(leader)
    };
    let (ids, down) = tokio::join!(burst, kill);
    placed.extend(ids.into_iter().flatten());
    assert_eq!(placed.len(), ORDERS + 1);

    assert_delivered_once(&settings, &app.db, &placed).await;
    let new_leader = node_of(&stream_leader(&settings).await);
    assert_ne!(new_leader, leader, "a new leader took over");

    // The killed node comes back and catches up with the stream.
    down.end().await;
    let js = jetstream(&settings).await;
    wait_for("the restarted node is current", async || {
        let Ok(mut stream) = js.get_stream(&settings.nats_stream).await else {
            return false;
        };
        let Ok(info) = stream.info().await else {
            return false;
        };
        info.cluster.as_ref().is_some_and(|c| {
            c.replicas
                .iter()
                .any(|p| node_of(&p.name) == leader && p.current && !p.offline)
        })
    })
    .await;
}

/// Two of three nodes stopped: the stream has no quorum, so no publish is
/// acknowledged and the relay marks nothing; writes still answer 201 and
/// the backlog grows. Started again, everything is delivered once.
#[tokio::test]
async fn without_a_quorum_nothing_is_acknowledged_and_all_is_delivered_once_it_returns() {
    const DURING: usize = 8;
    let _serial = serial().await;
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let app = spawn_app_with(settings.clone()).await;
    let user = app.new_user().await;
    let mut placed = vec![place(&app, &user, "BEFORE").await];
    wait_for("the first order announced", async || {
        count(&app.db, "SELECT count(*) FROM notices").await == 1
    })
    .await;

    let down = stop_nodes(&[2, 3]).await;
    for n in 0..DURING {
        placed.push(place(&app, &user, &format!("DURING-{n}")).await);
    }
    // The relay tried and failed (a publish without a quorum times out).
    wait_for("a failed relay batch", async || {
        let metrics = app.metrics_text().await;
        metrics
            .lines()
            .any(|l| l.starts_with("sightline_relay_batch_failures_total{kind=\"nats"))
    })
    .await;
    assert_eq!(
        count(
            &app.db,
            "SELECT count(*) FROM outbox WHERE relayed_at IS NOT NULL AND published_at IS NULL"
        )
        .await,
        0,
        "no event marked relayed without an acknowledgement"
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        DURING as i64,
        "the backlog holds every order placed meanwhile"
    );
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM notices").await,
        1,
        "nothing announced meanwhile"
    );
    // Still taking writes, and saying what is wrong.
    wait_for("readiness says the bus is down", async || {
        let ready: Value = app.json_of("/readyz").await;
        ready["status"] == "degraded" && ready["bus"] == "down"
    })
    .await;

    down.end().await;
    assert_delivered_once(&settings, &app.db, &placed).await;
}

/// The relay dies after the stream acknowledged its batch and before it
/// marked the rows: they are published again, acknowledged as duplicates
/// (the stream keeps one of each), and projected once.
///
/// The relay is held between the two by the test's `SHARE` lock on the
/// outbox: claiming (`FOR UPDATE`) goes through it, marking (`UPDATE`) waits.
#[tokio::test]
async fn a_relay_killed_between_pub_ack_and_marking_publishes_duplicates_that_count_once() {
    const ORDERS: usize = 10;
    let _serial = serial().await;
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let mut web_settings = settings.clone();
    web_settings.roles = vec![Role::Web];
    let web = spawn_app_with(web_settings).await;
    let user = web.new_user().await;
    let mut placed = Vec::new();
    for n in 0..ORDERS {
        placed.push(place(&web, &user, &format!("HELD-{n}")).await);
    }

    let mut hold = PgConnection::connect(&settings.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut hold).await.unwrap();
    sqlx::query("LOCK TABLE outbox IN SHARE MODE")
        .execute(&mut hold)
        .await
        .unwrap();
    let mut relay = start_proc(&settings, "relay", &[]).await;
    wait_for("the stream acknowledged the batch", async || {
        stream_state(&settings).await.messages == ORDERS as u64
    })
    .await;
    wait_for("the relay waits to mark", async || {
        count(
            &web.db,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname = 'outbox' AND NOT l.granted",
        )
        .await
            > 0
    })
    .await;
    relay.kill().await;
    sqlx::query("ROLLBACK").execute(&mut hold).await.unwrap();
    assert_eq!(
        count(
            &web.db,
            "SELECT count(*) FROM outbox WHERE relayed_at IS NOT NULL"
        )
        .await,
        0
    );

    let relay = start_proc(&settings, "relay", &[]).await;
    wait_for("the relay marked every event relayed", async || {
        count(
            &web.db,
            "SELECT count(*) FROM outbox WHERE relayed_at IS NULL",
        )
        .await
            == 0
    })
    .await;
    let metrics = relay.metrics().await;
    assert_eq!(
        metric_value(&metrics, "sightline_bus_publish_duplicates_total"),
        Some(ORDERS as f64),
        "the retried publishes were acknowledged as duplicates"
    );
    assert_eq!(stream_state(&settings).await.messages, ORDERS as u64);

    let mut projector_settings = settings.clone();
    projector_settings.roles = vec![Role::Projector];
    let _projector = spawn_instance(projector_settings).await;
    assert_delivered_once(&settings, &web.db, &placed).await;
}

/// A projector dies after writing its batch to Elasticsearch and before
/// recording notices and acking: after `ack_wait` the batch goes to the
/// other projector, whose writes find the versions already there (no change
/// to Elasticsearch) and which records each notice once.
#[tokio::test]
async fn a_projector_killed_before_its_ack_hands_the_batch_to_the_other() {
    const ORDERS: usize = 5;
    let _serial = serial().await;
    let mut settings = nats_settings(test_settings().await);
    settings.nats_ack_wait_secs = 2;
    let _stream = TestStream(settings.clone());
    let mut web_settings = settings.clone();
    web_settings.roles = vec![Role::Web, Role::Relay];
    let web = spawn_app_with(web_settings).await;
    let user = web.new_user().await;

    // Projector A is held at the notice log, its batch written to search.
    let mut placed = Vec::new();
    for n in 0..ORDERS {
        placed.push(place(&web, &user, &format!("PROJ-{n}")).await);
    }
    wait_for("the relay published every order", async || {
        stream_state(&settings).await.messages == ORDERS as u64
    })
    .await;
    let hold = web.hold_notices().await;
    let mut a = start_proc(&settings, "projector", &[]).await;
    web.wait_until_projector_blocked().await;
    let written = es_count(&settings).await;
    assert!(written >= 1, "projector A wrote its batch before blocking");
    a.kill().await;
    hold.release().await;
    assert_eq!(count(&web.db, "SELECT count(*) FROM notices").await, 0);

    let b = start_proc(&settings, "projector", &[]).await;
    assert_delivered_once(&settings, &web.db, &placed).await;
    let metrics = b.metrics().await;
    assert_eq!(
        metric_value(&metrics, "sightline_duplicates_acknowledged_total"),
        Some(written as f64),
        "projector B found every version A wrote already there: search did not change twice"
    );
}

/// Two web instances, one relay, two projectors (all processes of their own
/// but the webs): a client on each web instance gets every notice once.
#[tokio::test]
async fn two_projectors_one_relay_two_webs_every_notice_once_on_every_instance() {
    const ORDERS: usize = 16;
    let _serial = serial().await;
    let settings = nats_settings(test_settings().await);
    let _stream = TestStream(settings.clone());
    let mut web_settings = settings.clone();
    web_settings.roles = vec![Role::Web];
    let web1 = spawn_app_with(web_settings.clone()).await;
    let web2 = spawn_instance(web_settings).await;
    let _relay = start_proc(&settings, "relay", &[]).await;
    let _p1 = start_proc(&settings, "projector", &[]).await;
    let _p2 = start_proc(&settings, "projector", &[]).await;

    let user = web1.new_user().await;
    let (mut on1, _) = web1.open_events_ready(&user).await;
    let (mut on2, _) = web2.open_events_ready(&user).await;
    let mut placed = Vec::new();
    for n in 0..ORDERS {
        let web = if n % 2 == 0 { &web1 } else { &web2 };
        placed.push(place(web, &user, &format!("MULTI-{n}")).await);
    }
    let expected: HashSet<String> = placed.iter().map(Uuid::to_string).collect();
    for stream in [&mut on1, &mut on2] {
        // Exactly ORDERS notices: a duplicate would leave one order out.
        let mut seen = HashSet::new();
        tokio::time::timeout(WAIT, async {
            for _ in 0..ORDERS {
                let notice = stream.next_order_visible().await;
                seen.insert(visible_id(&notice));
            }
        })
        .await
        .expect("not every notice arrived");
        assert_eq!(seen, expected, "every notice once on every instance");
    }
    assert_delivered_once(&settings, &web1.db, &placed).await;
}
