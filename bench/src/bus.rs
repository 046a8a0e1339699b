//! Scaling out: the in-process bus beside NATS JetStream (one projector
//! process, then two on the same consumer), each at 200/s and at its
//! maximum sustained rate; the disk's own fsync latency, the floor of one
//! replicated write; and the notice fan-out to several web instances.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{self, LoadResult};
use crate::report::line;
use crate::run::{USERS, max_rate};
use crate::server::Bench;

/// One way of running the pipeline: a name, its bus, and the processes
/// beside the server (their roles).
pub struct Layout {
    pub name: &'static str,
    bus: &'static str,
    /// The server's own roles (`None`: all of them).
    roles: Option<&'static str>,
    helpers: &'static [&'static str],
}

/// The layouts compared: the in-process bus; NATS with the relay and a
/// projector in one process (as `serve` runs by default); NATS with the
/// web and relay in one process and two projector processes on the
/// consumer.
pub const LAYOUTS: [Layout; 3] = [
    Layout {
        name: "inprocess",
        bus: "inprocess",
        roles: None,
        helpers: &[],
    },
    Layout {
        name: "nats",
        bus: "nats",
        roles: None,
        helpers: &[],
    },
    Layout {
        name: "nats-2-projectors",
        bus: "nats",
        roles: Some("web,relay"),
        helpers: &["projector", "projector"],
    },
];

/// What one layout did.
pub struct BusResult {
    pub name: &'static str,
    /// At 200/s.
    pub at_200: LoadResult,
    pub max_sustained: u32,
    /// The step at the maximum sustained rate (CPU per order there).
    pub at_max: Option<LoadResult>,
}

