//! Property test of the pipeline's promise, on the real code: whatever the
//! delivery — relay batches crashed at any step boundary, batches paused
//! while others overtake them, events handed to the projector again in any
//! order and with duplicates — the orders index, the summaries and the notice
//! log end up as exactly-once, in-order delivery would leave them. And at
//! every moment in between, no notice says more than search shows, and
//! nothing marked published is missing from search or from the notice log.
//!
//! It drives the real relay (`Relay::relay_batch`: claim, publish through the
//! in-process bus, mark) and the real projector against the real PostgreSQL
//! and Elasticsearch. The projector's step hook (`projector::steps`) pauses a
//! batch at a real boundary, or "crashes" it there: its task is dropped, as a
//! dying process drops it (its relay transaction rolls back, what it already
//! wrote stays). Scheduled refreshes are off, so only the projector's own
//! refresh makes an order searchable, and a premature notice shows.
//!
//! Nothing at the end delivers "everything again": only the real relay's
//! marking decides what is delivered again, so an event marked published
//! but never projected stays missing and fails the test.
//!
//! The test also asserts what it injected: at least [`MIN_INJECTED`]
//! batches crashed, and as many paused, at each step boundary (counted
//! where the batch really stopped). Its histories come from a fixed seed, so
//! that count is the same on every run; `PROPTEST_RNG_SEED` picks others.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use sightline::bus::Bus;
use sightline::config::{RefreshMode, Settings};
use sightline::order::{Item, OrderStatus};
use sightline::outbox::events::{self, OrderCancelledV1, OrderPlacedV2};
use sightline::outbox::{self, NewEvent, OutboxEvent};
use sightline::projector::Projector;
use sightline::projector::in_process_bus::InProcessBus;
use sightline::projector::steps::{Step, StepHook};
use sightline::read_side::document::{OrderDocument, SummaryDocument};
use sightline::read_side::index::SearchIndex;
use sightline::read_side::model::ReadQueries;
use sightline::relay::Relay;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{remove_test_data, test_settings};

/// Each case runs against the real services: a modest count keeps it fast.
const CASES: u32 = 64;
/// The default seed of the case generator (see the test).
const SEED: u64 = 22;
/// At least this many batches crash, and this many pause, at each step
/// boundary in a run.
const MIN_INJECTED: usize = 3;
/// Every boundary a batch can stop at.
const STEPS: [Step; 5] = [
    Step::Received,
    Step::Counted,
    Step::Written,
    Step::Refreshed,
    Step::NoticesRecorded,
];
/// Most batches paused at once (each holds a database connection).
const MAX_PAUSED: usize = 2;

// ---------------------------------------------------------------------------
// What a case is made of.

/// What happens to a batch at a step boundary.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Never,
    /// The batch dies there, as with the process.
    Crash(Step),
    /// The batch waits there until an [`Op::Resume`] (or the end of the case)
    /// while later operations run.
    Pause(Step),
}

#[derive(Clone, Debug)]
enum Op {
    /// The write side commits the next `n` events of the history, in one
    /// transaction.
    Commit(usize),
    /// One relay batch of at most `size` events.
    Relay { size: i64, stop: Stop },
    /// The bus hands the projector committed events again (at-least-once: a
    /// redelivery, here also with duplicates and in any order). It marks
    /// nothing.
    Redeliver { picks: Vec<Index>, stop: Stop },
    /// The oldest paused batch goes on to its end.
    Resume,
}

#[derive(Clone, Debug)]
struct OrderSpec {
    user: usize,
    quantity: i32,
    eur: bool,
    /// Cancelled, by an event this far after the placing one.
    cancel_after: Option<Index>,
}

#[derive(Clone, Debug)]
struct Case {
    orders: Vec<OrderSpec>,
    ops: Vec<Op>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Received),
        Just(Step::Counted),
        Just(Step::Written),
        Just(Step::Refreshed),
        Just(Step::NoticesRecorded),
    ]
}

