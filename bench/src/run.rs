//! The run's steps: the floor, visibility latency, seed settings vs tuned,
//! the maximum-rate search, SSE capacity, the buses and the replay, each
//! when `--only` lets it run, then the table and `latest.json`. Also what
//! the run records about the machine.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{Cli, Part};
use crate::load::{self, LoadResult};
use crate::report::{self, line};
use crate::results::Results;
use crate::server::Bench;
use crate::{bare_write, capacity, floor, replay};

/// Offered rates of the visibility test, orders/s.
const VISIBILITY_RATES: [u32; 3] = [50, 200, 1000];
/// Steps of the maximum-rate search, orders/s.
pub(crate) const RATE_STEPS: [u32; 10] = [200, 400, 700, 1000, 1400, 2000, 2800, 4000, 5600, 8000];
/// Users placing orders, each with an open stream.
pub(crate) const USERS: usize = 100;
/// A sustained rate keeps p99 within this.
const SUSTAINED_P99_MS: f64 = 1000.0;

/// The same-database read model (`READ_STORE=postgres`): measured beside
/// the default (Elasticsearch) in the visibility and maximum-rate parts.
const SAME_DATABASE: &[(&str, &str)] = &[("READ_STORE", "postgres")];

/// The seed's settings, as knobs of today's code.
const SEED_SETTINGS: &[(&str, &str)] = &[
    ("RELAY_WAKE", "poll"),
    ("RELAY_POLL_MS", "250"),
    ("RELAY_BATCH_SIZE", "100"),
    ("RELAY_CONCURRENCY", "1"),
    ("REFRESH_MODE", "wait-for"),
    ("INDEX_REFRESH_INTERVAL", "1s"),
];

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let quick = cli.quick;
    let step = Duration::from_secs(cli.step_secs.unwrap_or(if quick { 10 } else { 60 }));
    let streams = cli
        .sse_streams
        .unwrap_or(if quick { 2_000 } else { 18_000 });
    let floor_samples = if quick { 100 } else { 300 };
    let probe = Duration::from_secs(if quick { 10 } else { 30 });
    let runs = |part| cli.only.is_empty() || cli.only.contains(&part);
    let started = Instant::now();

    let mut bench = Bench::new().await?;
    bench.server_env = cli.server_env.clone();
    if !cli.rates.is_empty() {
        bench.rate_steps = cli.rates.clone();
    }
    bench.remove_leftovers().await?;
    if !crate::statements::prepare(&bench.admin).await {
        eprintln!(
            "pg_stat_statements is not loaded (scripts/services preloads it from a restart on): no per-statement times"
        );
    }
    let machine = machine(&bench).await?;
    let mode = if quick { "--quick" } else { "full" };
    eprintln!(
        "bench ({mode}): {} s per load step, {streams} SSE streams; server logs in {}",
        step.as_secs(),
        bench.out_dir.join("logs").display()
    );
    let mut results = Results::default();

    if runs(Part::Floor) {
        eprintln!("[1/6] floor");
        results.floor = Some(floor::measure(&bench, floor_samples).await?);
    }

    if runs(Part::Visibility) {
        eprintln!("[2/6] visibility latency");
        for rate in VISIBILITY_RATES {
            let label = format!("visibility-{rate}");
            let r = load::scenario(&bench, &label, &[], USERS, rate.into(), step).await?;
            eprintln!("  {rate}/s: {}", line(&r));
            results.visibility.push((rate, r));
            if runs(Part::Floor) {
                let f = floor::measure(&bench, floor_samples / 2).await?;
                eprintln!("  floor again: {:.1} ms", f.p50_sum());
                results.floors.push(f);
            }
        }
        eprintln!("[2/6] visibility latency, READ_STORE=postgres");
        for rate in VISIBILITY_RATES {
            let label = format!("visibility-postgres-{rate}");
            let r = load::scenario(&bench, &label, SAME_DATABASE, USERS, rate.into(), step).await?;
            eprintln!("  {rate}/s: {}", line(&r));
            results.pg_visibility.push((rate, r));
        }
    }

    if runs(Part::Seed) {
        eprintln!("[3/6] seed settings vs tuned defaults at 200/s");
        let seed =
            load::scenario(&bench, "seed-settings", SEED_SETTINGS, USERS, 200.0, step).await?;
        eprintln!("  seed:  {}", line(&seed));
        let tuned = load::scenario(&bench, "tuned", &[], USERS, 200.0, step).await?;
        eprintln!("  tuned: {}", line(&tuned));
        results.seed = Some((seed, tuned));
    }

    if runs(Part::Max) {
        eprintln!("[4/6] bare write rate (pgbench, the write transaction's SQL alone)");
        let bare = bare_write::measure(&bench, step).await?;
        eprintln!(
            "  {:.0} orders/s, mean {:.1} ms, {} clients",
            bare.rate, bare.latency_ms, bare.clients
        );
        results.bare_write = Some(bare);
        eprintln!("[4/6] maximum sustained rate (p99 <= 1 s)");
        let (steps, max) = max_rate(&bench, "max", |_| vec![], &[], step).await?;
        (results.steps, results.max_sustained) = (steps, Some(max));
        eprintln!("[4/6] maximum sustained rate, READ_STORE=postgres");
        let (steps, max) = max_rate(
            &bench,
            "max-postgres",
            |_| SAME_DATABASE.to_vec(),
            &[],
            step,
        )
        .await?;
        (results.pg_steps, results.pg_max_sustained) = (steps, Some(max));
        if runs(Part::Floor) {
            let f = floor::measure(&bench, floor_samples / 2).await?;
            eprintln!("  floor again: {:.1} ms", f.p50_sum());
            results.floors.push(f);
        }
    }

    if runs(Part::Sse) {
        eprintln!("[5/6] SSE capacity ({streams} idle streams)");
        results.sse = Some(capacity::measure(&bench, streams, probe).await?);
    }

    if runs(Part::Bus) {
        match crate::bus::fsync(&bench.out_dir, if quick { 1 } else { 2 }).await {
            Ok(f) => {
                eprintln!(
                    "[bus] the disk's fdatasync of one 8 kB write: {:.0} µs ({:.0}/s)",
                    f.micros, f.ops_per_sec
                );
                results.fsync = Some(f);
            }
            Err(e) => eprintln!("[bus] no fsync floor: {e:#}"),
        }
        eprintln!(
            "[bus] in-process vs NATS JetStream (one projector process, two) at 200/s, then each one's maximum"
        );
        let inprocess_max = results.max_sustained.and_then(|max| {
            results
                .steps
                .iter()
                .find(|(rate, _, _)| *rate == max)
                .map(|(_, r, _)| (max, r.clone()))
        });
        results.bus = crate::bus::compare(&bench, step, inprocess_max).await?;
    }

    if runs(Part::Fanout) {
        eprintln!("[fan-out] notices to several web instances at 200/s");
        results.fanout = crate::bus::fanout(&bench, step).await?;
    }

    if runs(Part::Journeys) {
        eprintln!("[journeys] 200/s with RECORD_JOURNEYS on and off, alternately");
        results.journeys = crate::bus::journeys(&bench, step, if quick { 1 } else { 2 }).await?;
    }

    if runs(Part::Replay) {
        let notices = if quick { 20_000 } else { 100_000 };
        eprintln!("[6/6] resume {notices} notices behind");
        let r = replay::measure(&bench, notices).await?;
        eprintln!("  {} notices in {:.1} s", r.received, r.seconds);
        results.replay = Some(r);
    }

    let table = report::table::table(&results, mode, step, &machine, started.elapsed());
    print!("{table}");
    if !cli.only.is_empty() {
        eprintln!("(--only: target/bench/latest.json left as it was)");
        return Ok(());
    }
    report::save(&bench.out_dir, &results, machine, &table)
}

