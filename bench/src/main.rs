//! `bench`: Sightline's end-to-end benchmark (run it with `scripts/bench`).
//!
//! Everything is measured in one run against the real PostgreSQL and
//! Elasticsearch, with the release `sightline serve` binary as a child
//! process per scenario (fresh database and index prefix each). The machine
//! is shared and noisy, so only ratios within one run mean much: the floor
//! (bare PostgreSQL commit + bare searchable index call + bare SSE push) is
//! measured in the same run as everything compared with it.
//!
//! Prints a table and writes `target/bench/latest.json` (and the table to
//! `target/bench/latest.txt`). See docs/BENCHMARKS.md for what each number
//! means and the targets.

mod capacity;
mod floor;
#[cfg(test)]
mod golden;
mod load;
mod replay;
mod server;
mod sse;
mod stats;
mod waits;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use capacity::IDLE_USERS as IDLE;
use load::LoadResult;
use server::Bench;
use sightline_core::monitoring::BATCH_STAGES;
use stats::round2;

/// Sightline's end-to-end benchmark: floor, visibility latency, seed settings
/// vs tuned, maximum sustained rate, SSE capacity.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// A shorter run of the same: 10 s load steps, 2,000 SSE streams.
    #[arg(long)]
    quick: bool,
    /// Seconds per load step (default 60, or 10 with --quick).
    #[arg(long, value_name = "SECS")]
    step_secs: Option<u64>,
    /// Idle SSE streams to open (default 18,000, or 2,000 with --quick).
    #[arg(long, value_name = "N")]
    sse_streams: Option<usize>,
    /// Run only these parts, for iterating on one of them: the table is
    /// printed, latest.json is left alone.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// A setting every server of the run gets over the scenario's own, e.g.
    /// `--server-env RELAY_CONCURRENCY=1` (repeatable), for trying a knob.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    server_env: Vec<(String, String)>,
    /// The maximum-rate search's steps instead of the default ladder, e.g.
    /// `--only max --rates 1400` to offer one rate past capacity.
    #[arg(long, value_name = "N", value_delimiter = ',')]
    rates: Vec<u32>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Subcommand)]
enum Mode {
    /// Internal: hold idle SSE streams for the capacity test.
    #[command(hide = true)]
    SseClients(capacity::ClientArgs),
    /// Internal: a bare axum SSE server, for the capacity test's floor.
    #[command(hide = true)]
    SseFloorServer,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Floor,
    Visibility,
    Seed,
    Max,
    Sse,
    /// The in-process bus beside NATS JetStream (needs `scripts/services
    /// start nats`): 200/s and the maximum sustained rate of each.
    Bus,
    Replay,
}

/// Offered rates of the visibility test, orders/s.
const VISIBILITY_RATES: [u32; 3] = [50, 200, 1000];
/// Steps of the maximum-rate search, orders/s.
pub(crate) const RATE_STEPS: [u32; 10] = [200, 400, 700, 1000, 1400, 2000, 2800, 4000, 5600, 8000];
/// Users placing orders, each with an open stream.
const USERS: usize = 100;
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(Mode::SseClients(args)) => capacity::clients(args).await,
        Some(Mode::SseFloorServer) => capacity::floor_server().await,
        None => run(&cli).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What one run measured (a part left out with `--only` stays `None`).
#[derive(Default)]
struct Results {
    floor: Option<floor::Floor>,
    visibility: Vec<(u32, LoadResult)>,
    seed: Option<(LoadResult, LoadResult)>,
    steps: Vec<(u32, LoadResult, bool)>,
    max_sustained: Option<u32>,
    /// The same, with `READ_STORE=postgres`.
    pg_visibility: Vec<(u32, LoadResult)>,
    pg_steps: Vec<(u32, LoadResult, bool)>,
    pg_max_sustained: Option<u32>,
    sse: Option<capacity::Capacity>,
    /// Per bus (`inprocess`, `nats`): the 200/s scenario and the maximum
    /// sustained rate.
    bus: Vec<(&'static str, LoadResult, u32)>,
    /// The floor again after each visibility step and after the maximum
    /// search: the machine's noise, measured through the run.
    floors: Vec<floor::Floor>,
    replay: Option<replay::Replay>,
}

impl Results {
    /// The floor the targets compare with: the median of every floor
    /// measured in the run (the first and the interleaved ones).
    fn floor_p50(&self) -> Option<f64> {
        let mut all: Vec<f64> = self
            .floor
            .iter()
            .chain(&self.floors)
            .map(floor::Floor::p50_sum)
            .collect();
        if all.is_empty() {
            return None;
        }
        all.sort_by(f64::total_cmp);
        Some(stats::percentile(&all, 50.0))
    }

