//! The durable notice log: one row per order version that search can see.
//!
//! Every notice has two positions. `seq` is global and internal (a unique
//! number, nothing more: it follows no order anyone relies on). `user_seq`
//! is the notice's place in its user's own stream, and with `chain` (a hash
//! over that user's whole stream up to it) makes the cursor clients see,
//! `<user_seq>-<chain>` ([`Cursor`]). A recording holds a lock on each of
//! its users from before numbering until commit, so a user's `user_seq`
//! grows in commit order; different users' recordings run side by side, so
//! `seq` is *not* commit order.
//!
//! The hubs therefore read by transaction, not by `seq`: each notice keeps
//! the id of the transaction that recorded it (`xid`), and a hub reads what
//! became visible between its last snapshot and a new one ([`between`]). A
//! transaction that commits late becomes visible late, and is read then: a
//! hub never skips it, as a "`seq` above N" read would (Marten's
//! high-water-mark bug). The same snapshot bounds an SSE replay
//! ([`page_for_user`]), so replay and live notices meet without gap or
//! overlap.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

mod record;
mod sent;

pub use sent::record_sent;

pub use record::{record, record_in, wake_hubs};

/// Every instance's hub listens here; a recording wakes them all once it has
/// committed (an empty payload: the hubs read the log).
pub const CHANNEL: &str = "sightline_notices";

/// `order-visible`: search shows this version. `order-failed`: its event
/// was dead-lettered, so it will not show until retried.
pub const ORDER_VISIBLE: &str = "order-visible";
pub const ORDER_FAILED: &str = "order-failed";

#[derive(sqlx::FromRow, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Notice {
    /// Global, internal: the hubs' catch-up order. Never shown to clients
    /// (it would count every other user's notices between two of yours).
    pub seq: i64,
    pub user_id: Uuid,
    /// This notice's position in its user's stream: 1, 2, 3, … in commit order.
    pub user_seq: i64,
    /// The user's stream hash up to and including this notice (see [`chain`]).
    pub chain: String,
    pub order_id: Uuid,
    pub order_version: i32,
    pub kind: String,
    /// The order's status at this version (`placed`, `cancelled`).
    pub status: String,
    pub error: Option<String>,
    /// When the notice was recorded.
    pub visible_at: DateTime<Utc>,
    /// When the event behind it was committed (its outbox row's `created_at`).
    /// For the commit → sent histogram: the hub's read ([`after`]) fills it
    /// in, and so does [`record`] from what its caller knew (the hubs get it
    /// with the notification); `None` elsewhere and once the event is pruned.
    #[sqlx(default)]
    #[serde(skip)]
    pub committed_at: Option<DateTime<Utc>>,
}

impl Notice {
    /// The cursor a client holds once it has this notice: its SSE `id`.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            position: self.user_seq,
            chain: self.chain.clone(),
        }
    }
}

/// A client's place in its own notice stream, as it travels in SSE `id` and
/// `Last-Event-ID`: `<position>-<chain>`, or `0` before the first notice.
/// Clients treat it as opaque.
///
/// The position alone would be trusted blindly: a backup restored over the
/// log, a sequence reset or another database would hand the same numbers to
/// other notices, and a resume would silently skip what the client never
/// saw. The chain is a hash over the user's whole stream up to the position,
/// so a cursor is valid only where the log holds exactly the history the
/// client received. (An epoch naming the database would not do: a restored
/// backup brings its epoch along.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub position: i64,
    pub chain: String,
}

/// The chain before a user's first notice.
const CHAIN_START: &str = "0";
/// Hex digits of the chain kept: 32 bits, so a diverged history passes for
/// the client's with a chance of one in four billion.
const CHAIN_LEN: usize = 8;

impl Cursor {
    /// Before the user's first notice: replays everything still retained.
    pub fn start() -> Self {
        Cursor {
            position: 0,
            chain: CHAIN_START.to_owned(),
        }
    }