fn stop() -> impl Strategy<Value = Stop> {
    prop_oneof![
        2 => Just(Stop::Never),
        2 => step().prop_map(Stop::Crash),
        2 => step().prop_map(Stop::Pause),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..4).prop_map(Op::Commit),
        4 => (1i64..4, stop()).prop_map(|(size, stop)| Op::Relay { size, stop }),
        2 => (prop::collection::vec(any::<Index>(), 1..5), stop())
            .prop_map(|(picks, stop)| Op::Redeliver { picks, stop }),
        2 => Just(Op::Resume),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let order = (
        0usize..2,
        1i32..5,
        any::<bool>(),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(user, quantity, eur, cancel_after)| OrderSpec {
            user,
            quantity,
            eur,
            cancel_after,
        });
    (
        prop::collection::vec(order, 1..5),
        prop::collection::vec(op(), 4..16),
    )
        .prop_map(|(orders, ops)| Case { orders, ops })
}

// ---------------------------------------------------------------------------
// The history: what the write side commits, fresh ids per case.

/// One event as the write side appends it.
#[derive(Clone, Debug)]
struct Planned {
    order: OrderPlacedV2,
    /// `Some` for the cancellation (version 2).
    cancelled_at: Option<DateTime<Utc>>,
}

impl Planned {
    fn version(&self) -> i32 {
        if self.cancelled_at.is_some() { 2 } else { 1 }
    }

    fn new_event(&self) -> NewEvent {
        let order = self.order.clone();
        let (order_id, user_id) = (order.order_id, order.user_id);
        match self.cancelled_at {
            None => NewEvent {
                traceparent: None,
                event_type: events::ORDER_PLACED,
                schema_version: OrderPlacedV2::SCHEMA_VERSION,
                aggregate_id: order_id,
                aggregate_version: 1,
                user_id,
                payload: serde_json::to_value(order).unwrap(),
            },
            Some(cancelled_at) => NewEvent {
                traceparent: None,
                event_type: events::ORDER_CANCELLED,
                schema_version: OrderCancelledV1::SCHEMA_VERSION,
                aggregate_id: order_id,
                aggregate_version: 2,
                user_id,
                payload: serde_json::to_value(OrderCancelledV1 {
                    order,
                    cancelled_at,
                })
                .unwrap(),
            },
        }
    }
}

fn history(specs: &[OrderSpec]) -> (Vec<Uuid>, Vec<Planned>) {
    let users = vec![Uuid::new_v4(), Uuid::new_v4()];
    let mut planned: Vec<Planned> = specs
        .iter()
        .enumerate()
        .map(|(n, spec)| {
            let quantity = spec.quantity;
            Planned {
                order: OrderPlacedV2 {
                    order_id: Uuid::new_v4(),
                    user_id: users[spec.user],
                    username: format!("prop{}", spec.user),
                    items: vec![Item {
                        sku: format!("PROP-{n}"),
                        quantity,
                        unit_price_cents: 250,
                    }],
                    total_cents: i64::from(quantity) * 250,
                    currency: if spec.eur { "EUR" } else { "USD" }.to_owned(),
                    note: None,
                    // Whole seconds: PostgreSQL keeps microseconds only.
                    placed_at: Utc.timestamp_opt(1_800_000_000 + n as i64, 0).unwrap(),
                },
                cancelled_at: None,
            }
        })
        .collect();
    // Each cancellation goes somewhere after its order's placing.
    for (n, spec) in specs.iter().enumerate() {
        let Some(after) = spec.cancel_after else {
            continue;
        };
        let placed = planned
            .iter()
            .position(|p| p.cancelled_at.is_none() && p.order.items[0].sku == format!("PROP-{n}"))
            .unwrap();
        let order = planned[placed].order.clone();
        let cancelled_at = order.placed_at + chrono::Duration::seconds(5);
        let at = placed + 1 + after.index(planned.len() - placed);
        planned.insert(
            at,
            Planned {
                order,
                cancelled_at: Some(cancelled_at),
            },
        );
    }
    (users, planned)
}