    /// Every floor of the run, in the order measured.
    fn floor_samples(&self) -> Vec<f64> {
        self.floor
            .iter()
            .chain(&self.floors)
            .map(|f| round2(f.p50_sum()))
            .collect()
    }
}

/// The knobs of a scenario on `bus`; NATS gets a stream of its own per
/// scenario (removed by its age limit).
fn bus_knobs(bus: &'static str, label: &str) -> Vec<(&'static str, &'static str)> {
    let mut knobs = vec![("BUS", bus)];
    if bus == "nats" {
        let stream = format!(
            "BENCH_{}_{}",
            std::process::id(),
            label
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                .to_uppercase()
        );
        knobs.push(("NATS_STREAM", Box::leak(stream.into_boxed_str())));
        knobs.push(("NATS_MAX_AGE_HOURS", "1"));
    }
    knobs
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
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
        eprintln!("[4/6] maximum sustained rate (p99 <= 1 s)");
        let (steps, max) = max_rate(&bench, "max", |_| vec![], step).await?;
        (results.steps, results.max_sustained) = (steps, Some(max));
        eprintln!("[4/6] maximum sustained rate, READ_STORE=postgres");
        let (steps, max) =
            max_rate(&bench, "max-postgres", |_| SAME_DATABASE.to_vec(), step).await?;
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
        eprintln!("[bus] in-process vs NATS JetStream at 200/s, then each one's maximum");
        for bus in ["inprocess", "nats"] {
            let label = format!("bus-{bus}-200");
            let knobs = bus_knobs(bus, &label);
            let r = load::scenario(&bench, &label, &knobs, USERS, 200.0, step).await?;
            eprintln!("  {bus} 200/s: {}", line(&r));
            let max = match (bus, results.max_sustained) {
                // Measured already with the same (default) settings.
                ("inprocess", Some(max)) => max,
                // A stream per step: every step's server starts its outbox
                // ids again, which one stream's duplicate window would drop.
                _ => {
                    max_rate(
                        &bench,
                        &format!("{bus}-max"),
                        |label| bus_knobs(bus, label),
                        step,
                    )
                    .await?
                    .1
                }
            };
            results.bus.push((bus, r, max));
        }
    }

    if runs(Part::Replay) {
        let notices = if quick { 20_000 } else { 100_000 };
        eprintln!("[6/6] resume {notices} notices behind");
        let r = replay::measure(&bench, notices).await?;
        eprintln!("  {} notices in {:.1} s", r.received, r.seconds);
        results.replay = Some(r);
    }

