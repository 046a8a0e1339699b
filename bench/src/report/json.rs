//! The `latest.json` document: the run's headline numbers, the latency
//! curve, the memory curve and the machine, as docs/BENCHMARKS.md lists
//! them.

use serde_json::{Value, json};

use crate::load::LoadResult;
use crate::results::Results;
use crate::run::RATE_STEPS;
use crate::stats::round2;

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
pub fn latest(r: &Results, machine: Value) -> Option<Value> {
    let floor_p50 = r.floor_p50()?;
    let replay = r.replay.as_ref()?;
    let (seed, tuned) = r.seed.as_ref()?;
    let sse = r.sse.as_ref()?;
    let visibility = visibility_json(&r.visibility);
    let scale = super::scale::json(r);
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
    let bare = r.bare_write.as_ref()?;
    let (es_max, pg_max) = (r.max_sustained?, r.pg_max_sustained?);
    let share = |max: u32| round2(f64::from(max) / bare.rate);
    let p50_at = |visibility: &[(u32, LoadResult)], rate: u32| {
        visibility
            .iter()
            .find(|(r, _)| *r == rate)
            .map(|(_, v)| round2(v.latency.p50))
    };
    let (es_50, es_200) = (p50_at(&r.visibility, 50), p50_at(&r.visibility, 200));
    let pg_200 = p50_at(&r.pg_visibility, 200);
    Some(json!({
        "bare_write_rate": round2(bare.rate),
        "bare_write": {
            "rate": round2(bare.rate),
            "latency_ms": round2(bare.latency_ms),
            "clients": bare.clients,
        },
        // Issue #25's targets, each with its figure (ratios within this run).
        "targets": {
            "postgres_share_of_bare_write_rate": { "figure": share(pg_max), "target": ">= 0.6", "met": share(pg_max) >= 0.6 },
            "postgres_max_at_least_elasticsearch_max": { "figure": [pg_max, es_max], "met": pg_max >= es_max },
            "postgres_200_p50_ms": { "figure": pg_200, "target": "<= 5", "met": pg_200.is_some_and(|p| p <= 5.0) },
            "elasticsearch_share_of_bare_write_rate": { "figure": share(es_max), "target": ">= 0.5", "met": share(es_max) >= 0.5 },
            "elasticsearch_50_p50_over_floor_ms": { "figure": es_50.map(|p| round2(p - floor_p50)), "target": "<= 5", "met": es_50.is_some_and(|p| p - floor_p50 <= 5.0) },
            "elasticsearch_200_p50_times_floor": { "figure": es_200.map(|p| round2(p / floor_p50)), "target": "<= 2", "met": es_200.is_some_and(|p| p / floor_p50 <= 2.0) },
        },
        // Scaling out: the layouts of the bus part, their targets, the
        // disk's fsync latency and the fan-out to several web instances.
        "bus": scale["bus"],
        "bus_targets": scale["bus_targets"],
        "fsync": scale["fsync"],
        "fanout": scale["fanout"],
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
                "max_sustained_rate": es_max,
                "share_of_bare_write_rate": share(es_max),
            },
            "postgres": {
                "visibility": visibility_json(&r.pg_visibility),
                "max_sustained_rate": pg_max,
                "share_of_bare_write_rate": share(pg_max),
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
