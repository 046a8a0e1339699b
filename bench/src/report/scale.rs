//! Scaling out, as the table and `latest.json` report it: the layouts of the
//! bus part (stages, CPU and disk writes per order, the targets of
//! docs/BENCHMARKS.md's "The NATS path"), the disk's fsync latency, and the
//! fan-out to several web instances.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{line, num};
use crate::bus::BusResult;
use crate::load::LoadResult;
use crate::results::Results;
use crate::stats::round2;

/// CPU (µs) and disk writes (kB) per order committed, by component.
struct PerOrder {
    cpu_us: [(&'static str, f64); 4],
    disk_kb: [(&'static str, f64); 4],
}

fn per_order(l: &LoadResult) -> PerOrder {
    let orders = (l.ok as f64).max(1.0);
    let cpu = |cores: f64| l.us_per_order(cores);
    let kb = |bytes: f64| bytes / orders / 1024.0;
    PerOrder {
        cpu_us: [
            ("server", cpu(l.server_cpu)),
            ("postgres", cpu(l.pg_cpu)),
            ("elasticsearch", cpu(l.es_cpu)),
            ("nats", cpu(l.nats_cpu)),
        ],
        disk_kb: [
            ("server", kb(l.written.server)),
            ("postgres", kb(l.written.postgres)),
            ("elasticsearch", kb(l.written.elasticsearch)),
            ("nats", kb(l.written.nats)),
        ],
    }
}

fn per_order_text(l: &LoadResult) -> String {
    let p = per_order(l);
    let cpu: Vec<String> = p
        .cpu_us
        .iter()
        .map(|(c, us)| format!("{c} {us:.0}"))
        .collect();
    let disk: Vec<String> = p
        .disk_kb
        .iter()
        .map(|(c, kb)| format!("{c} {kb:.1}"))
        .collect();
    format!(
        "cpu µs {} (total {:.0}); disk writes kB {}",
        cpu.join(", "),
        p.cpu_us.iter().map(|(_, us)| us).sum::<f64>(),
        disk.join(", ")
    )
}

fn per_order_json(l: &LoadResult) -> Value {
    let p = per_order(l);
    let map = |pairs: &[(&str, f64)]| -> serde_json::Map<String, Value> {
        pairs
            .iter()
            .map(|(c, v)| ((*c).to_owned(), json!(round2(*v))))
            .collect()
    };
    json!({ "cpu_us": map(&p.cpu_us), "disk_kb": map(&p.disk_kb) })
}

/// One target: its name, the figure, what it must be, and whether it is met.
struct Target {
    name: &'static str,
    figure: String,
    target: &'static str,
    met: bool,
}

/// The targets of the NATS path (issue #26), from one run's layouts.
fn targets(bus: &[BusResult]) -> Vec<Target> {
    let find = |name: &str| bus.iter().find(|b| b.name == name);
    let mut out = Vec::new();
    if let (Some(inp), Some(nats)) = (find("inprocess"), find("nats")) {
        let (a, b) = (&inp.at_200.latency, &nats.at_200.latency);
        out.push(Target {
            name: "nats_200_p50_over_inprocess_ms",
            figure: num(b.p50 - a.p50),
            target: "<= 5",
            met: b.p50 - a.p50 <= 5.0,
        });
        out.push(Target {
            name: "nats_200_p99_over_inprocess_ms",
            figure: num(b.p99 - a.p99),
            target: "<= 20",
            met: b.p99 - a.p99 <= 20.0,
        });
        let share = f64::from(nats.max_sustained) / f64::from(inp.max_sustained.max(1));
        out.push(Target {
            name: "nats_max_share_of_inprocess",
            figure: format!("{share:.2}"),
            target: ">= 0.9",
            met: share >= 0.9,
        });
    }
    if let (Some(one), Some(two)) = (find("nats"), find("nats-2-projectors")) {
        out.push(Target {
            name: "two_projectors_max_at_least_one",
            figure: format!("{} vs {}", two.max_sustained, one.max_sustained),
            target: ">=",
            met: two.max_sustained >= one.max_sustained,
        });
        let (a, b) = (one.at_200.latency.p50, two.at_200.latency.p50);
        out.push(Target {
            name: "two_projectors_200_p50_ms",
            figure: format!("{} vs {}", num(b), num(a)),
            target: "<=",
            met: b <= a,
        });
    }
    out
}

/// The bus part and the fan-out part of the table.
pub fn table(o: &mut String, r: &Results) {
    if !r.bus.is_empty() {
        let _ = write!(
            o,
            "\nBus: 201 -> order-visible at 200/s, and the maximum sustained rate"
        );
        if let Some(f) = &r.fsync {
            let _ = write!(
                o,
                " (the disk's fdatasync of one 8 kB write: {:.0} µs, {:.0}/s)",
                f.micros, f.ops_per_sec
            );
        }
        let _ = writeln!(o);
        for b in &r.bus {
            let _ = writeln!(
                o,
                "  {:<18} {}; max sustained {}/s",
                b.name,
                line(&b.at_200),
                b.max_sustained
            );
            let stages: Vec<String> = b
                .at_200
                .stages
                .iter()
                .map(|(stage, ms)| format!("{stage} {}", num(*ms)))
                .collect();
            let _ = writeln!(o, "  {:<18} stages (mean ms): {}", "", stages.join(", "));
            let _ = writeln!(
                o,
                "  {:<18} per order at 200/s: {}",
                "",
                per_order_text(&b.at_200)
            );
            if let Some(at_max) = &b.at_max {
                let _ = writeln!(
                    o,
                    "  {:<18} per order at {}/s: {}",
                    "",
                    b.max_sustained,
                    per_order_text(at_max)
                );
            }
        }
        for t in targets(&r.bus) {
            let _ = writeln!(
                o,
                "  {:<36} {:>14} {:<6} {}",
                t.name,
                t.figure,
                t.target,
                if t.met { "met" } else { "MISSED" }
            );
        }
    }
    journeys_text(o, r);
    if !r.fanout.is_empty() {
        let _ = writeln!(
            o,
            "\nFan-out: 200/s, streams spread over n web instances (the first also relays and projects); CPU per instance, and per notice of each web-only instance (every hub reads every notice)"
        );
        for (n, l) in &r.fanout {
            let _ = writeln!(o, "  {n} instances: {}", line(l));
            let _ = writeln!(o, "  {:<12} {}", "", fanout_text(l));
        }
    }
}

/// The journeys' recording cost: each run, then the means and the cost.
fn journeys_text(o: &mut String, r: &Results) {
    if r.journeys.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nJourneys: 200/s in process, RECORD_JOURNEYS on and off alternately; CPU µs per order (server + PostgreSQL + Elasticsearch)"
    );
    for (on, l) in &r.journeys {
        let _ = writeln!(
            o,
            "  {:<4} {}  cpu µs/order {:.0} (server {:.0}, postgres {:.0}, es {:.0})",
            if *on { "on" } else { "off" },
            line(l),
            crate::bus::pipeline_us_per_order(l),
            l.us_per_order(l.server_cpu),
            l.us_per_order(l.pg_cpu),
            l.us_per_order(l.es_cpu)
        );
    }
    if let Some(cost) = crate::bus::journey_cost(&r.journeys) {
        let (on, off, pct) = cost.touched;
        let _ = writeln!(
            o,
            "  recording costs {pct:+.1} % of the server's and PostgreSQL's CPU per order ({on:.0} vs {off:.0} µs; target < 3 %)"
        );
        let (on, off, pct) = cost.all;
        let _ = writeln!(
            o,
            "  with Elasticsearch (the same work either way: its difference is noise) {pct:+.1} % ({on:.0} vs {off:.0} µs)"
        );
    }
}

/// Each instance's CPU share, the web-only ones' µs per notice, and
/// PostgreSQL's µs per order.
fn fanout_text(l: &LoadResult) -> String {
    let shares: Vec<String> = l
        .instance_cpu
        .iter()
        .map(|c| format!("{:.0}%", c * 100.0))
        .collect();
    format!(
        "cpu per instance {}; web-only µs per notice {:.0}; postgres µs per order {:.0}",
        shares.join(" "),
        web_only_us_per_notice(l),
        l.us_per_order(l.pg_cpu)
    )
}

/// Mean CPU µs a web-only instance (a helper) spent per notice the log got.
fn web_only_us_per_notice(l: &LoadResult) -> f64 {
    let helpers = &l.instance_cpu[1.min(l.instance_cpu.len())..];
    if helpers.is_empty() {
        return 0.0;
    }
    let mean = helpers.iter().sum::<f64>() / helpers.len() as f64;
    // Each order has one notice: µs per order is µs per notice.
    l.us_per_order(mean)
}

/// `latest.json`'s `bus`, `bus_targets`, `fsync` and `fanout`.
pub fn json(r: &Results) -> Value {
    let bus: serde_json::Map<String, Value> = r
        .bus
        .iter()
        .map(|b| {
            let stages: serde_json::Map<String, Value> = b
                .at_200
                .stages
                .iter()
                .map(|(s, ms)| (s.clone(), json!(round2(*ms))))
                .collect();
            let v = json!({
                "p50_ms": round2(b.at_200.latency.p50),
                "p95_ms": round2(b.at_200.latency.p95),
                "p99_ms": round2(b.at_200.latency.p99),
                "achieved_rate": round2(b.at_200.achieved_rate),
                "max_sustained_rate": b.max_sustained,
                "stages_ms": stages,
                "per_order_at_200": per_order_json(&b.at_200),
                "per_order_at_max": b.at_max.as_ref().map(per_order_json),
            });
            (b.name.to_owned(), v)
        })
        .collect();
    let targets: serde_json::Map<String, Value> = targets(&r.bus)
        .into_iter()
        .map(|t| {
            (
                t.name.to_owned(),
                json!({ "figure": t.figure, "target": t.target, "met": t.met }),
            )
        })
        .collect();
    let fanout: serde_json::Map<String, Value> = r
        .fanout
        .iter()
        .map(|(n, l)| {
            (
                n.to_string(),
                json!({
                    "p50_ms": round2(l.latency.p50),
                    "p99_ms": round2(l.latency.p99),
                    "instance_cpu": l.instance_cpu.iter().map(|c| round2(*c)).collect::<Vec<_>>(),
                    "web_only_cpu_us_per_notice": round2(web_only_us_per_notice(l)),
                    "postgres_cpu_us_per_order": round2(l.us_per_order(l.pg_cpu)),
                }),
            )
        })
        .collect();
    json!({
        "bus": bus,
        "bus_targets": targets,
        "fsync": r.fsync.as_ref().map(|f| json!({ "fdatasync_8kb_us": round2(f.micros), "ops_per_sec": round2(f.ops_per_sec) })),
        "fanout": fanout,
        "journeys": crate::bus::journey_cost(&r.journeys).map(|cost| json!({
            "server_postgres_cpu_us_per_order_on": round2(cost.touched.0),
            "server_postgres_cpu_us_per_order_off": round2(cost.touched.1),
            "cost_pct": round2(cost.touched.2),
            "with_elasticsearch_cost_pct": round2(cost.all.2),
            "p50_ms_on": r.journeys.iter().find(|(o, _)| *o).map(|(_, l)| round2(l.latency.p50)),
            "p50_ms_off": r.journeys.iter().find(|(o, _)| !*o).map(|(_, l)| round2(l.latency.p50)),
        })),
    })
}
