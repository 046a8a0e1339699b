//! Open-loop order load and visibility latency: orders are sent at fixed
//! intervals whatever the responses do, spread round-robin over users that
//! each hold an `/api/events` stream; the latency of an order runs from its
//! POST's 201 to its `order-visible` event arriving on the owner's stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sightline_core::monitoring::{BATCH_STAGE_SECONDS, BATCH_STAGES};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::server::{Bench, Server};
use super::sse;
use super::stats::Summary;

/// One `/api/events` stream per token, read in this process; the arrival
/// time of every `order-visible` is kept (first arrival per order).
pub struct Streams {
    pub visible: Arc<Mutex<HashMap<Uuid, Instant>>>,
    tasks: Vec<JoinHandle<()>>,
    closed: Arc<AtomicUsize>,
}

impl Streams {
    /// Opens the streams and returns once every one has had `ready`.
    /// With several web instances the streams are spread over them in turn.
    pub async fn open(servers: &[SocketAddr], tokens: &[String]) -> anyhow::Result<Self> {
        let visible = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(tokens.len());
        for (token, server) in tokens.iter().zip(servers.iter().cycle()) {
            let mut stream = sse::connect(*server, None, "/api/events", Some(token)).await?;
            stream
                .expect("ready")
                .await
                .context("waiting for `ready`")?;
            let visible = visible.clone();
            let closed = closed.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(event)) = stream.next().await {
                    let at = Instant::now();
                    if event.kind == "order-visible"
                        && let Some(id) = sse::order_id(&event)
                    {
                        visible.lock().unwrap().entry(id).or_insert(at);
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            }));
        }
        Ok(Self {
            visible,
            tasks,
            closed,
        })
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }

    /// Waits until every order in `created` has arrived, or nothing new has
    /// arrived for `quiet`, or `cap` has passed.
    pub async fn wait_for(&self, created: &HashMap<Uuid, Instant>, quiet: Duration, cap: Duration) {
        let started = Instant::now();
        let (mut seen_before, mut progress_at) = (0, started);
        loop {
            let seen = {
                let visible = self.visible.lock().unwrap();
                created.keys().filter(|id| visible.contains_key(id)).count()
            };
            let now = Instant::now();
            if seen == created.len() {
                return;
            }
            if seen > seen_before {
                (seen_before, progress_at) = (seen, now);
            }
            if now - progress_at >= quiet || now - started >= cap {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How long the wait for outstanding notices goes on without any arriving.
pub const QUIET: Duration = Duration::from_secs(10);

/// What the sender saw.
#[derive(Default)]
pub struct Offered {
    /// Order id → when its 201 arrived.
    pub created: HashMap<Uuid, Instant>,
    pub sent: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the first send to the last 201.
    pub elapsed: Duration,
}

/// Sends `rate × duration` orders open-loop, user `i % tokens.len()` placing
/// order `i`, and returns once every request has been answered.
pub async fn offer(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    rate: f64,
    duration: Duration,
) -> Offered {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let url: Arc<str> = format!("{base}/api/orders").into();
    let results = Arc::new(Mutex::new(Offered::default()));
    let last_ok = Arc::new(Mutex::new(None::<Instant>));
    let start = Instant::now() + Duration::from_millis(20);
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        let (http, url, results, last_ok) =
            (http.clone(), url.clone(), results.clone(), last_ok.clone());
        let auth = format!("Bearer {}", tokens[i % tokens.len()]);
        requests.push(tokio::spawn(async move {
            let id = Uuid::new_v4();
            let body = serde_json::json!({
                "id": id,
                "items": [
                    {"sku": format!("BENCH-{}", i % 50), "quantity": 1 + (i % 3) as i64, "unit_price_cents": 1299},
                    {"sku": "BENCH-GIFTWRAP", "quantity": 1, "unit_price_cents": 250}
                ],
                "note": "benchmark order"
            });
            let response = http
                .post(&*url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            let at = Instant::now();
            let mut results = results.lock().unwrap();
            results.sent += 1;
            match response {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    results.created.insert(id, at);
                    drop(results);
                    let mut last = last_ok.lock().unwrap();
                    *last = Some(last.map_or(at, |l: Instant| l.max(at)));
                }
                Ok(r) => {
                    results.errors += 1;
                    results
                        .first_error
                        .get_or_insert_with(|| format!("POST /api/orders answered {}", r.status()));
                }
                Err(e) => {
                    results.errors += 1;
                    results
                        .first_error
                        .get_or_insert_with(|| format!("POST /api/orders failed: {e}"));
                }
            }
        }));
    }
    for request in requests {
        let _ = request.await;
    }
    let mut offered = std::mem::take(&mut *results.lock().unwrap());
    offered.elapsed = last_ok
        .lock()
        .unwrap()
        .map_or(Duration::ZERO, |last| last.saturating_duration_since(start));
    offered
}

#[derive(Clone)]
pub struct LoadResult {
    pub offered_rate: f64,
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Orders whose notice had not arrived when the wait ended.
    pub lost: usize,
    /// 201s per second, first send to last 201.
    pub achieved_rate: f64,
    /// 201 → `order-visible`, ms; an order never seen counts with the time
    /// waited for it (a lower bound).
    pub latency: Summary,
    /// CPU used while sending and waiting, in cores: the server process and
    /// this one (the load generator and the stream readers).
    pub server_cpu: f64,
    pub bench_cpu: f64,
    /// Elasticsearch's CPU in the same window (0 when unknown).
    pub es_cpu: f64,
    /// CPU of the PostgreSQL processes (every `postgres` process on the
    /// machine: the bench's server is the only one), 1.0 = one core.
    pub pg_cpu: f64,
    /// CPU of the NATS servers (every `nats-server` process: the cluster's
    /// three nodes), 1.0 = one core; ~0 with the in-process bus.
    pub nats_cpu: f64,
    /// Bytes each component wrote to disk during the step.
    pub written: Written,
    /// The step's measuring window (sending, then waiting for the last
    /// notices), s: what the CPU shares are averaged over.
    pub window_secs: f64,
    /// CPU of each process of the scenario (the server, then its helpers),
    /// 1.0 = one core; `server_cpu` is their sum.
    pub instance_cpu: Vec<f64>,
    /// Share of the whole machine's CPU time that was busy (`/proc/stat`),
    /// 1.0 = every core: when it nears 1.0 the box, not a lock, is the wall.
    pub machine_busy: f64,
    /// Where the server's relay batches spent their time: mean ms per
    /// stage, from its `BATCH_STAGE_SECONDS` histogram.
    pub stages: Vec<(String, f64)>,
    /// Relay batches and the events they carried, warm-up included.
    pub batches: u64,
    pub events: u64,
    /// PostgreSQL wait events of the server's sessions during the step
    /// (samples, most frequent first; see `waits`).
    pub waits: Vec<(String, u64)>,
    /// The statements with the most execution time in the step's database,
    /// and the execution time of all its statements, ms (see `statements`).
    pub statements: (Vec<super::statements::Statement>, f64),
}

impl LoadResult {
    /// CPU µs per order committed, of a process (or group) that used
    /// `cores` on average over the step's window.
    pub fn us_per_order(&self, cores: f64) -> f64 {
        cores * self.window_secs / (self.ok as f64).max(1.0) * 1e6
    }

    /// The bar of the maximum-rate search.
    pub fn sustained(&self, p99_limit_ms: f64) -> bool {
        self.latency.p99 <= p99_limit_ms
            && self.lost == 0
            && self.errors as f64 <= 0.001 * self.sent as f64
            && self.achieved_rate >= 0.95 * self.offered_rate
    }
}

/// Latencies of the orders that were created, in ms.
pub fn latencies(
    created: &HashMap<Uuid, Instant>,
    visible: &HashMap<Uuid, Instant>,
    waited_until: Instant,
) -> (Vec<f64>, usize) {
    let mut lost = 0;
    let samples = created
        .iter()
        .map(|(id, at)| {
            let seen = visible.get(id).copied().unwrap_or_else(|| {
                lost += 1;
                waited_until
            });
            seen.saturating_duration_since(*at).as_secs_f64() * 1000.0
        })
        .collect();
    (samples, lost)
}

/// Statements listed per step (the most execution time first).
const STATEMENTS: i64 = 5;

/// One scenario: a fresh server with `knobs`, `users` users each with an
/// open stream, a short warm-up, then `rate` orders/s for `duration`.
pub async fn scenario(
    bench: &Bench,
    label: &str,
    knobs: &[(&str, &str)],
    users: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    scenario_with(bench, label, knobs, &[], users, rate, duration).await
}

/// [`scenario`] with more instances beside the server, one per entry of
/// `helpers` (its roles, e.g. `projector` or `web`).
pub async fn scenario_with(
    bench: &Bench,
    label: &str,
    knobs: &[(&str, &str)],
    helpers: &[&str],
    users: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let mut server = bench.start_server(label, knobs).await?;
    for roles in helpers {
        if let Err(e) = bench.start_helper(&mut server, roles).await {
            server.stop(bench).await?;
            return Err(e);
        }
    }
    let waits = super::waits::start(bench.admin.clone());
    let mut result = measure(bench, &server, users, rate, duration).await;
    let waits = waits.finish().await;
    if let Ok(r) = result.as_mut() {
        r.waits = waits;
        r.statements = super::statements::top(&bench.admin, &server.name, STATEMENTS).await;
    }
    // The servers' own view (lag histograms, counters), for digging deeper.
    let mut texts = Vec::new();
    for (i, base) in server.bases().iter().enumerate() {
        if let Ok(response) = bench.http.get(format!("{base}/metrics")).send().await
            && let Ok(text) = response.text().await
        {
            let name = match i {
                0 => "metrics".to_owned(),
                i => format!("{i}.metrics"),
            };
            let _ = std::fs::write(server.log.with_extension(name), &text);
            texts.push(text);
        }
    }
    if let Ok(r) = result.as_mut() {
        (r.stages, r.batches, r.events) = stage_means(&texts);
    }
    server.stop(bench).await?;
    result
}

/// The running totals read beside the stages: the table's column, the
/// server's histogram (seconds from the event's commit).
pub const SINCE_COMMIT: [(&str, &str); 2] = [
    ("searchable", "sightline_commit_to_searchable_seconds"),
    ("sent", "sightline_commit_to_notice_sent_seconds"),
];

/// Mean ms per stage from the Prometheus texts of the scenario's
/// processes (summed), and how many batches and events ran.
fn stage_means(texts: &[String]) -> (Vec<(String, f64)>, u64, u64) {
    // A line's value summed over the processes that have it.
    let sum_of = |prefix: &str| {
        texts
            .iter()
            .filter_map(|metrics| {
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .reduce(|a, b| a + b)
    };
    let value = |name: &str, stage: &str| {
        sum_of(&format!(
            "{BATCH_STAGE_SECONDS}_{name}{{stage=\"{stage}\"}} "
        ))
    };
    let stages: Vec<(String, f64)> = BATCH_STAGES
        .iter()
        .filter_map(|stage| {
            let (sum, count) = (value("sum", stage)?, value("count", stage)?);
            (count > 0.0).then(|| (stage.to_string(), sum / count * 1000.0))
        })
        .collect();
    // Two running totals beside the stages, from an event's commit: to its
    // batch being searchable, and to its notice leaving on a stream. Their
    // difference is what follows the refresh: recording the notice, the
    // NOTIFY, the hub and the socket.
    let since_commit = |name: &str| {
        let read = |part: &str| sum_of(&format!("{name}_{part} "));
        let (sum, count) = (read("sum")?, read("count")?);
        (count > 0.0).then(|| sum / count * 1000.0)
    };
    let stages =
        stages
            .into_iter()
            .chain(SINCE_COMMIT.iter().filter_map(|(column, metric)| {
                since_commit(metric).map(|ms| (column.to_string(), ms))
            }))
            .collect();
    let batches = value("count", "claim").unwrap_or(0.0) as u64;
    let events = value("count", "waiting").unwrap_or(0.0) as u64;
    (stages, batches, events)
}

async fn measure(
    bench: &Bench,
    server: &Server,
    users: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let ids = bench.seed_users(server, users).await?;
    let tokens = bench.seed_sessions(server, &ids).await?;
    let streams = Streams::open(&server.web_addrs(), &tokens).await?;

    // Warm-up (not measured): connections, the index, the first batches.
    let warm = offer(
        &bench.http,
        &server.base,
        &tokens,
        rate.min(50.0),
        Duration::from_secs(1),
    )
    .await;
    if let Some(e) = warm.first_error {
        anyhow::bail!("warm-up failed: {e}");
    }
    streams
        .wait_for(&warm.created, QUIET, Duration::from_secs(15))
        .await;

    let es_pid = bench.elasticsearch_pid().await;
    let es_cpu_seconds = || es_pid.map_or(0.0, cpu_seconds);
    let started = Instant::now();
    let pids = server.pids();
    let instances_before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let cpu_before = (
        instances_before.iter().sum::<f64>(),
        cpu_seconds(std::process::id()),
        es_cpu_seconds(),
    );
    let pg_before = cpu_seconds_of("postgres");
    let nats_before = cpu_seconds_of("nats-server");
    let io_before = written_bytes(&pids);
    let machine_before = machine_ticks();
    let offered = offer(&bench.http, &server.base, &tokens, rate, duration).await;
    streams
        .wait_for(&offered.created, QUIET, Duration::from_secs(120))
        .await;
    let waited_until = Instant::now();
    let window = waited_until.duration_since(started).as_secs_f64();
    let instance_cpu: Vec<f64> = pids
        .iter()
        .zip(&instances_before)
        .map(|(pid, before)| (cpu_seconds(*pid) - before) / window)
        .collect();
    let server_cpu = instance_cpu.iter().sum::<f64>();
    let bench_cpu = (cpu_seconds(std::process::id()) - cpu_before.1) / window;
    let es_cpu = (es_cpu_seconds() - cpu_before.2) / window;
    let since = |before: &HashMap<u32, f64>, after: HashMap<u32, f64>| {
        after
            .iter()
            .map(|(pid, after)| after - before.get(pid).copied().unwrap_or(0.0))
            .sum::<f64>()
    };
    let pg_cpu = since(&pg_before, cpu_seconds_of("postgres")) / window;
    let nats_cpu = since(&nats_before, cpu_seconds_of("nats-server")) / window;
    let written = written_bytes(&pids).since(&io_before);
    let machine_after = machine_ticks();
    let machine_busy = {
        let busy = machine_after.0 - machine_before.0;
        let total = machine_after.1 - machine_before.1;
        if total > 0.0 { busy / total } else { 0.0 }
    };
    if streams.closed() > 0 {
        eprintln!(
            "  warning: {} event stream(s) closed during the run",
            streams.closed()
        );
    }
    let (samples, lost) = {
        let visible = streams.visible.lock().unwrap();
        latencies(&offered.created, &visible, waited_until)
    };
    let ok = offered.created.len();
    Ok(LoadResult {
        offered_rate: rate,
        sent: offered.sent,
        ok,
        errors: offered.errors,
        first_error: offered.first_error,
        lost,
        achieved_rate: if offered.elapsed.is_zero() {
            0.0
        } else {
            ok as f64 / offered.elapsed.as_secs_f64()
        },
        latency: Summary::of(samples),
        server_cpu,
        bench_cpu,
        es_cpu,
        pg_cpu,
        nats_cpu,
        written,
        window_secs: window,
        instance_cpu,
        machine_busy,
        stages: Vec::new(),
        batches: 0,
        events: 0,
        waits: Vec::new(),
        statements: (Vec::new(), 0.0),
    })
}

/// The processes named `comm` (`postgres`, `nats-server`, `java`).
fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// CPU seconds of every process named `comm`, by pid (`postgres` backends
/// that exit during a step take their time with them; the pools keep
/// theirs open).
fn cpu_seconds_of(comm: &str) -> HashMap<u32, f64> {
    pids_named(comm)
        .into_iter()
        .map(|pid| (pid, cpu_seconds(pid)))
        .collect()
}

/// Bytes each component asked the disk to write so far (`write_bytes` of
/// `/proc/<pid>/io`: what reached the block layer, page cache write-back
/// included): a volume, not a count of syncs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    pub server: f64,
    pub postgres: f64,
    pub elasticsearch: f64,
    pub nats: f64,
}

impl Written {
    fn since(&self, before: &Written) -> Written {
        Written {
            server: self.server - before.server,
            postgres: self.postgres - before.postgres,
            elasticsearch: self.elasticsearch - before.elasticsearch,
            nats: self.nats - before.nats,
        }
    }
}

fn written_bytes(server: &[u32]) -> Written {
    let sum = |pids: &[u32]| pids.iter().map(|pid| io_write_bytes(*pid)).sum::<f64>();
    Written {
        server: sum(server),
        postgres: sum(&pids_named("postgres")),
        elasticsearch: sum(&pids_named("java")),
        nats: sum(&pids_named("nats-server")),
    }
}

/// `write_bytes` of one process (0 if unknown).
fn io_write_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The machine's (busy, total) CPU ticks so far, from `/proc/stat`.
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")) else {
        return (0.0, 0.0);
    };
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3 on.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}