/// Offers the rate steps in turn until one is not sustained; returns the
/// steps and the highest sustained rate (0 if none).
pub(crate) async fn max_rate(
    bench: &Bench,
    label: &str,
    // The server's settings for a step, by its label.
    settings: impl Fn(&str) -> Vec<(&'static str, &'static str)>,
    // The roles of the instances beside the server.
    helpers: &[&str],
    step: Duration,
) -> anyhow::Result<(Vec<(u32, LoadResult, bool)>, u32)> {
    let mut steps = Vec::new();
    for &rate in &bench.rate_steps {
        let step_label = format!("{label}-{rate}");
        let knobs = settings(&step_label);
        let r = load::scenario_with(
            bench,
            &step_label,
            &knobs,
            helpers,
            USERS,
            rate.into(),
            step,
        )
        .await?;
        let ok = r.sustained(SUSTAINED_P99_MS);
        eprintln!(
            "  {label} {rate}/s: {} -> {}",
            line(&r),
            if ok { "sustained" } else { "not sustained" }
        );
        steps.push((rate, r, ok));
        if !ok {
            break;
        }
    }
    let max = steps
        .iter()
        .take_while(|(_, _, ok)| *ok)
        .last()
        .map_or(0, |(rate, _, _)| *rate);
    Ok((steps, max))
}

/// Cores, memory and the versions of the two services.
async fn machine(bench: &Bench) -> anyhow::Result<Value> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let postgresql: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&bench.admin)
        .await?;
    let nodes = bench
        .http
        .get(format!(
            "{}/_nodes/_local?filter_path=nodes.*.version",
            bench.es_url
        ))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let nodes: Value = serde_json::from_slice(&nodes)?;
    let elasticsearch = nodes["nodes"]
        .as_object()
        .and_then(|n| n.values().next())
        .and_then(|n| n["version"].as_str())
        .unwrap_or("unknown")
        .to_owned();
    Ok(json!({
        "cores": cores,
        "memory_bytes": memory_bytes,
        "postgresql": postgresql,
        "elasticsearch": elasticsearch,
    }))
}