/// The orders index after exactly-once, in-order delivery: every order as
/// its last event left it.
fn expected_orders(planned: &[Planned]) -> HashMap<Uuid, OrderDocument> {
    let mut docs = HashMap::new();
    for p in planned {
        let o = &p.order;
        docs.insert(
            o.order_id,
            OrderDocument {
                id: o.order_id,
                user_id: o.user_id,
                username: o.username.clone(),
                skus: o.items.iter().map(|i| i.sku.clone()).collect(),
                items: o.items.clone(),
                total_cents: o.total_cents,
                currency: o.currency.clone(),
                note: o.note.clone(),
                placed_at: o.placed_at,
                status: if p.cancelled_at.is_some() {
                    OrderStatus::Cancelled
                } else {
                    OrderStatus::Placed
                },
                cancelled_at: p.cancelled_at,
                version: i64::from(p.version()),
            },
        );
    }
    docs
}

/// A user's summary after every event counted exactly once: written out
/// from the history, not folded by the projector's code.
fn expected_summary(user_id: Uuid, planned: &[Planned]) -> Option<SummaryDocument> {
    let mine: Vec<&Planned> = planned
        .iter()
        .filter(|p| p.order.user_id == user_id)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let placed: Vec<&OrderPlacedV2> = mine
        .iter()
        .filter(|p| p.cancelled_at.is_none())
        .map(|p| &p.order)
        .collect();
    let cancelled: Vec<Uuid> = mine
        .iter()
        .filter(|p| p.cancelled_at.is_some())
        .map(|p| p.order.order_id)
        .collect();
    let mut spent_cents: BTreeMap<String, i64> = BTreeMap::new();
    for order in &placed {
        let total = if cancelled.contains(&order.order_id) {
            0
        } else {
            order.total_cents
        };
        *spent_cents.entry(order.currency.clone()).or_default() += total;
    }
    Some(SummaryDocument {
        user_id,
        orders_placed: placed.len() as i64,
        orders_cancelled: cancelled.len() as i64,
        spent_cents,
        last_order_at: placed.iter().map(|o| o.placed_at).max(),
        // One revision per event counted: a double count shows here too.
        revision: mine.len() as i64,
    })
}

// ---------------------------------------------------------------------------
// Pausing and crashing batches at the projector's real step boundaries.

tokio::task_local! {
    /// What the batch running in this task does at the step boundaries.
    static SCRIPT: Arc<Script>;
}

