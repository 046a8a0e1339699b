//! What operators build on, checked by their own tools and against the real
//! server: the Prometheus rules (`promtool`), the Grafana dashboard, and the
//! configuration tables (docs/CONFIGURATION.md) against `sightline serve --help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{WAIT, spawn_app_with, test_settings};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs promtool in `ops/prometheus`; its output on failure, else its
/// standard output.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo("ops/prometheus"))
        .output()
        .expect("promtool is needed for this test (scripts/tools installs Debian's `prometheus`)");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_prometheus_example_scrapes_with_the_token_as_a_bearer_from_a_file() {
    // Syntax only: the token file and the targets are the operator's.
    promtool(&["check", "config", "--syntax-only", "prometheus.yml"]);
    let config = read("ops/prometheus/prometheus.yml");
    for needed in [
        "job_name: sightline",
        "type: Bearer",
        "credentials_file:",
        "- alerts.yml",
    ] {
        assert!(config.contains(needed), "prometheus.yml lacks {needed:?}");
    }
    // Never the token itself, nor in a URL (the comments may say so).
    let settings: String = config
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect();
    for leak in ["credentials:", "bearer_token:", "token="] {
        assert!(!settings.contains(leak), "prometheus.yml has {leak:?}");
    }
}

#[test]
fn alerting_rules_are_valid_and_each_alert_fires_on_a_synthetic_series() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);

    // Every alert has a unit test that expects it to fire. The alerts are
    // read off the file's lines: as many as promtool counts rules (but
    // recording rules), so a change of layout cannot leave some unchecked.
    let rules = read("ops/prometheus/alerts.yml");
    let tests = read("ops/prometheus/alerts.test.yml");
    let keyed = |key: &'static str| {
        rules.lines().filter_map(move |line| {
            let line = line.trim();
            line.strip_prefix("- ")
                .unwrap_or(line)
                .strip_prefix(key)
                .map(str::trim)
        })
    };
    let alerts: Vec<&str> = keyed("alert:").collect();
    let found: usize = checked
        .split_once(" rules found")
        .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("promtool did not say how many rules it found: {checked}"));
    assert!(!alerts.is_empty(), "no alert in alerts.yml");
    assert_eq!(
        alerts.len() + keyed("record:").count(),
        found,
        "alerts read from alerts.yml: {alerts:?}; promtool found {found} rules"
    );
    for name in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n    exp_alerts:\n    - exp_labels"
            )),
            "alert {name} has no test in alerts.test.yml that expects it to fire"
        );
    }
}

/// `sightline_…` names in PromQL expressions.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sightline_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            into.insert(expr[start..end].to_owned());
        }
        i = end;
    }
}

fn dashboard_exprs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(s)) => into.push(s.clone()),
                    ("query" | "definition", Value::String(s)) => into.push(s.clone()),
                    _ => dashboard_exprs(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, into)),
        _ => {}
    }
}

/// A rule or panel over a metric that does not exist shows nothing and never
/// fires: every name they use must be in `/metrics` of a real app that has
/// done what an operator's instance does (orders, a stream, a refused stream).
#[tokio::test]
async fn every_metric_in_the_rules_and_the_dashboard_is_exported_needs_elasticsearch() {
    // The pipeline's metrics (relay batches, stages) exist only where there
    // is a pipeline: the separate read store.
    crate::helpers::require_elasticsearch();
    let mut names = BTreeSet::new();
    for line in read("ops/prometheus/alerts.yml").lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            metric_names(expr, &mut names);
        }
    }
    let rule_names = names.len();
    let dashboard: Value = serde_json::from_str(&read("ops/grafana/sightline.json"))
        .expect("ops/grafana/sightline.json is JSON");
    let mut exprs = vec![];
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has no queries? {exprs:?}");
    for expr in &exprs {
        metric_names(expr, &mut names);
    }
    assert!(rule_names >= 6 && names.len() > rule_names, "{names:?}");

    let mut settings = test_settings().await;
    settings.max_streams_per_user = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;
    let (_events, _) = app.open_events_ready(&user).await;
    let refused = app.get(&user, "/api/events").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let order = app.place_simple_order(&user, "OPS-METRICS").await;
    app.wait_until_visible(&user, order["id"].as_str().unwrap())
        .await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let exported: BTreeSet<String> = loop {
        let text = app.metrics_text().await;
        let exported: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
            .collect();
        // The sampled gauges appear with the lag monitor's first sample.
        if names.iter().all(|n| exported.contains(n)) || tokio::time::Instant::now() > deadline {
            break exported;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let missing: Vec<_> = names.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in ops/ but not in /metrics: {missing:?}"
    );
}

