//! The bare write rate: the physical anchor every mode's maximum is compared
//! with. PostgreSQL's own `pgbench` runs exactly the SQL of one order's write
//! transaction — `BEGIN`, the write side's `PLACE_ORDER_SQL`, the outbox's
//! `append_sql()`, `COMMIT`, prepared, as the server sends them — on a fresh
//! database with every migration (so the same indexes and triggers), from as
//! many clients as the server lets write at once, against the same server.
//! No HTTP, no sessions, no pipeline: what the disk and PostgreSQL allow.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use sightline_core::outbox::{self, events};
use sightline_core::write_side::place_order::PLACE_ORDER_SQL;
use uuid::Uuid;

use crate::server::Bench;

/// What `pgbench` measured.
#[derive(Clone, Debug)]
pub struct BareWrite {
    /// Committed write transactions per second (orders/s).
    pub rate: f64,
    /// Mean latency of one transaction, ms.
    pub latency_ms: f64,
    /// Clients (= the server's `WRITE_CONCURRENCY` default).
    pub clients: u32,
}

/// The server's default `WRITE_CONCURRENCY`: three quarters of the default
/// web pool of 20, the writes it lets run at once.
pub const CLIENTS: u32 = 15;
/// Users the orders are spread over, as the load steps do.
const USERS: u32 = crate::run::USERS as u32;

/// Runs `pgbench` for `duration` on a fresh database and removes it after.
pub async fn measure(bench: &Bench, duration: Duration) -> anyhow::Result<BareWrite> {
    let name = "bench_bare_write";
    let db = bench.create_database(name).await?;
    let result = async {
        sightline_core::db::migrate(&db).await?;
        // Users with ids the script can compute from a number.
        sqlx::query(
            "INSERT INTO users (id, username, password_hash)
             SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
                    'bare_' || n, 'not a hash'
             FROM generate_series(1, $1) AS n",
        )
        .bind(USERS as i32)
        .execute(&db)
        .await
        .context("Failed to create the bare write's users")?;
        db.close().await;
        let script = bench.out_dir.join("bare_write.sql");
        std::fs::write(&script, script_text())?;
        run_pgbench(&bench.database_url(name), &script, duration).await
    }
    .await;
    bench.drop_database(name).await?;
    result
}

/// The pgbench script: the two statements with their parameters written as
/// pgbench variables and SQL around them (an order id from two random
/// numbers, a user id from a number, a payload like the server's).
fn script_text() -> String {
    let order = "(lpad(to_hex(:a::bigint), 16, '0') || lpad(to_hex(:b::bigint), 16, '0'))::uuid";
    let user = "('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid";
    let place = substitute(
        PLACE_ORDER_SQL,
        &[
            order,
            user,
            "'benchmark order'",
            "2848",
            "'EUR'",
            "ARRAY['BENCH-7', 'BENCH-GIFTWRAP']::text[]",
            "ARRAY[2, 1]::int[]",
            "ARRAY[1299, 250]::bigint[]",
        ],
    );
    let payload = serde_json::to_string(&sample_event()).expect("a payload serialises");
    let append = substitute(
        &outbox::append_sql(),
        &[
            "gen_random_uuid()",
            &format!("'{}'", events::ORDER_PLACED),
            &events::OrderPlacedV2::SCHEMA_VERSION.to_string(),
            order,
            "1",
            user,
            &format!("'{}'::jsonb", payload.replace('\'', "''")),
            // No trace exported (the server's default).
            "NULL",
        ],
    );
    format!(
        "\\set u random(1, {USERS})\n\\set a random(1, 9223372036854775806)\n\\set b random(1, 9223372036854775806)\nBEGIN;\n{place};\n{append};\nCOMMIT;\n"
    )
}

/// `sql` with `$1`, `$2`, … replaced by `values` (highest first, so `$1`
/// never eats the start of `$10`).
fn substitute(sql: &str, values: &[&str]) -> String {
    let mut sql = sql.to_owned();
    for (i, value) in values.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", i + 1), value);
    }
    assert!(!sql.contains('$'), "a parameter left unbound in {sql}");
    sql
}

/// An event the size of the load steps' orders.
fn sample_event() -> events::OrderPlacedV2 {
    serde_json::from_value(serde_json::json!({
        "order_id": Uuid::nil(),
        "user_id": Uuid::nil(),
        "username": "bench_user_42",
        "items": [
            {"sku": "BENCH-7", "quantity": 2, "unit_price_cents": 1299},
            {"sku": "BENCH-GIFTWRAP", "quantity": 1, "unit_price_cents": 250}
        ],
        "total_cents": 2848,
        "currency": "EUR",
        "note": "benchmark order",
        "placed_at": chrono::Utc::now(),
    }))
    .expect("the sample matches OrderPlacedV2")
}

/// `pgbench` from `PGBENCH` (set by scripts/bench) or the PATH.
async fn run_pgbench(url: &str, script: &Path, duration: Duration) -> anyhow::Result<BareWrite> {
    let program = std::env::var("PGBENCH").unwrap_or_else(|_| "pgbench".to_owned());
    let output = tokio::process::Command::new(&program)
        .args(["--no-vacuum", "--protocol=prepared", "--jobs=2"])
        .arg(format!("--client={CLIENTS}"))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--file={}", script.display()))
        .arg(url)
        .output()
        .await
        .with_context(|| format!("Failed to run {program} (set PGBENCH to its path)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&text).with_context(|| format!("Failed to read pgbench's report:\n{text}"))
}

/// Reads `tps = …` and `latency average = … ms` from pgbench's report.
fn parse(report: &str) -> Option<BareWrite> {
    let number = |prefix: &str| {
        report.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    Some(BareWrite {
        rate: number("tps = ")?,
        latency_ms: number("latency average = ")?,
        clients: CLIENTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_binds_every_parameter_and_reads_pgbenchs_report() {
        let script = script_text();
        assert!(script.contains("UPDATE users SET write_seq"));
        assert!(script.contains("INSERT INTO outbox"));
        assert!(!script.contains('$'));
        let report = "transaction type: bare_write.sql\nnumber of clients: 15\nlatency average = 4.123 ms\ninitial connection time = 12.000 ms\ntps = 3637.51 (without initial connection time)\n";
        let parsed = parse(report).unwrap();
        assert_eq!(parsed.rate, 3637.51);
        assert_eq!(parsed.latency_ms, 4.123);
    }
}