    let table = table(&results, mode, step, &machine, started.elapsed());
    print!("{table}");
    if !cli.only.is_empty() {
        eprintln!("(--only: target/bench/latest.json left as it was)");
        return Ok(());
    }
    let report = report(&results, machine).context("a part is missing")?;
    std::fs::write(
        bench.out_dir.join("latest.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(bench.out_dir.join("latest.txt"), &table)?;
    eprintln!("wrote {}", bench.out_dir.join("latest.json").display());
    Ok(())
}

/// Offers the rate steps in turn until one is not sustained; returns the
/// steps and the highest sustained rate (0 if none).
async fn max_rate(
    bench: &Bench,
    label: &str,
    // The server's settings for a step, by its label.
    settings: impl Fn(&str) -> Vec<(&'static str, &'static str)>,
    step: Duration,
) -> anyhow::Result<(Vec<(u32, LoadResult, bool)>, u32)> {
    let mut steps = Vec::new();
    for &rate in &bench.rate_steps {
        let step_label = format!("{label}-{rate}");
        let knobs = settings(&step_label);
        let r = load::scenario(bench, &step_label, &knobs, USERS, rate.into(), step).await?;
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

/// Latency percentiles per offered rate, as `latest.json` records them.
fn visibility_json(visibility: &[(u32, LoadResult)]) -> serde_json::Map<String, Value> {
    visibility
        .iter()
        .map(|(rate, r)| {
            let v = json!({
                "p50_ms": round2(r.latency.p50),
                "p95_ms": round2(r.latency.p95),
                "p99_ms": round2(r.latency.p99),
                "achieved_rate": round2(r.achieved_rate),
            });
            (rate.to_string(), v)
        })
        .collect()
}

/// The `latest.json` document.
fn report(r: &Results, machine: Value) -> Option<Value> {
    let floor_p50 = r.floor_p50()?;
    let replay = r.replay.as_ref()?;
    let (seed, tuned) = r.seed.as_ref()?;
    let sse = r.sse.as_ref()?;
    let visibility = visibility_json(&r.visibility);
    let bus: serde_json::Map<String, Value> = r
        .bus
        .iter()
        .map(|(bus, r, max)| {
            let v = json!({
                "p50_ms": round2(r.latency.p50),
                "p95_ms": round2(r.latency.p95),
                "p99_ms": round2(r.latency.p99),
                "achieved_rate": round2(r.achieved_rate),
                "max_sustained_rate": max,
            });
            ((*bus).to_owned(), v)
        })
        .collect();
    let latency_curve: Vec<Value> = r
        .visibility
        .iter()
        .filter(|(rate, _)| *rate < RATE_STEPS[0])
        .map(|(rate, r)| (rate, r, true))
        .chain(r.steps.iter().map(|(rate, r, ok)| (rate, r, *ok)))
        .map(|(rate, r, ok)| {
            json!({
                "rate": rate,
                "p50_ms": round2(r.latency.p50),
                "p99_ms": round2(r.latency.p99),
                "achieved_rate": round2(r.achieved_rate),
                "sustained": ok,
                // Where the CPU went, 1.0 = one core (machine: all cores).
                "cpu": {
                    "server": round2(r.server_cpu),
                    "postgres": round2(r.pg_cpu),
                    "elasticsearch": round2(r.es_cpu),
                    "load_generator": round2(r.bench_cpu),
                    "machine_busy": round2(r.machine_busy),
                },
            })
        })
        .collect();
    let memory_curve: Vec<Value> = sse
        .per_user
        .curve
        .iter()
        .map(|(streams, rss)| json!({ "streams": streams, "rss_bytes": rss }))
        .collect();
    let samples = r.floor_samples();
    Some(json!({
        "bus": bus,
        "floor_p50_ms": round2(floor_p50),
        "floor_samples_ms": samples,
        "floor_spread_ms": {
            "min": samples.iter().copied().fold(f64::INFINITY, f64::min),
            "max": samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        },
        "visibility": visibility,
        // One database or two (README): the same steps in both modes.
        "read_store": {
            "elasticsearch": {
                "visibility": visibility,
                "max_sustained_rate": r.max_sustained?,
            },
            "postgres": {
                "visibility": visibility_json(&r.pg_visibility),
                "max_sustained_rate": r.pg_max_sustained?,
            },
        },
        "seed_settings_p50_ms": round2(seed.latency.p50),
        "tuned_p50_ms": round2(tuned.latency.p50),
        "max_sustained_rate": r.max_sustained?,
        "sse_connections": sse.connections,
        "sse_rss_bytes_per_connection": sse.per_user.rss_per_connection.round() as u64,
        "sse_rss_bytes_per_connection_shared": sse.rss_per_connection.round() as u64,
        "sse_notice_p99_ms": round2(sse.notice.p99),
        "sse_hub_notice_p50_ms": round2(sse.hub_notice.p50),
        "sse_hub_notice_p99_ms": round2(sse.hub_notice.p99),
        "sse_fanout_streams": sse.fanout.count,
        "sse_fanout_p50_ms": round2(sse.fanout.p50),
        "sse_fanout_p99_ms": round2(sse.fanout.p99),
        "sse_fanout_all_ms": round2(sse.fanout.max),
        "sse_memory_curve": memory_curve,
        "latency_curve": latency_curve,
        "replay_notices": replay.notices,
        "replay_seconds": round2(replay.seconds),
        "machine": machine,
    }))
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

fn line(r: &LoadResult) -> String {
    let mut s = format!(
        "p50 {} p95 {} p99 {} ms, achieved {:.0}/s ({} ok",
        num(r.latency.p50),
        num(r.latency.p95),
        num(r.latency.p99),
        r.achieved_rate,
        r.ok,
    );
    if r.errors > 0 {
        let _ = write!(s, ", {} errors", r.errors);
    }
    if r.lost > 0 {
        let _ = write!(s, ", {} not visible in time", r.lost);
    }
    s.push(')');
    if let Some(e) = &r.first_error {
        let _ = write!(s, " first error: {e}");
    }
    s
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "-".into()
    }
}

fn table(r: &Results, mode: &str, step: Duration, m: &Value, elapsed: Duration) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nSightline benchmark ({mode} run, {} s load steps, {:.0} s total) — {} cores, {:.1} GiB, PostgreSQL {}, Elasticsearch {}",
        step.as_secs(),
        elapsed.as_secs_f64(),
        m["cores"],
        m["memory_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64,
        m["postgresql"].as_str().unwrap_or("?"),
        m["elasticsearch"].as_str().unwrap_or("?"),
    );
    if let Some(f) = &r.floor {
        let _ = writeln!(o, "\nFloor (p50 of sequential bare calls)");
        let _ = writeln!(
            o,
            "  PostgreSQL order + outbox commit   {:>8} ms",
            num(f.postgres.p50)
        );
        let _ = writeln!(
            o,
            "  Elasticsearch index, refresh=true  {:>8} ms",
            num(f.elasticsearch.p50)
        );
        let _ = writeln!(
            o,
            "  SSE push over loopback             {:>8} ms",
            num(f.sse.p50)
        );
        let _ = writeln!(
            o,
            "  floor                              {:>8} ms",
            num(f.p50_sum())
        );
    }
    if !r.floors.is_empty() {
        let _ = writeln!(
            o,
            "  floor through the run (after each visibility step, after the maximum search): {} ms; median {} ms",
            r.floor_samples()
                .iter()
                .map(|x| num(*x))
                .collect::<Vec<_>>()
                .join(", "),
            r.floor_p50().map_or("-".to_owned(), num)
        );
    }

    let header = |o: &mut String| {
        let _ = writeln!(
            o,
            "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "load",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "achieved",
            "errors",
            "lost",
            "srv cpu",
            "gen cpu",
            "es cpu",
            "pg cpu",
            "machine"
        );
    };
    let row = |o: &mut String, name: &str, r: &LoadResult| {
        let _ = writeln!(
            o,
            "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>8.0} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
            name,
            num(r.latency.p50),
            num(r.latency.p95),
            num(r.latency.p99),
            num(r.latency.max),
            r.achieved_rate,
            r.errors,
            r.lost,
            format!("{:.0}%", r.server_cpu * 100.0),
            format!("{:.0}%", r.bench_cpu * 100.0),
            format!("{:.0}%", r.es_cpu * 100.0),
            format!("{:.0}%", r.pg_cpu * 100.0),
            format!("{:.0}%", r.machine_busy * 100.0)
        );
    };
    let _ = writeln!(
        o,
        "\n(latency: POST's 201 -> order-visible on the owner's stream; lost: no notice when the wait ended, \
         counted with the time waited; srv/gen/es/pg cpu: CPU of the server / of this load generator / of \
         Elasticsearch / of PostgreSQL during the step, 100% = one core; machine: share of all cores busy)"
    );
    if !r.visibility.is_empty() {
        let _ = writeln!(
            o,
            "\nVisibility latency, 201 -> order-visible ({USERS} users with open streams, open loop)"
        );
        header(&mut o);
        for (rate, v) in &r.visibility {
            row(&mut o, &format!("{rate}/s"), v);
        }
        for (rate, v) in &r.pg_visibility {
            row(&mut o, &format!("{rate}/s READ_STORE=postgres"), v);
        }
        let _ = writeln!(
            o,
            "\nWhere the time goes: the server's relay batches, mean ms per stage (waiting: an event's \
             creation to its claim)"
        );
        let _ = write!(o, "  {:<22}", "load");
        for stage in BATCH_STAGES {
            let _ = write!(o, " {stage:>8}");
        }
        let _ = writeln!(o, " {:>8} {:>8}", "batches", "ev/batch");
        for (rate, v) in &r.visibility {
            let _ = write!(o, "  {:<22}", format!("{rate}/s"));
            for stage in BATCH_STAGES {
                let mean = v.stages.iter().find(|(s, _)| s == stage).map(|(_, m)| *m);
                let _ = write!(o, " {:>8}", mean.map_or("-".to_owned(), num));
            }
            let per_batch = v.events as f64 / v.batches.max(1) as f64;
            let _ = writeln!(o, " {:>8} {:>8.1}", v.batches, per_batch);
        }
    }
    if let Some((seed, tuned)) = &r.seed {
        let _ = writeln!(o, "\nSeed settings vs tuned defaults, 200/s");
        header(&mut o);
        row(&mut o, "seed settings", seed);
        row(&mut o, "tuned defaults", tuned);
    }
    if let Some(max) = r.max_sustained {
        let _ = writeln!(
            o,
            "\nMaximum sustained rate (p99 <= 1 s for {} s)",
            step.as_secs()
        );
        header(&mut o);
        for (rate, v, ok) in &r.steps {
            row(
                &mut o,
                &format!("{rate}/s {}", if *ok { "ok" } else { "FAIL" }),
                v,
            );
        }
        let _ = writeln!(o, "  maximum sustained: {max}/s");
        let _ = writeln!(
            o,
            "  where the relay's batches spent their time (mean ms per stage), and what the server's PostgreSQL sessions waited on (share of samples)"
        );
        for (rate, v, _) in &r.steps {
            let stages: Vec<String> = v
                .stages
                .iter()
                .map(|(stage, ms)| format!("{stage} {}", num(*ms)))
                .collect();
            let samples: u64 = v.waits.iter().map(|(_, n)| n).sum();
            let waits: Vec<String> = v
                .waits
                .iter()
                .take(5)
                .map(|(event, n)| {
                    format!("{event} {:.0}%", *n as f64 * 100.0 / samples.max(1) as f64)
                })
                .collect();
            let _ = writeln!(
                o,
                "  {:<8} {}\n  {:<8} waits: {}",
                format!("{rate}/s"),
                stages.join(", "),
                "",
                waits.join(", ")
            );
        }
    }
    if let Some(max) = r.pg_max_sustained {
        let _ = writeln!(o, "\nMaximum sustained rate, READ_STORE=postgres");
        header(&mut o);
        for (rate, v, ok) in &r.pg_steps {
            row(
                &mut o,
                &format!("{rate}/s {}", if *ok { "ok" } else { "FAIL" }),
                v,
            );
        }
        let _ = writeln!(o, "  maximum sustained: {max}/s");
    }
    // The cost of the separate read store: its latency over the same
    // database's, at the same offered rate.
    if !r.pg_visibility.is_empty() {
        let _ = writeln!(
            o,
            "\nOne database or two: visibility p50, 201 -> order-visible"
        );
    }
    for ((rate, es), (_, pg)) in r.visibility.iter().zip(&r.pg_visibility) {
        let _ = writeln!(
            o,
            "  {rate}/s: Elasticsearch p50 {} ms = {:.1} x READ_STORE=postgres p50 {} ms",
            num(es.latency.p50),
            es.latency.p50 / pg.latency.p50.max(0.001),
            num(pg.latency.p50)
        );
    }
    if let Some(s) = &r.sse {
        let _ = writeln!(o, "\nSSE capacity (one instance)");
        let _ = writeln!(
            o,
            "  streams held          {} ({} idle + 1 probe asked for, {} failed to open)",
            s.connections, s.target, s.failed
        );
        let u = &s.per_user;
        let _ = writeln!(
            o,
            "  one user per stream   {:.1} MiB with {} streams -> {:.1} MiB with {}: {:.0} B per stream ({} failed to open)",
            u.rss_before as f64 / 1048576.0,
            u.streams_before,
            u.rss_after as f64 / 1048576.0,
            u.connected,
            u.rss_per_connection,
            u.failed
        );
        let _ = writeln!(
            o,
            "  {IDLE} user, all streams {:.1} MiB with {} streams -> {:.1} MiB with {}: {:.0} B per stream",
            s.rss_before as f64 / 1048576.0,
            s.streams_before,
            s.rss_after as f64 / 1048576.0,
            s.streams_after,
            s.rss_per_connection
        );
        let _ = writeln!(
            o,
            "  bare axum SSE server  {:.0} B per stream (the same streams, measured the same way)",
            s.floor_rss_per_connection
        );
        let _ = writeln!(
            o,
            "  notice to one stream  p50 {} p99 {} ms ({} notices, {} not seen; POST's 201 -> order-visible)",
            num(s.notice.p50),
            num(s.notice.p99),
            s.notice.count,
            s.notice_lost
        );
        let _ = writeln!(
            o,
            "  hub alone, one stream p50 {} p99 {} max {} ms ({} notices, {} not seen; notice_log::record returned -> arrived)",
            num(s.hub_notice.p50),
            num(s.hub_notice.p99),
            num(s.hub_notice.max),
            s.hub_notice.count,
            s.hub_notice_lost
        );
        let _ = writeln!(
            o,
            "  fan-out, one notice   {} of {} idle streams (one user): p50 {} p99 {} all {} ms after it was recorded",
            s.fanout_received,
            s.connections.saturating_sub(1),
            num(s.fanout.p50),
            num(s.fanout.p99),
            num(s.fanout.max)
        );
        let curve: Vec<String> = s
            .per_user
            .curve
            .iter()
            .map(|(n, rss)| format!("{n} streams {:.1} MiB", *rss as f64 / 1048576.0))
            .collect();
        let _ = writeln!(
            o,
            "  memory curve          {} (one user per stream)",
            curve.join(", ")
        );
    }
    if let Some(p) = &r.replay {
        let _ = writeln!(
            o,
            "\nResume far behind: {} of {} notices replayed in {:.1} s ({:.0} notices/s)",
            p.received,
            p.notices,
            p.seconds,
            p.received as f64 / p.seconds.max(1e-9)
        );
    }

    let _ = writeln!(o, "\nTargets");
    let v200 = r.visibility.iter().find(|(rate, _)| *rate == 200);
    if let (Some((_, v)), Some(f)) = (v200, r.floor_p50()) {
        let times = v.latency.p50 / f;
        let _ = writeln!(
            o,
            "  200/s p50 <= 2 x floor      {} x floor   {}",
            num(times),
            mark(times <= 2.0)
        );
    }
    if let Some((_, v)) = v200 {
        let _ = writeln!(
            o,
            "  200/s p99 <= 250 ms         {} ms   {}",
            num(v.latency.p99),
            mark(v.latency.p99 <= 250.0)
        );
    }
    if let Some((seed, tuned)) = &r.seed {
        let times = tuned.latency.p50 / seed.latency.p50;
        let _ = writeln!(
            o,
            "  tuned <= 0.2 x seed (p50)   {:.3} x seed   {}",
            times,
            mark(times <= 0.2)
        );
    }
    if let Some(max) = r.max_sustained {
        let _ = writeln!(
            o,
            "  max sustained >= 3000/s     {max}/s   {}",
            mark(max >= 3000)
        );
    }
    if let Some(s) = &r.sse {
        let _ = writeln!(
            o,
            "  SSE >= 18000 streams        {}   {}",
            s.connections,
            mark(s.connections >= 18_000)
        );
        let _ = writeln!(
            o,
            "  SSE <= 8192 B per stream    {:.0} B (one user each)   {}",
            s.per_user.rss_per_connection,
            mark(s.per_user.rss_per_connection <= 8192.0)
        );
        let _ = writeln!(
            o,
            "  SSE <= 8192 B, shared       {:.0} B ({IDLE} user)   {}",
            s.rss_per_connection,
            mark(s.rss_per_connection <= 8192.0)
        );
        let _ = writeln!(
            o,
            "  hub notice p99 <= 2 ms      {} ms   {}",
            num(s.hub_notice.p99),
            mark(s.hub_notice.p99 <= 2.0)
        );
    }
    if !r.bus.is_empty() {
        let _ = writeln!(
            o,
            "\nBus: 201 -> order-visible at 200/s, and the maximum sustained rate"
        );
        for (bus, l, max) in &r.bus {
            let _ = writeln!(o, "  {bus:<10} {}; max sustained {max}/s", line(l));
        }
    }
    o
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