/// `[env: NAME=…]` of every setting `sightline serve --help` lists.
fn help_settings() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let found: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect();
    assert!(found.len() > 20, "no settings in --help? {help}");
    found
}

/// Backquoted `NAMES` in the first column of the configuration tables:
/// docs/CONFIGURATION.md, all of it the Configuration section.
fn documented_settings() -> BTreeSet<String> {
    let document = read("docs/CONFIGURATION.md");
    let section = document
        .strip_prefix("# Configuration\n")
        .expect("docs/CONFIGURATION.md opens with its # Configuration heading");
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for quoted in first.split('`').skip(1).step_by(2) {
            let name = quoted.split('=').next().unwrap();
            if name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Settings the scripts read (`${SIGHTLINE_…:-…}` in scripts/).
fn script_settings() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(repo("scripts")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("SIGHTLINE_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// `serve --help`'s groups: each heading (`Server:`, …) with the settings
/// listed under it.
fn help_groups() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut heading = String::new();
    for line in help.lines() {
        if let Some(name) = line.strip_suffix(':').filter(|_| !line.starts_with(' ')) {
            heading = name.to_owned();
        }
        for rest in line.split("[env: ").skip(1) {
            let name = rest.split(['=', ']']).next().unwrap().to_owned();
            groups.entry(heading.clone()).or_default().insert(name);
        }
    }
    groups
}

/// docs/CONFIGURATION.md's `## ` sections with the settings their tables name.
fn documented_groups() -> BTreeMap<String, BTreeSet<String>> {
    let document = read("docs/CONFIGURATION.md");
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in document.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            section = name.to_owned();
        } else if line.starts_with("| `") {
            let first = line.split('|').nth(1).unwrap();
            for quoted in first.split('`').skip(1).step_by(2) {
                let name = quoted.split('=').next().unwrap();
                groups
                    .entry(section.clone())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
    }
    groups
}

/// The configuration document is grouped as the settings are: every group
/// of `serve --help` is a section of the same name listing exactly its
/// settings (a setting moved to another group in the code, or documented
/// under the wrong one, fails here).
#[test]
fn the_configuration_document_has_a_section_for_each_group_of_settings() {
    let help = help_groups();
    let documented = documented_groups();
    let groups: Vec<_> = help.keys().filter(|h| *h != "Options").collect();
    assert!(groups.len() >= 5, "too few groups in --help: {help:?}");
    for heading in groups {
        let in_doc = documented
            .get(heading)
            .unwrap_or_else(|| panic!("docs/CONFIGURATION.md has no `## {heading}` section"));
        let missing: Vec<_> = help[heading].difference(in_doc).collect();
        assert!(missing.is_empty(), "`## {heading}` lacks {missing:?}");
        let misplaced: Vec<_> = in_doc
            .iter()
            .filter(|n| !help[heading].contains(*n) && help.values().any(|g| g.contains(*n)))
            .collect();
        assert!(
            misplaced.is_empty(),
            "`## {heading}` lists settings of another group: {misplaced:?}"
        );
    }
}

/// No setting is undocumented, and the table names none that does not exist.
#[test]
fn the_configuration_document_lists_every_setting_of_serve_and_the_scripts() {
    let help = help_settings();
    let scripts = script_settings();
    let documented = documented_settings();
    assert!(scripts.contains("SIGHTLINE_PG_PORT"), "{scripts:?}");

    let undocumented: Vec<_> = help
        .union(&scripts)
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "settings missing from docs/CONFIGURATION.md's tables: {undocumented:?}"
    );
    // Read by the logger and the OpenTelemetry SDK, not by clap.
    let logging = [
        "RUST_LOG",
        "LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_BSP_SCHEDULE_DELAY",
    ];
    let unknown: Vec<_> = documented
        .iter()
        .filter(|n| !help.contains(*n) && !scripts.contains(*n) && !logging.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/CONFIGURATION.md's tables name settings nothing reads: {unknown:?}"
    );
}