/// The knobs of a scenario of `layout`; NATS gets a stream of its own per
/// scenario (removed by its age limit): every scenario's server starts its
/// outbox ids again, which one stream's duplicate window would drop.
fn knobs(layout: &Layout, label: &str) -> Vec<(&'static str, &'static str)> {
    let mut knobs = vec![("BUS", layout.bus)];
    if let Some(roles) = layout.roles {
        knobs.push(("ROLES", roles));
    }
    if layout.bus == "nats" {
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

/// Each layout at 200/s, then its maximum sustained rate (the in-process
/// one's is `inprocess_max` when the maximum-rate part measured it with the
/// same settings).
pub async fn compare(
    bench: &Bench,
    step: Duration,
    inprocess_max: Option<(u32, LoadResult)>,
) -> anyhow::Result<Vec<BusResult>> {
    let mut out = Vec::new();
    let mut inprocess_max = inprocess_max;
    for layout in &LAYOUTS {
        let label = format!("bus-{}-200", layout.name);
        let r = load::scenario_with(
            bench,
            &label,
            &knobs(layout, &label),
            layout.helpers,
            USERS,
            200.0,
            step,
        )
        .await?;
        eprintln!("  {} 200/s: {}", layout.name, line(&r));
        let (max_sustained, at_max) = match (layout.name, inprocess_max.take()) {
            ("inprocess", Some((max, at_max))) => (max, Some(at_max)),
            _ => {
                let (steps, max) = max_rate(
                    bench,
                    &format!("{}-max", layout.name),
                    |label| knobs(layout, label),
                    layout.helpers,
                    step,
                )
                .await?;
                let at_max = steps
                    .into_iter()
                    .find(|(rate, _, _)| *rate == max)
                    .map(|(_, r, _)| r);
                (max, at_max)
            }
        };
        out.push(BusResult {
            name: layout.name,
            at_200: r,
            max_sustained,
            at_max,
        });
    }
    Ok(out)
}

/// The disk's own durable-write latency: `pg_test_fsync`'s one 8 kB write
/// followed by `fdatasync`, on the filesystem the services keep their data
/// on. One replicated JetStream write waits for at least one of these per
/// node (`sync_interval: always`).
pub struct Fsync {
    pub ops_per_sec: f64,
    pub micros: f64,
}

/// Runs `pg_test_fsync` (beside `PGBENCH`, from the installed server) for
/// `seconds` per method on a scratch file under `dir`.
pub async fn fsync(dir: &Path, seconds: u64) -> anyhow::Result<Fsync> {
    let program = std::env::var("PGBENCH")
        .ok()
        .and_then(|p| {
            Path::new(&p)
                .parent()
                .map(|d| d.join("pg_test_fsync").display().to_string())
        })
        .unwrap_or_else(|| "pg_test_fsync".to_owned());
    let file = dir.join("fsync.scratch");
    let output = tokio::process::Command::new(&program)
        .arg(format!("--secs-per-test={}", seconds.max(1)))
        .arg(format!("--filename={}", file.display()))
        .output()
        .await
        .with_context(|| format!("Failed to run {program}"))?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pg_test_fsync failed: {text}");
    }
    parse_fsync(&text)
        .with_context(|| format!("no fdatasync line in pg_test_fsync's report:\n{text}"))
}

/// The `fdatasync` line of "Compare file sync methods using one 8kB write".
fn parse_fsync(report: &str) -> Option<Fsync> {
    let section = report.split("using one 8kB write").nth(1)?;
    let line = section
        .lines()
        .find(|l| l.split_whitespace().next() == Some("fdatasync"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let ops_per_sec: f64 = words.get(1)?.parse().ok()?;
    let micros: f64 = words.get(3)?.parse().ok()?;
    Some(Fsync {
        ops_per_sec,
        micros,
    })
}

/// The web instances of the fan-out part: every one LISTENs for notices
/// and reads every notice the log gets, whichever user it is for.
pub const FANOUT_INSTANCES: [usize; 2] = [2, 8];

/// 200/s with the streams spread over `n` web instances (the server, which
/// also relays and projects, and `n - 1` web-only ones), for each `n`.
pub async fn fanout(bench: &Bench, step: Duration) -> anyhow::Result<Vec<(usize, LoadResult)>> {
    let mut out = Vec::new();
    for n in FANOUT_INSTANCES {
        let helpers = vec!["web"; n - 1];
        let label = format!("fanout-{n}");
        let r = load::scenario_with(bench, &label, &[], &helpers, USERS, 200.0, step).await?;
        eprintln!("  {n} web instances 200/s: {}", line(&r));
        out.push((n, r));
    }
    Ok(out)
}

/// The in-process bus at 200/s with journeys recorded and not, `rounds`
/// times each, alternately (on, off, on, off: the machine's drift falls on
/// both).
pub async fn journeys(
    bench: &Bench,
    step: Duration,
    rounds: usize,
) -> anyhow::Result<Vec<(bool, LoadResult)>> {
    let mut out = Vec::new();
    for round in 0..rounds.max(1) {
        for on in [true, false] {
            let label = format!("journeys-{}-{round}", if on { "on" } else { "off" });
            let knobs = [("RECORD_JOURNEYS", if on { "true" } else { "false" })];
            let r = load::scenario_with(bench, &label, &knobs, &[], USERS, 200.0, step).await?;
            eprintln!(
                "  journeys {}: {}",
                if on { "on " } else { "off" },
                line(&r)
            );
            out.push((on, r));
        }
    }
    Ok(out)
}

/// CPU µs per order of what recording journeys touches: the server and
/// PostgreSQL (Elasticsearch's work is the same either way).
pub fn touched_us_per_order(l: &LoadResult) -> f64 {
    l.us_per_order(l.server_cpu + l.pg_cpu)
}

/// CPU µs per order of the server, PostgreSQL and Elasticsearch together.
pub fn pipeline_us_per_order(l: &LoadResult) -> f64 {
    l.us_per_order(l.server_cpu + l.pg_cpu + l.es_cpu)
}

/// What recording journeys costs, as the means over the runs with it on and
/// with it off.
pub struct JourneyCost {
    /// Server + PostgreSQL µs per order, on and off, and the difference in
    /// percent of "off": the figure held to the < 3 % target.
    pub touched: (f64, f64, f64),
    /// With Elasticsearch too (its share is the same work either way, so
    /// its difference is the machine's noise).
    pub all: (f64, f64, f64),
}

pub fn journey_cost(results: &[(bool, LoadResult)]) -> Option<JourneyCost> {
    let compare = |per_order: fn(&LoadResult) -> f64| {
        let mean = |on: bool| {
            let v: Vec<f64> = results
                .iter()
                .filter(|(o, _)| *o == on)
                .map(|(_, l)| per_order(l))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let (on, off) = (mean(true)?, mean(false)?);
        Some((on, off, (on - off) / off.max(1.0) * 100.0))
    };
    Some(JourneyCost {
        touched: compare(touched_us_per_order)?,
        all: compare(pipeline_us_per_order)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fdatasync_of_one_8kb_write() {
        let report = "\
Compare file sync methods using one 8kB write:
(in \"wal_sync_method\" preference order, except fdatasync is Linux's default)
        open_datasync                      7912.345 ops/sec     126 usecs/op
        fdatasync                          8661.100 ops/sec     115 usecs/op
        fsync                              5000.000 ops/sec     200 usecs/op

Compare file sync methods using two 8kB writes:
        fdatasync                          4000.000 ops/sec     250 usecs/op
";
        let f = parse_fsync(report).unwrap();
        assert_eq!(f.ops_per_sec, 8661.1);
        assert_eq!(f.micros, 115.0);
        assert!(parse_fsync("nothing").is_none());
    }
}
