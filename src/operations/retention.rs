//! Retention across the tables that grow without bound: what `sightline
//! prune` counts and deletes. Each table's rows go through the module that
//! owns it — notices (`visibility::retention`, where the rule that keeps a
//! resume inside the bound whole is written), the journeys' stage times on
//! the outbox (`outbox::stamps`: journeys go with the notices), expired sessions
//! (`auth::session`) and the projector inbox (`projector::summaries`, where
//! the rule that keeps an event from counting twice is written); this file
//! only calls them in turn and adds up.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::auth::session;
use crate::outbox;
use crate::projector::summaries;
use crate::visibility::retention;

/// What pruning removes (or, for [`plan`], would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub notices: i64,
    /// Events whose journey (stage times) goes with the notices.
    pub journeys: i64,
    pub sessions: i64,
    pub inbox: i64,
}

/// Counts what [`prune`] would delete with notices older than `cutoff`.
pub async fn plan(db: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<PruneReport> {
    Ok(PruneReport {
        notices: retention::count_notices_before(db, cutoff).await?,
        journeys: outbox::stamps::count_journeys_before(db, cutoff).await?,
        sessions: session::count_expired(db).await?,
        inbox: summaries::count_settled_inbox(db, cutoff).await?,
    })
}

/// Deletes notices recorded before `cutoff`, expired sessions and inbox rows
/// of events that cannot come again, `batch` rows per statement.
#[tracing::instrument(skip(db))]
pub async fn prune(db: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> sqlx::Result<PruneReport> {
    Ok(PruneReport {
        notices: retention::prune_notices(db, cutoff, batch).await?,
        journeys: outbox::forget_journeys(db, cutoff, batch).await?,
        sessions: session::delete_expired(db, batch).await?,
        inbox: summaries::prune_settled_inbox(db, cutoff, batch).await?,
    })
}
