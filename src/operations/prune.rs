//! `sightline prune`: retention of the notice log (and the journeys that go
//! with it), expired sessions and the projector's inbox, and what it prints (what goes, table by table, is
//! [`super::retention`]).

use super::retention;
use crate::config::Settings;
use crate::db::connect_and_migrate;

/// Prunes (or, without `yes`, counts) what the retention bound lets go.
pub async fn command(yes: bool, batch_size: i64, settings: Settings) -> anyhow::Result<()> {
    let db = connect_and_migrate(&settings).await?;
    let cutoff = chrono::Utc::now() - settings.notice_retention();
    let report = if yes {
        retention::prune(&db, cutoff, batch_size).await?
    } else {
        retention::plan(&db, cutoff).await?
    };
    println!(
        "{} {} notices recorded before {} ({} days), the journeys of {} events committed \
         before then, {} expired sessions, {} inbox entries of events published before then{}",
        if yes { "deleted" } else { "would delete" },
        report.notices,
        cutoff.to_rfc3339(),
        settings.notice_retention_days,
        report.journeys,
        report.sessions,
        report.inbox,
        if yes {
            ""
        } else {
            "; pass --yes to delete them"
        }
    );
    Ok(())
}