    /// Parses a `Last-Event-ID`; `None` when it is not a cursor of ours
    /// (also the plain numbers an older server sent).
    pub fn parse(text: &str) -> Option<Cursor> {
        let text = text.trim();
        if text == "0" {
            return Some(Cursor::start());
        }
        let (position, chain) = text.split_once('-')?;
        let digits = !position.is_empty() && position.bytes().all(|b| b.is_ascii_digit());
        let hex = chain.len() == CHAIN_LEN
            && chain
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !digits || !hex {
            return None;
        }
        let position: i64 = position.parse().ok().filter(|p| *p > 0)?;
        Some(Cursor {
            position,
            chain: chain.to_owned(),
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position == 0 {
            f.write_str("0")
        } else {
            write!(f, "{}-{}", self.position, self.chain)
        }
    }
}

/// The next link of a user's stream hash: a notice's chain from the one
/// before it (`"0"` for the first) and what the notice says. The migration
/// that introduced it computes the same in SQL for notices recorded before.
pub fn chain(previous: &str, order_id: Uuid, order_version: i32, kind: &str) -> String {
    let digest = Sha256::digest(format!("{previous}:{order_id}:{order_version}:{kind}"));
    let mut hex = String::with_capacity(CHAIN_LEN);
    for byte in &digest[..CHAIN_LEN / 2] {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[derive(Clone, Debug)]
pub struct NewNotice {
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub order_version: i32,
    pub kind: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
    /// When its event was committed (the outbox row's `created_at`), if the
    /// caller knows: carried to the hubs with the notice, never stored.
    pub committed_at: Option<DateTime<Utc>>,
}

impl NewNotice {
    /// `order-visible` for the first version of a placed order, its commit
    /// time unknown: what the benchmark and tests record by hand, as the
    /// projector would once the order is searchable.
    pub fn placed(user_id: Uuid, order_id: Uuid) -> Self {
        NewNotice {
            user_id,
            order_id,
            order_version: 1,
            kind: ORDER_VISIBLE,
            status: "placed",
            error: None,
            committed_at: None,
        }
    }
}

const COLUMNS: &str =
    "seq, user_id, user_seq, chain, order_id, order_version, kind, status, error, visible_at";

/// A notice's event's commit time (its outbox row's `created_at`), as a
/// column of a query over `notices`.
const COMMITTED_AT: &str = "(SELECT o.created_at FROM outbox o
                              WHERE o.aggregate_id = notices.order_id
                                AND o.aggregate_version = notices.order_version
                              ORDER BY o.id LIMIT 1) AS committed_at";

/// What a hub has read up to: a PostgreSQL snapshot (`pg_snapshot` as text,
/// `xmin:xmax:xip,…`). Every notice whose transaction it sees as committed
/// has been read; every other notice has not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(String);

impl Snapshot {
    /// A snapshot as PostgreSQL writes it (`xmin:xmax:xip,…`).
    pub fn from_text(text: impl Into<String>) -> Self {
        Snapshot(text.into())
    }

    /// The oldest transaction the snapshot saw running: every notice it has
    /// not seen has an `xid` at least this (the index bound of [`between`]).
    fn xmin(&self) -> &str {
        self.0.split(':').next().unwrap_or("0")
    }

    /// Whether `self` was taken before `later` in the same database's
    /// history: transaction ids only grow, so a later snapshot whose first
    /// unassigned id is lower comes from another history (a restored
    /// backup, a new cluster), where reading "what became visible since"
    /// means nothing.
    pub fn precedes(&self, later: &Snapshot) -> bool {
        let xmax = |s: &Snapshot| {
            s.0.split(':')
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
        };
        xmax(self) <= xmax(later)
    }
}

/// The database's current snapshot: what a hub starting now has "read".
pub async fn snapshot(db: &PgPool) -> sqlx::Result<Snapshot> {
    sqlx::query_scalar("SELECT pg_current_snapshot()::text")
        .fetch_one(db)
        .await
        .map(Snapshot)
}

/// One page of the notices that became visible between snapshots `from` and
/// `to` (committed as `to` sees them, not as `from` does), after position
/// `after` (a user and a `user_seq`), by user and position, with their
/// events' commit times: the hub's read. Each user's notices come in stream
/// order.
pub async fn between(
    db: &PgPool,
    from: &Snapshot,
    to: &Snapshot,
    after: (Uuid, i64),
    limit: i64,
) -> sqlx::Result<Vec<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}, {COMMITTED_AT}
         FROM notices
         WHERE xid >= $1::text::xid8
           AND pg_visible_in_snapshot(xid, $3::pg_snapshot)
           AND NOT pg_visible_in_snapshot(xid, $2::pg_snapshot)
           AND (user_id, user_seq) > ($4, $5)
         ORDER BY user_id, user_seq LIMIT $6"
    ))
    // Planned for this call's values: a plan kept for every value of the
    // bound cannot count on the index (it may be any transaction id), and
    // a scan of the whole log per wake-up cost more than the write it
    // announced (docs/BENCHMARKS.md).
    .persistent(false)
    .bind(from.xmin())
    .bind(&from.0)
    .bind(&to.0)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One page of a user's stream: notices after position `after` that
/// snapshot `seen` sees as committed (what the hub had read when the stream
/// subscribed), in order, at most `limit` (SSE replay).
pub async fn page_for_user(
    db: &PgPool,
    user_id: Uuid,
    after: i64,
    seen: &Snapshot,
    limit: i64,
) -> sqlx::Result<Vec<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notices
         WHERE user_id = $1 AND user_seq > $2 AND pg_visible_in_snapshot(xid, $3::pg_snapshot)
         ORDER BY user_seq LIMIT $4"
    ))
    .bind(user_id)
    .bind(after)
    .bind(&seen.0)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The cursor after a user's newest notice (kept when the notice itself is
/// pruned); [`Cursor::start`] for a user without notices.
pub async fn stream_head(db: &PgPool, user_id: Uuid) -> sqlx::Result<Cursor> {
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT last_seq, last_chain FROM notice_streams WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    Ok(head.map_or_else(Cursor::start, |(position, chain)| Cursor {
        position,
        chain,
    }))
}

