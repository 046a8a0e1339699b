//! What a recording's NOTIFY carries to every instance's hub, and reading
//! it back: the notices themselves when they fit, so a hub need not read the
//! log for every wake-up.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Notice;

/// The most a NOTIFY payload may carry here (PostgreSQL refuses 8000 bytes
/// or more; the rest is room for the channel's name).
const PAYLOAD_LIMIT: usize = 7_900;

/// One notice as a NOTIFY payload carries it: the notice and its event's
/// commit time, which [`Notice`]'s own serialisation leaves out.
#[derive(Serialize, Deserialize)]
struct Carried<N> {
    #[serde(flatten)]
    notice: N,
    committed_at: Option<DateTime<Utc>>,
}

/// What a recording's NOTIFY carries: the notices it recorded, in `seq`
/// order, so a hub whose head is just before them can send them without
/// reading the log (a database round trip per wake-up at every instance).
/// Empty when they do not fit: the hub then reads the log, as it does for
/// every wake-up it cannot vouch for.
pub fn payload(recorded: &[Notice]) -> String {
    let carried: Vec<Carried<&Notice>> = recorded
        .iter()
        .map(|n| Carried {
            notice: n,
            committed_at: n.committed_at,
        })
        .collect();
    match serde_json::to_string(&carried) {
        Ok(json) if json.len() < PAYLOAD_LIMIT => json,
        _ => String::new(),
    }
}

/// The notices a NOTIFY on [`CHANNEL`] carries, in `seq` order; `None` when
/// it carries none (too many for one payload, or not one of ours).
pub fn carried(payload: &str) -> Option<Vec<Notice>> {
    let carried: Vec<Carried<Notice>> = serde_json::from_str(payload).ok()?;
    let notices: Vec<Notice> = carried
        .into_iter()
        .map(|c| Notice {
            committed_at: c.committed_at,
            ..c.notice
        })
        .collect();
    (!notices.is_empty()).then_some(notices)
}
