//! What a run reports: the table (`table`), the `latest.json` document
//! (`json`), saving both under `target/bench/`, and the one-line summary of
//! a load step that the progress lines and the table share.

#[cfg(test)]
mod golden;
pub mod json;
pub mod scale;
pub mod table;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::load::LoadResult;
use crate::results::Results;

/// Writes `latest.json` and the table (`latest.txt`) into `out_dir`; fails
/// when a part of the run is missing from the results.
pub fn save(out_dir: &Path, results: &Results, machine: Value, table: &str) -> anyhow::Result<()> {
    let report = json::latest(results, machine).context("a part is missing")?;
    std::fs::write(
        out_dir.join("latest.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(out_dir.join("latest.txt"), table)?;
    eprintln!("wrote {}", out_dir.join("latest.json").display());
    Ok(())
}

/// A load step in one line: percentiles, achieved rate, what went wrong.
pub fn line(r: &LoadResult) -> String {
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

/// Milliseconds (or a ratio) to one decimal; `-` for no value (NaN).
pub fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "-".into()
    }
}