struct Script {
    stop: Stop,
    /// Told when the batch reaches its stop.
    reached: Mutex<Option<oneshot::Sender<()>>>,
    /// A paused batch goes on when this fires.
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

fn step_hook() -> StepHook {
    Arc::new(|step| {
        Box::pin(async move {
            let Ok(script) = SCRIPT.try_with(Arc::clone) else {
                return;
            };
            let at = match script.stop {
                Stop::Crash(at) | Stop::Pause(at) => at,
                Stop::Never => return,
            };
            if at != step {
                return;
            }
            let reached = script.reached.lock().unwrap().take();
            if let Some(reached) = reached {
                let _ = reached.send(());
            }
            if let Stop::Crash(_) = script.stop {
                // The test drops this task here.
                std::future::pending::<()>().await;
            }
            let release = script.release.lock().unwrap().take();
            if let Some(release) = release {
                let _ = release.await;
            }
        })
    })
}

struct Paused {
    task: JoinHandle<anyhow::Result<()>>,
    release: oneshot::Sender<()>,
}

impl Paused {
    async fn finish(self) -> Result<(), String> {
        let _ = self.release.send(());
        self.task
            .await
            .map_err(|e| format!("a resumed batch panicked: {e}"))?
            .map_err(|e| format!("a resumed batch failed: {e:#}"))
    }
}

enum Started {
    Finished,
    Crashed,
    Paused(Paused),
}

/// Runs `work` as a task under `stop`; returns once it finished, crashed
/// (dropped at its stop) or paused there.
async fn start(
    stop: Stop,
    work: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> Result<Started, String> {
    let (reached_tx, reached_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let script = Arc::new(Script {
        stop,
        reached: Mutex::new(Some(reached_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let mut task = tokio::spawn(SCRIPT.scope(script, work));
    tokio::select! {
        finished = &mut task => {
            finished
                .map_err(|e| format!("a batch panicked: {e}"))?
                .map_err(|e| format!("a batch failed without an injected fault: {e:#}"))?;
            Ok(Started::Finished)
        }
        Ok(()) = reached_rx => match stop {
            Stop::Crash(_) => {
                task.abort();
                let _ = task.await;
                Ok(Started::Crashed)
            }
            Stop::Pause(_) => Ok(Started::Paused(Paused { task, release: release_tx })),
            Stop::Never => unreachable!("a batch without a stop reported one"),
        },
    }
}

// ---------------------------------------------------------------------------
// The environment: one database and index prefix for the whole test; each
// case has fresh users, orders and events, and its checks look at those only.

struct Env {
    settings: Settings,
    db: PgPool,
    store: SearchIndex,
}

/// A relay's bus and a second projector for redeliveries, as after a
/// (re)start: fresh in-process state (the refresher), the real code.
struct Pipeline {
    bus: Arc<dyn Bus>,
    projector: Arc<Projector>,
}

impl Env {
    async fn new() -> Env {
        let mut settings = test_settings().await;
        // Only the projector's refresh makes an order searchable.
        settings.index_refresh_interval = "-1".to_owned();
        let db = sightline::db::connect_and_migrate(&settings)
            .await
            .expect("Failed to migrate the test database");
        let store = SearchIndex::from_settings(&settings).unwrap();
        store
            .ensure_exists()
            .await
            .expect("Failed to create the indices");
        Env {
            settings,
            db,
            store,
        }
    }

    fn pipeline(&self) -> Pipeline {
        let projector = || {
            Projector::new(self.db.clone(), self.store.clone(), RefreshMode::Explicit)
                .with_step_hook(step_hook())
        };
        Pipeline {
            bus: Arc::new(InProcessBus::new(projector())),
            projector: Arc::new(projector()),
        }
    }
}

struct Cleanup(Settings);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_test_data(&self.0);
    }
}

#[derive(Default)]
struct Tally {
    batches: AtomicUsize,
    crashes: AtomicUsize,
    pauses: AtomicUsize,
    overtaken: AtomicUsize,
    notices_skipped: AtomicUsize,
    /// Batches that really reached their stop, by kind and step: what the
    /// test says it injected, counted where it happened.
    reached: Mutex<HashMap<(&'static str, Step), usize>>,
}

impl Tally {
    fn reached(&self, kind: &'static str, step: Step) {
        *self
            .reached
            .lock()
            .unwrap()
            .entry((kind, step))
            .or_default() += 1;
    }

    fn count(&self, kind: &'static str, step: Step) -> usize {
        self.reached
            .lock()
            .unwrap()
            .get(&(kind, step))
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// One case.

async fn run_case(env: &Env, case: &Case, tally: &Tally) -> Result<(), String> {
    let (users, planned) = history(&case.orders);
    let mut committed = 0;
    let mut pipeline = env.pipeline();
    let mut paused: VecDeque<Paused> = VecDeque::new();

    for op in &case.ops {
        let (stop, started) = match op {
            Op::Commit(n) => {
                let upto = (committed + n).min(planned.len());
                commit(&env.db, &planned[committed..upto]).await;
                committed = upto;
                continue;
            }
            Op::Resume => {
                if let Some(batch) = paused.pop_front() {
                    batch.finish().await?;
                }
                check_now(env, &users).await?;
                continue;
            }
            Op::Relay { size, stop } => {
                let relay = Relay::new(
                    env.db.clone(),
                    pipeline.bus.clone(),
                    *size,
                    Duration::from_secs(60),
                );
                let stop = bounded(*stop, &paused);
                let work = async move { relay.relay_batch().await.map(|_| ()) };
                (stop, start(stop, work).await?)
            }
            Op::Redeliver { picks, stop } => {
                let events = committed_events(&env.db, &users).await;
                if events.is_empty() {
                    continue;
                }
                let batch: Vec<OutboxEvent> =
                    picks.iter().map(|i| i.get(&events).clone()).collect();
                let projector = pipeline.projector.clone();
                let stop = bounded(*stop, &paused);
                let work = async move { projector.project(&batch).await.map(|_| ()) };
                (stop, start(stop, work).await?)
            }
        };
        tally.batches.fetch_add(1, Ordering::Relaxed);
        if !paused.is_empty() {
            tally.overtaken.fetch_add(1, Ordering::Relaxed);
        }
        match started {
            Started::Finished => {}
            Started::Crashed => {
                tally.crashes.fetch_add(1, Ordering::Relaxed);
                if let Stop::Crash(step) = stop {
                    tally.reached("crash", step);
                }
                // A restart: the relay and projectors come back fresh.
                pipeline = env.pipeline();
            }
            Started::Paused(batch) => {
                tally.pauses.fetch_add(1, Ordering::Relaxed);
                if let Stop::Pause(step) = stop {
                    tally.reached("pause", step);
                }
                paused.push_back(batch);
            }
        }
        check_now(env, &users)
            .await
            .map_err(|e| format!("after {op:?} (stopped {stop:?}): {e}"))?;
    }

    // The rest: paused batches go on, the write side commits the remainder,
    // and the relay delivers whatever it has not marked published.
    while let Some(batch) = paused.pop_front() {
        batch.finish().await?;
    }
    check_now(env, &users).await?;
    commit(&env.db, &planned[committed..]).await;
    drain(env, &pipeline, &users).await?;
    check_now(env, &users).await?;
    check_final(env, &users, &planned, tally).await
}

/// Pauses only while fewer than [`MAX_PAUSED`] batches wait.
fn bounded(stop: Stop, paused: &VecDeque<Paused>) -> Stop {
    match stop {
        Stop::Pause(_) if paused.len() >= MAX_PAUSED => Stop::Never,
        stop => stop,
    }
}

async fn commit(db: &PgPool, planned: &[Planned]) {
    if planned.is_empty() {
        return;
    }
    let mut tx = db.begin().await.unwrap();
    for p in planned {
        outbox::append(&mut tx, p.new_event()).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn committed_events(db: &PgPool, users: &[Uuid]) -> Vec<OutboxEvent> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, schema_version, aggregate_id, aggregate_version,
                user_id, payload, created_at
         FROM outbox WHERE user_id = ANY($1) ORDER BY id",
    )
    .bind(users)
    .fetch_all(db)
    .await
    .unwrap()
}

async fn unpublished(db: &PgPool, users: &[Uuid]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE user_id = ANY($1) AND published_at IS NULL",
    )
    .bind(users)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Relay batches until every event is marked published. (A crashed batch's
/// rows are locked until its rollback lands: the relay skips them meanwhile.)
async fn drain(env: &Env, pipeline: &Pipeline, users: &[Uuid]) -> Result<(), String> {
    let relay = Relay::new(
        env.db.clone(),
        pipeline.bus.clone(),
        100,
        Duration::from_secs(60),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while unpublished(&env.db, users).await > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err("the relay never published every event".into());
        }
        if relay
            .relay_batch()
            .await
            .map_err(|e| format!("a relay batch failed: {e:#}"))?
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow, Debug)]
struct NoticeRow {
    order_id: Uuid,
    order_version: i32,
    kind: String,
    status: String,
}

async fn notices(db: &PgPool, users: &[Uuid]) -> Vec<NoticeRow> {
    sqlx::query_as(
        "SELECT order_id, order_version, kind, status FROM notices
         WHERE user_id = ANY($1) ORDER BY seq",
    )
    .bind(users)
    .fetch_all(db)
    .await
    .unwrap()
}

/// What search (not the real-time GET) shows of an order: its version.
async fn searchable_version(store: &SearchIndex, user_id: Uuid, order_id: Uuid) -> Option<i64> {
    store
        .find(user_id, order_id)
        .await
        .expect("search failed")
        .map(|doc| doc.version)
}

/// What must hold at every moment, batches paused mid-way included.
async fn check_now(env: &Env, users: &[Uuid]) -> Result<(), String> {
    let owners: HashMap<Uuid, Uuid> = committed_events(&env.db, users)
        .await
        .into_iter()
        .map(|e| (e.aggregate_id, e.user_id))
        .collect();
    let mut shown: HashMap<Uuid, Option<i64>> = HashMap::new();
    for (order_id, user_id) in &owners {
        shown.insert(
            *order_id,
            searchable_version(&env.store, *user_id, *order_id).await,
        );
    }

    // A notice never lies: search shows what it announces (or newer).
    let log = notices(&env.db, users).await;
    let mut last_noticed: HashMap<Uuid, i32> = HashMap::new();
    for notice in &log {
        if notice.kind != "order-visible" {
            return Err(format!("an unexpected notice: {notice:?}"));
        }
        let version = i64::from(notice.order_version);
        let searchable = shown.get(&notice.order_id).copied().flatten();
        if searchable.is_none_or(|v| v < version) {
            return Err(format!(
                "a notice lies: {notice:?} is recorded, search shows {searchable:?}"
            ));
        }
        // An order's notices never go back a version.
        if let Some(before) = last_noticed.insert(notice.order_id, notice.order_version)
            && before >= notice.order_version
        {
            return Err(format!(
                "order {} noticed at version {} after version {before}",
                notice.order_id, notice.order_version
            ));
        }
    }

    // Marked published means taken: searchable and noticed (or a newer version is).
    let published: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT aggregate_id, aggregate_version FROM outbox
         WHERE user_id = ANY($1) AND published_at IS NOT NULL",
    )
    .bind(users)
    .fetch_all(&env.db)
    .await
    .unwrap();
    for (order_id, version) in published {
        let searchable = shown.get(&order_id).copied().flatten();
        if searchable.is_none_or(|v| v < i64::from(version)) {
            return Err(format!(
                "order {order_id} v{version} is marked published, search shows {searchable:?}"
            ));
        }
        if last_noticed.get(&order_id).is_none_or(|v| *v < version) {
            return Err(format!(
                "order {order_id} v{version} is marked published, its notice is missing \
                 (last noticed {:?})",
                last_noticed.get(&order_id)
            ));
        }
    }
    Ok(())
}

/// `user_summaries`: revision, placed, cancelled, spent per currency.
type SummaryRow = (i64, i64, i64, sqlx::types::Json<BTreeMap<String, i64>>);

/// What exactly-once, in-order delivery would have left.
async fn check_final(
    env: &Env,
    users: &[Uuid],
    planned: &[Planned],
    tally: &Tally,
) -> Result<(), String> {
    let parked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE user_id = ANY($1) AND parked")
            .bind(users)
            .fetch_one(&env.db)
            .await
            .unwrap();
    if parked > 0 {
        return Err(format!("{parked} events were parked"));
    }

    // The orders index: every order as its last event left it, once.
    let expected = expected_orders(planned);
    for (order_id, doc) in &expected {
        let found = env
            .store
            .find(doc.user_id, *order_id)
            .await
            .expect("search failed");
        if found.as_ref() != Some(doc) {
            return Err(format!(
                "order {order_id}: search shows {found:?}, exactly-once delivery {doc:?}"
            ));
        }
    }
    for user_id in users {
        let page = env
            .store
            .search(*user_id, None, 100, None)
            .await
            .expect("search failed");
        let mine = expected.values().filter(|d| d.user_id == *user_id).count();
        if page.orders.len() != mine {
            return Err(format!(
                "user {user_id}: search lists {} orders, {mine} were placed",
                page.orders.len()
            ));
        }
    }

    // The summaries, in the read store and in the projector's own table.
    for user_id in users {
        let want = expected_summary(*user_id, planned);
        let in_store = env.store.summary(*user_id).await.expect("get failed");
        if in_store != want {
            return Err(format!(
                "user {user_id}: the read store's summary is {in_store:?}, exactly-once {want:?}"
            ));
        }
        let in_db: Option<SummaryRow> = sqlx::query_as(
            "SELECT revision, orders_placed, orders_cancelled, spent_cents
                 FROM user_summaries WHERE user_id = $1 AND revision > 0",
        )
        .bind(user_id)
        .fetch_optional(&env.db)
        .await
        .unwrap();
        let in_db = in_db.map(|(r, p, c, s)| (r, p, c, s.0));
        let want_db = want.map(|s| {
            (
                s.revision,
                s.orders_placed,
                s.orders_cancelled,
                s.spent_cents,
            )
        });
        if in_db != want_db {
            return Err(format!(
                "user {user_id}: user_summaries has {in_db:?}, exactly-once {want_db:?}"
            ));
        }
    }

    // The notice log: each order's last notice announces its last version,
    // with that version's status; a version is noticed at most once; an
    // older version may go unnoticed (overtaken), never a newer one.
    let log = notices(&env.db, users).await;
    for (order_id, doc) in &expected {
        let mine: Vec<&NoticeRow> = log.iter().filter(|n| n.order_id == *order_id).collect();
        let Some(last) = mine.last() else {
            return Err(format!("order {order_id} was never noticed"));
        };
        if i64::from(last.order_version) != doc.version || last.status != doc.status.as_str() {
            return Err(format!(
                "order {order_id}: last notice {last:?}, search shows v{} {}",
                doc.version,
                doc.status.as_str()
            ));
        }
        let versions: Vec<i32> = mine.iter().map(|n| n.order_version).collect();
        let mut unique = versions.clone();
        unique.dedup();
        if unique != versions {
            return Err(format!("order {order_id} noticed twice: {versions:?}"));
        }
        tally
            .notices_skipped
            .fetch_add(doc.version as usize - versions.len(), Ordering::Relaxed);
    }
    if log.len() > planned.len() {
        return Err(format!(
            "{} notices for {} events",
            log.len(),
            planned.len()
        ));
    }
    Ok(())
}

#[test]
fn any_delivery_ends_equal_to_exactly_once_in_order_needs_elasticsearch() {
    crate::helpers::require_elasticsearch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = runtime.block_on(Env::new());
    let _cleanup = Cleanup(env.settings.clone());
    let tally = Tally::default();
    // A fixed seed unless PROPTEST_RNG_SEED names another: the run is
    // repeatable, so the minimum of injected faults asserted below holds on
    // every run (a random seed would make it a matter of luck). Another
    // seed explores other histories: PROPTEST_RNG_SEED=<u64>.
    let rng_seed = match Config::default().rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        chosen => chosen,
    };
    eprintln!("properties: seed {rng_seed}");
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        rng_seed,
        // Every shrinking step is a run against the real services.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        runtime
            .block_on(run_case(&env, &case, &tally))
            .map_err(TestCaseError::fail)
    });
    eprintln!(
        "properties: {CASES} cases, {} batches: {} crashed, {} paused, {} ran while another \
         was paused; {} older versions went unnoticed (overtaken)",
        tally.batches.load(Ordering::Relaxed),
        tally.crashes.load(Ordering::Relaxed),
        tally.pauses.load(Ordering::Relaxed),
        tally.overtaken.load(Ordering::Relaxed),
        tally.notices_skipped.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The faults were injected, at every boundary: a change that stopped
    // crashing or pausing batches (or stopped reaching a step) fails here
    // instead of passing a property it no longer tests.
    let mut short = vec![];
    for step in STEPS {
        for kind in ["crash", "pause"] {
            let n = tally.count(kind, step);
            eprintln!("properties: {kind} at {step:?}: {n}");
            if n < MIN_INJECTED {
                short.push(format!("{kind} at {step:?}: {n}"));
            }
        }
    }
    assert!(
        short.is_empty(),
        "fewer than {MIN_INJECTED} batches were made to stop at each step boundary: {short:?}"
    );
    assert!(
        tally.overtaken.load(Ordering::Relaxed) >= MIN_INJECTED,
        "batches rarely ran while another was paused"
    );
}
