//! `sightline journey <order-id>`: one order version's journey, as an
//! operator sees it (any user's order), each stage with its time and how
//! long after the one before it; `--json` prints the API's document.

use uuid::Uuid;

use crate::config::{ReadStoreKind, Settings};
use crate::db::connect_and_migrate;
use crate::journey::{self, Journey, Reader};

/// Prints the journey of `order` (its latest version, or `version`).
pub async fn command(
    order: Uuid,
    version: Option<i32>,
    json: bool,
    settings: Settings,
) -> anyhow::Result<()> {
    let db = connect_and_migrate(&settings).await?;
    let same_database = settings.read_store == ReadStoreKind::Postgres;
    let Some(journey) = journey::read(&db, Reader::Operator, order, version, same_database).await?
    else {
        anyhow::bail!(
            "no journey of order {order}{}: no such order or version, or it was pruned with the notice log",
            version.map(|v| format!(" version {v}")).unwrap_or_default()
        );
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&journey)?);
    } else {
        print!("{}", render(&journey));
    }
    Ok(())
}

/// The journey as lines: `stage  time  +ms since committed  (+ms since the
/// stage before)`, then the total and the step that took longest.
pub fn render(journey: &Journey) -> String {
    use std::fmt::Write;
    let mut out = format!("order {} version {}\n", journey.id, journey.version);
    let first = journey.stages.first().map(|s| s.at);
    let mut before = first;
    for stage in &journey.stages {
        let since = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or(0.0, |t| {
                (stage.at - t).num_microseconds().unwrap_or(0) as f64 / 1000.0
            })
        };
        let mut detail = String::new();
        if let Some(reason) = &stage.reason {
            let _ = write!(detail, "  {reason}");
        }
        if let (Some(via), Some(instance)) = (&stage.via, &stage.instance) {
            let _ = write!(detail, "  by {via} from {instance}");
        }
        let _ = writeln!(
            out,
            "  {:<24}{}  {:>9.1} ms  (+{:.1} ms){detail}",
            stage.stage.as_str(),
            stage
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            since(first),
            since(before),
        );
        before = Some(stage.at);
    }
    if let Some(total) = journey.total() {
        let _ = write!(
            out,
            "total {:.1} ms",
            total.num_microseconds().unwrap_or(0) as f64 / 1000.0
        );
        if let Some((stage, took)) = journey.slowest_step() {
            let _ = write!(
                out,
                "; longest step: to {} ({:.1} ms)",
                stage.as_str(),
                took.num_microseconds().unwrap_or(0) as f64 / 1000.0
            );
        }
        out.push('\n');
    }
    out
}