/// Whether the log can replay everything after a client's cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorCheck {
    /// It names a point of this user's stream, and every notice after it is
    /// retained: the replay is complete.
    Resumable,
    /// A notice after it is older than the retention bound (or pruned).
    TooOld,
    /// Not a point of the history this log holds: from the future, from
    /// another database, or from a history the log no longer has (a restored
    /// backup, a reset sequence).
    Unknown,
}

impl CursorCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorCheck::Resumable => "resumable",
            CursorCheck::TooOld => "too_old",
            CursorCheck::Unknown => "unknown",
        }
    }
}

/// Checks a client's cursor against the user's stream. `retention` is the
/// promise: a client away for less than it resumes completely; one whose
/// first missed notice is older gets `TooOld` even if pruning has not yet
/// removed it, so the answer does not depend on when pruning last ran.
pub async fn check_cursor(
    db: &PgPool,
    user_id: Uuid,
    cursor: &Cursor,
    retention: chrono::Duration,
) -> sqlx::Result<CursorCheck> {
    let stream: Option<(i64, String, i64, String)> = sqlx::query_as(
        "SELECT last_seq, last_chain, pruned_seq, pruned_chain FROM notice_streams
         WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    let (last, last_chain, pruned, pruned_chain) =
        stream.unwrap_or((0, CHAIN_START.to_owned(), 0, CHAIN_START.to_owned()));
    let n = cursor.position;
    let known = if n > last {
        false
    } else if n == last {
        cursor.chain == last_chain
    } else if n < pruned {
        return Ok(CursorCheck::TooOld);
    } else if n == pruned {
        cursor.chain == pruned_chain
    } else {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT chain FROM notices WHERE user_id = $1 AND user_seq = $2")
                .bind(user_id)
                .bind(n)
                .fetch_optional(db)
                .await?;
        stored.is_some_and(|c| c == cursor.chain)
    };
    if !known {
        return Ok(CursorCheck::Unknown);
    }
    if n < last {
        let first_missed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT visible_at FROM notices WHERE user_id = $1 AND user_seq = $2",
        )
        .bind(user_id)
        .bind(n + 1)
        .fetch_optional(db)
        .await?;
        match first_missed {
            Some(at) if at >= Utc::now() - retention => {}
            // Older than promised, or pruned (`pruned == n` with a gap after
            // it cannot happen: pruning removes a prefix).
            _ => return Ok(CursorCheck::TooOld),
        }
    }
    Ok(CursorCheck::Resumable)
}

/// The latest notice of an order, if any.
pub async fn latest_for_order(db: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notices WHERE order_id = $1 ORDER BY user_seq DESC LIMIT 1"
    ))
    .bind(order_id)
    .fetch_optional(db)
    .await
}

/// The latest `order-visible` notice of an order, if any.
pub async fn latest_visible(db: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Notice>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notices WHERE order_id = $1 AND kind = '{ORDER_VISIBLE}'
         ORDER BY user_seq DESC LIMIT 1"
    ))
    .bind(order_id)
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_what_they_write_and_refuse_anything_else() {
        let cursor = Cursor {
            position: 42,
            chain: chain("0", Uuid::from_u128(7), 1, ORDER_VISIBLE),
        };
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor.clone()));
        assert_eq!(Cursor::parse("0"), Some(Cursor::start()));
        assert_eq!(Cursor::start().to_string(), "0");
        for bad in [
            "",
            "garbage",
            "1041",
            "-5",
            "0-0",
            "42-",
            "-deadbeef",
            "42-DEADBEEF",
            "42-deadbee",
            "42-deadbeef0",
            "+4-deadbeef",
            "4 2-deadbeef",
            "0-deadbeef",
            "99999999999999999999-deadbeef",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_snapshot_precedes_those_taken_after_it_in_the_same_history() {
        let earlier = Snapshot::from_text("100:105:101,103");
        assert!(earlier.precedes(&Snapshot::from_text("104:110:")));
        assert!(earlier.precedes(&earlier));
        assert!(!earlier.precedes(&Snapshot::from_text("3:3:")));
        assert_eq!(earlier.xmin(), "100");
    }

    #[test]
    fn the_chain_depends_on_the_whole_history() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let one = chain("0", a, 1, ORDER_VISIBLE);
        assert_eq!(one.len(), CHAIN_LEN);
        assert_ne!(
            chain(&one, b, 1, ORDER_VISIBLE),
            chain("0", b, 1, ORDER_VISIBLE)
        );
        assert_ne!(
            chain("0", a, 1, ORDER_VISIBLE),
            chain("0", a, 2, ORDER_VISIBLE)
        );
        assert_ne!(
            chain("0", a, 1, ORDER_VISIBLE),
            chain("0", a, 1, ORDER_FAILED)
        );
        // The migration's SQL computes the same: sha256 over the same text.
        assert_eq!(
            chain("0", Uuid::nil(), 1, ORDER_VISIBLE),
            format!(
                "{:x}",
                Sha256::digest(format!("0:{}:1:order-visible", Uuid::nil()))
            )[..8]
        );
    }
}
