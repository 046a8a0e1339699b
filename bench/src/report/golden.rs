//! The table and `latest.json` rendered from one fixed run, compared with
//! the saved output in `golden/` beside this file: what they print cannot
//! change by accident (set `BENCH_GOLDEN_WRITE=1` to save new output after
//! a deliberate change).

use std::time::Duration;

use serde_json::json;

use super::json::latest as report;
use super::table::table;
use crate::bus::{BusResult, Fsync};
use crate::capacity::{Capacity, PerUser};
use crate::floor::Floor;
use crate::load::LoadResult;
use crate::replay::Replay;
use crate::results::Results;
use crate::stats::Summary;

fn summary(p50: f64) -> Summary {
    Summary {
        count: 1000,
        p50,
        p95: p50 * 1.5,
        p99: p50 * 2.25,
        max: p50 * 4.0 + 0.05,
    }
}

fn load(p50: f64, rate: f64) -> LoadResult {
    LoadResult {
        offered_rate: rate,
        sent: (rate * 10.0) as usize,
        ok: (rate * 10.0) as usize - 3,
        errors: 3,
        first_error: Some("503 Service Unavailable".to_owned()),
        lost: 2,
        achieved_rate: rate * 0.987,
        latency: summary(p50),
        server_cpu: 0.456,
        bench_cpu: 0.123,
        es_cpu: 0.789,
        pg_cpu: 0.234,
        nats_cpu: 0.0,
        written: Default::default(),
        window_secs: 10.0,
        instance_cpu: vec![0.5, 0.1],
        machine_busy: 0.915,
        stages: vec![
            ("waiting".to_owned(), 1.25),
            ("claim".to_owned(), 0.5),
            ("write".to_owned(), 12.345),
            ("notices".to_owned(), 0.75),
        ],
        batches: 1234,
        events: (rate * 10.0) as u64,
        waits: vec![
            ("cpu".to_owned(), 70),
            ("Lock:transactionid".to_owned(), 20),
            ("IO:WALSync".to_owned(), 5),
            ("LWLock:WALWrite".to_owned(), 3),
            ("Client:ClientRead".to_owned(), 1),
            ("IO:DataFileRead".to_owned(), 1),
        ],
        statements: (
            vec![crate::statements::Statement {
                query: "WITH position AS ( UPDATE users SET write_seq = write_seq +...".to_owned(),
                calls: 1000,
                total_ms: 250.0,
            }],
            1000.0,
        ),
    }
}

fn floor(ms: f64) -> Floor {
    Floor {
        postgres: summary(ms),
        elasticsearch: summary(ms * 3.0),
        sse: summary(ms / 4.0),
    }
}

fn results() -> Results {
    let mut no_samples = load(f64::NAN, 1000.0);
    no_samples.latency = Summary::of(Vec::new());
    Results {
        floor: Some(floor(2.0)),
        visibility: vec![
            (50, load(8.5, 50.0)),
            (200, load(9.25, 200.0)),
            (1000, no_samples),
        ],
        seed: Some((load(260.0, 200.0), load(9.5, 200.0))),
        steps: vec![
            (200, load(9.0, 200.0), true),
            (400, load(11.0, 400.0), true),
            (700, load(1500.0, 700.0), false),
        ],
        max_sustained: Some(400),
        bare_write: Some(crate::bare_write::BareWrite {
            rate: 1600.0,
            latency_ms: 9.25,
            clients: 15,
        }),
        pg_visibility: vec![
            (50, load(4.25, 50.0)),
            (200, load(5.0, 200.0)),
            (1000, load(30.0, 1000.0)),
        ],
        pg_steps: vec![
            (200, load(5.0, 200.0), true),
            (400, load(2000.0, 400.0), false),
        ],
        pg_max_sustained: Some(200),
        sse: Some(Capacity {
            target: 2000,
            connections: 1999,
            failed: 2,
            rss_before: 40 << 20,
            rss_after: 52 << 20,
            streams_before: 201,
            streams_after: 1999,
            rss_per_connection: 6998.4,
            per_user: PerUser {
                curve: vec![(1000, 45 << 20), (2000, 60 << 20)],
                connected: 2000,
                failed: 0,
                rss_before: 41 << 20,
                rss_after: 60 << 20,
                streams_before: 200,
                rss_per_connection: 11067.7,
            },
            floor_rss_per_connection: 3500.5,
            notice: summary(12.0),
            notice_lost: 1,
            hub_notice: summary(0.8),
            hub_notice_lost: 0,
            fanout_received: 1998,
            fanout: summary(150.0),
        }),
        bus: vec![
            BusResult {
                name: "inprocess",
                at_200: load(9.0, 200.0),
                max_sustained: 400,
                at_max: Some(load(30.0, 400.0)),
            },
            BusResult {
                name: "nats",
                at_200: load(14.0, 200.0),
                max_sustained: 200,
                at_max: None,
            },
            BusResult {
                name: "nats-2-projectors",
                at_200: load(13.0, 200.0),
                max_sustained: 200,
                at_max: None,
            },
        ],
        fsync: Some(Fsync {
            ops_per_sec: 8661.0,
            micros: 115.0,
        }),
        fanout: vec![(2, load(10.0, 200.0)), (8, load(12.0, 200.0))],
        journeys: vec![(true, load(10.0, 200.0)), (false, load(10.0, 200.0))],
        floors: vec![floor(2.5), floor(1.75), floor(3.0)],
        replay: Some(Replay {
            notices: 20_000,
            received: 19_999,
            seconds: 3.25,
        }),
    }
}

fn machine() -> serde_json::Value {
    json!({
        "cores": 2,
        "memory_bytes": 8_000_000_000u64,
        "postgresql": "17.2",
        "elasticsearch": "8.17.0",
    })
}

/// Compares with `golden/<name>`, or saves it with `BENCH_GOLDEN_WRITE=1`.
fn check(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/golden")
        .join(name);
    if std::env::var_os("BENCH_GOLDEN_WRITE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(
        got == want,
        "{name} differs from {}:\n{got}",
        path.display()
    );
}

#[test]
fn the_table_is_unchanged() {
    let r = results();
    let out = table(
        &r,
        "--quick",
        Duration::from_secs(10),
        &machine(),
        Duration::from_millis(612_345),
    );
    check("table.txt", &out);
}

#[test]
fn the_table_of_a_partial_run_is_unchanged() {
    let r = Results {
        floor: Some(floor(2.0)),
        seed: results().seed,
        ..Results::default()
    };
    let out = table(
        &r,
        "full",
        Duration::from_secs(60),
        &machine(),
        Duration::from_secs(100),
    );
    check("table-partial.txt", &out);
}

#[test]
fn latest_json_is_unchanged() {
    let doc = report(&results(), machine()).unwrap();
    check(
        "latest.json",
        &(serde_json::to_string_pretty(&doc).unwrap() + "\n"),
    );
    let partial = Results {
        floor: Some(floor(2.0)),
        ..Results::default()
    };
    assert!(report(&partial, machine()).is_none());
}
