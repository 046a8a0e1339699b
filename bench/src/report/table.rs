//! The table a run prints (and saves as `latest.txt`): one section per part
//! measured, then the targets and the buses. Each section is its own
//! function, writing nothing when its part was not run.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;
use sightline_core::monitoring::BATCH_STAGES;

use super::num;
use crate::capacity::{Capacity, IDLE_USERS as IDLE};
use crate::load::{LoadResult, SINCE_COMMIT};
use crate::results::Results;
use crate::run::USERS;

pub fn table(r: &Results, mode: &str, step: Duration, m: &Value, elapsed: Duration) -> String {
    let mut o = String::new();
    title(&mut o, mode, step, m, elapsed);
    floor(&mut o, r);
    legend(&mut o);
    visibility(&mut o, r);
    seed(&mut o, r);
    max_sustained(&mut o, r, step);
    pg_max_sustained(&mut o, r);
    one_database_or_two(&mut o, r);
    if let Some(s) = &r.sse {
        sse(&mut o, s);
    }
    replay(&mut o, r);
    targets(&mut o, r);
    super::scale::table(&mut o, r);
    o
}

/// The run's shape and the machine it ran on.
fn title(o: &mut String, mode: &str, step: Duration, m: &Value, elapsed: Duration) {
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
}

/// The floor's three steps, and the floor again through the run.
fn floor(o: &mut String, r: &Results) {
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
}

/// What the columns of the load tables mean.
fn legend(o: &mut String) {
    let _ = writeln!(
        o,
        "\n(latency: POST's 201 -> order-visible on the owner's stream; lost: no notice when the wait ended, \
         counted with the time waited; srv/gen/es/pg cpu: CPU of the server / of this load generator / of \
         Elasticsearch / of PostgreSQL during the step, 100% = one core; machine: share of all cores busy)"
    );
}

/// The header of a load table.
fn header(o: &mut String) {
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
}

/// One load step's row of a load table.
fn row(o: &mut String, name: &str, r: &LoadResult) {
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
}

/// Visibility latency per offered rate (both read stores), then where the
/// relay's batches spent their time.
fn visibility(o: &mut String, r: &Results) {
    if r.visibility.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nVisibility latency, 201 -> order-visible ({USERS} users with open streams, open loop)"
    );
    header(o);
    for (rate, v) in &r.visibility {
        row(o, &format!("{rate}/s"), v);
    }
    for (rate, v) in &r.pg_visibility {
        row(o, &format!("{rate}/s READ_STORE=postgres"), v);
    }
    let _ = writeln!(
        o,
        "\nWhere the time goes: the server's relay batches, mean ms per stage (waiting: an event's \
         creation to its claim), then from an event's commit to its batch being searchable and to \
         its notice leaving on a stream"
    );
    let columns: Vec<&str> = BATCH_STAGES
        .iter()
        .copied()
        .chain(SINCE_COMMIT.iter().map(|(column, _)| *column))
        .collect();
    let _ = write!(o, "  {:<22}", "load");
    for stage in &columns {
        let _ = write!(o, " {stage:>10}");
    }
    let _ = writeln!(o, " {:>8} {:>8}", "batches", "ev/batch");
    let rows = r
        .visibility
        .iter()
        .map(|(rate, v)| (format!("{rate}/s"), v))
        .chain(
            r.pg_visibility
                .iter()
                .map(|(rate, v)| (format!("{rate}/s postgres"), v)),
        );
    for (label, v) in rows {
        let _ = write!(o, "  {label:<22}");
        for stage in &columns {
            let mean = v.stages.iter().find(|(s, _)| s == stage).map(|(_, m)| *m);
            let _ = write!(o, " {:>10}", mean.map_or("-".to_owned(), num));
        }
        let per_batch = v.events as f64 / v.batches.max(1) as f64;
        let _ = writeln!(o, " {:>8} {:>8.1}", v.batches, per_batch);
    }
}

/// The seed's settings beside today's defaults.
fn seed(o: &mut String, r: &Results) {
    if let Some((seed, tuned)) = &r.seed {
        let _ = writeln!(o, "\nSeed settings vs tuned defaults, 200/s");
        header(o);
        row(o, "seed settings", seed);
        row(o, "tuned defaults", tuned);
    }
}

/// The maximum-rate search's steps, then each step's relay stages and
/// PostgreSQL waits.
fn max_sustained(o: &mut String, r: &Results, step: Duration) {
    let Some(max) = r.max_sustained else {
        return;
    };
    let _ = writeln!(
        o,
        "\nMaximum sustained rate (p99 <= 1 s for {} s)",
        step.as_secs()
    );
    steps(o, &r.steps, max);
    if let Some(bare) = &r.bare_write {
        let _ = writeln!(
            o,
            "  bare write rate (pgbench, the write transaction's SQL, {} clients): {:.0}/s, mean {:.1} ms; maximum sustained = {:.2} x bare",
            bare.clients,
            bare.rate,
            bare.latency_ms,
            f64::from(max) / bare.rate
        );
    }
    let _ = writeln!(
        o,
        "  where the relay's batches spent their time (mean ms per stage), what the server's PostgreSQL sessions waited on (share of samples), and which statements took PostgreSQL's execution time (share, mean per call, calls per order committed)"
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
            .map(|(event, n)| format!("{event} {:.0}%", *n as f64 * 100.0 / samples.max(1) as f64))
            .collect();
        let _ = writeln!(
            o,
            "  {:<8} {}\n  {:<8} waits: {}",
            format!("{rate}/s"),
            stages.join(", "),
            "",
            waits.join(", ")
        );
        statements(o, v);
    }
}

/// The statements that took PostgreSQL's time in a step: share of all
/// execution time, mean ms per call and calls per order committed.
fn statements(o: &mut String, v: &LoadResult) {
    let (top, all) = &v.statements;
    for s in top {
        let _ = writeln!(
            o,
            "  {:<8}   {:>3.0}% {:>6.3} ms x {:>4.2}/order  {}",
            "",
            s.total_ms * 100.0 / all.max(f64::MIN_POSITIVE),
            s.total_ms / s.calls.max(1) as f64,
            s.calls as f64 / v.ok.max(1) as f64,
            s.query
        );
    }
}

/// The maximum-rate search with the same-database read model.
fn pg_max_sustained(o: &mut String, r: &Results) {
    if let Some(max) = r.pg_max_sustained {
        let _ = writeln!(o, "\nMaximum sustained rate, READ_STORE=postgres");
        steps(o, &r.pg_steps, max);
        let _ = writeln!(
            o,
            "  where PostgreSQL's execution time went (share, mean per call, calls per order committed)"
        );
        for (rate, v, _) in &r.pg_steps {
            let _ = writeln!(o, "  {rate}/s");
            statements(o, v);
        }
        if let Some(bare) = &r.bare_write {
            let _ = writeln!(
                o,
                "  maximum sustained = {:.2} x bare write rate ({:.0}/s)",
                f64::from(max) / bare.rate,
                bare.rate
            );
        }
    }
}

/// A maximum-rate search's load table and its result.
fn steps(o: &mut String, steps: &[(u32, LoadResult, bool)], max: u32) {
    header(o);
    for (rate, v, ok) in steps {
        row(
            o,
            &format!("{rate}/s {}", if *ok { "ok" } else { "FAIL" }),
            v,
        );
    }
    let _ = writeln!(o, "  maximum sustained: {max}/s");
}

/// The cost of the separate read store: its latency over the same
/// database's, at the same offered rate.
fn one_database_or_two(o: &mut String, r: &Results) {
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
}

/// SSE capacity: streams held, memory per stream, notice latencies and the
/// memory curve.
fn sse(o: &mut String, s: &Capacity) {
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

/// Resuming far behind.
fn replay(o: &mut String, r: &Results) {
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
}

/// Each target docs/BENCHMARKS.md sets, met or missed (those whose part
/// ran).
fn targets(o: &mut String, r: &Results) {
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
    // Issue #25: writes at the speed of PostgreSQL, notices at the speed of
    // search.
    if let (Some(bare), Some(es), Some(pg)) = (&r.bare_write, r.max_sustained, r.pg_max_sustained) {
        let (es_share, pg_share) = (f64::from(es) / bare.rate, f64::from(pg) / bare.rate);
        let _ = writeln!(
            o,
            "  postgres max >= 0.6 x bare   {pg_share:.2} x bare   {}",
            mark(pg_share >= 0.6)
        );
        let _ = writeln!(
            o,
            "  postgres max >= es max       {pg}/s vs {es}/s   {}",
            mark(pg >= es)
        );
        let _ = writeln!(
            o,
            "  es max >= 0.5 x bare         {es_share:.2} x bare   {}",
            mark(es_share >= 0.5)
        );
    }
    if let Some((_, v)) = r.pg_visibility.iter().find(|(rate, _)| *rate == 200) {
        let _ = writeln!(
            o,
            "  postgres 200/s p50 <= 5 ms   {} ms   {}",
            num(v.latency.p50),
            mark(v.latency.p50 <= 5.0)
        );
    }
    if let (Some((_, v)), Some(f)) = (
        r.visibility.iter().find(|(rate, _)| *rate == 50),
        r.floor_p50(),
    ) {
        let over = v.latency.p50 - f;
        let _ = writeln!(
            o,
            "  50/s p50 <= floor + 5 ms     floor + {} ms   {}",
            num(over),
            mark(over <= 5.0)
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
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
