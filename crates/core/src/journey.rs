//! One order version's journey through the pipeline (issue #27): when it was
//! committed, claimed by the relay, handed to the bus, delivered to a
//! projector, indexed, made searchable, noticed and first sent to a client,
//! and where it stopped if it did (retrying, with the failure's kind; parked
//! as a dead letter). Read from the times the pipeline keeps on the rows it
//! writes anyway (see `migrations/20270102000001_order_journeys.sql`): the
//! outbox row, its dead letter, its notice, in one statement.
//!
//! The same-database mode's journey is the short one it really is: the
//! order, its search words and its notice commit together, so it is
//! committed, searchable and noticed at once, then sent.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A stage of a journey, in the order the pipeline reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    Committed,
    Claimed,
    Published,
    DeliveredToProjector,
    Retrying,
    Parked,
    Indexed,
    Searchable,
    Noticed,
    Sent,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Committed => "committed",
            StageName::Claimed => "claimed",
            StageName::Published => "published",
            StageName::DeliveredToProjector => "delivered_to_projector",
            StageName::Retrying => "retrying",
            StageName::Parked => "parked",
            StageName::Indexed => "indexed",
            StageName::Searchable => "searchable",
            StageName::Noticed => "noticed",
            StageName::Sent => "sent",
        }
    }
}

/// One stage reached, and when.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stage {
    pub stage: StageName,
    /// RFC 3339 with microseconds, UTC.
    #[serde(serialize_with = "micros")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-06T01:23:45.123456Z")]
    pub at: DateTime<Utc>,
    /// `retrying`: the latest failure's kind; `parked`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `sent`: `stream` or `poll`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `sent`: the instance that sent it (operators only: `sightline
    /// journey`, `/status`; never in the API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

fn micros<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// An order version's journey: its stages in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Journey {
    pub id: Uuid,
    pub version: i32,
    pub stages: Vec<Stage>,
}

impl Journey {
    /// The stage reached last (the latest in time).
    pub fn last(&self) -> Option<&Stage> {
        self.stages.last()
    }

    fn at(&self, name: StageName) -> Option<DateTime<Utc>> {
        self.stages.iter().find(|s| s.stage == name).map(|s| s.at)
    }

    /// From committed to the last stage reached.
    pub fn total(&self) -> Option<chrono::Duration> {
        Some(self.last()?.at - self.at(StageName::Committed)?)
    }

    /// The stage that took longest to reach from the one before it, and how
    /// long (what dominated this journey).
    pub fn slowest_step(&self) -> Option<(StageName, chrono::Duration)> {
        self.stages
            .windows(2)
            .map(|w| (w[1].stage, w[1].at - w[0].at))
            .max_by_key(|(_, took)| *took)
    }
}

/// Whose journeys a read may see.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    /// Only this user's orders (the API: anyone else's is "not found").
    Owner(Uuid),
    /// Any order (`sightline journey`, `/status`: operators).
    Operator,
}

/// The row the journey statement reads.
#[derive(sqlx::FromRow)]
struct Row {
    aggregate_version: i32,
    created_at: DateTime<Utc>,
    claimed_at: Option<DateTime<Utc>>,
    handed_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    indexed_at: Option<DateTime<Utc>>,
    searchable_at: Option<DateTime<Utc>>,
    retried_at: Option<DateTime<Utc>>,
    retry_reason: Option<String>,
    journey_pruned: bool,
    parked_at: Option<DateTime<Utc>>,
    parked_reason: Option<String>,
    notice_kind: Option<String>,
    notice_error: Option<String>,
    visible_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    sent_via: Option<String>,
    sent_by: Option<String>,
}

/// The statement behind [`read`] and [`slowest`]: an outbox row with its
/// dead letter and its version's notice (`order-visible` before
/// `order-failed`).
const SELECT: &str = "
    SELECT o.aggregate_version, o.created_at, o.claimed_at, o.handed_at, o.delivered_at,
           o.indexed_at, o.searchable_at, o.retried_at, o.retry_reason, o.journey_pruned,
           d.parked_at, d.error AS parked_reason,
           n.kind AS notice_kind, n.error AS notice_error, n.visible_at, n.sent_at,
           n.sent_via, n.sent_by
      FROM outbox o
      LEFT JOIN dead_letters d ON d.outbox_id = o.id
      LEFT JOIN LATERAL (
            SELECT kind, error, visible_at, sent_at, sent_via, sent_by FROM notices
             WHERE order_id = o.aggregate_id AND order_version = o.aggregate_version
             ORDER BY kind = 'order-visible' DESC LIMIT 1) n ON true";

/// The journey of `order`'s version `version` (its latest when `None`), as
/// `reader` may see it: `None` when there is no such order or version, it is
/// another user's, or its journey was pruned with the notice log.
/// `same_database`: the instance reads from the write database
/// (`READ_STORE=postgres`).
pub async fn read(
    db: &PgPool,
    reader: Reader,
    order: Uuid,
    version: Option<i32>,
    same_database: bool,
) -> sqlx::Result<Option<Journey>> {
    let owner = match reader {
        Reader::Owner(user) => Some(user),
        Reader::Operator => None,
    };
    let row: Option<Row> = sqlx::query_as(&format!(
        "{SELECT}
          WHERE o.aggregate_id = $1 AND ($2::uuid IS NULL OR o.user_id = $2)
            AND ($3::int IS NULL OR o.aggregate_version = $3)
          ORDER BY o.aggregate_version DESC, o.id DESC LIMIT 1"
    ))
    .bind(order)
    .bind(owner)
    .bind(version)
    .fetch_optional(db)
    .await?;
    let operator = matches!(reader, Reader::Operator);
    Ok(row.and_then(|row| assemble(order, row, same_database, operator)))
}

/// The slowest journeys among the orders noticed in the last `within`
/// (committed → sent, or → noticed when not sent yet), slowest first: for
/// operators (`/status`). Looks at the newest `scan` notices at most, so it
/// costs the same however long the log is.
pub async fn slowest(
    db: &PgPool,
    within: std::time::Duration,
    limit: i64,
    same_database: bool,
) -> sqlx::Result<Vec<Journey>> {
    const SCAN: i64 = 5_000;
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT n.order_id, n.order_version FROM (
             SELECT order_id, order_version, visible_at, sent_at FROM notices
              WHERE kind = 'order-visible' ORDER BY seq DESC LIMIT $3) n
           JOIN outbox o ON o.aggregate_id = n.order_id AND o.aggregate_version = n.order_version
          WHERE n.visible_at > clock_timestamp() - make_interval(secs => $1)
            AND NOT o.journey_pruned
          ORDER BY COALESCE(n.sent_at, n.visible_at) - o.created_at DESC
          LIMIT $2",
    )
    .bind(within.as_secs_f64())
    .bind(limit)
    .bind(SCAN)
    .fetch_all(db)
    .await?;
    let mut journeys = Vec::with_capacity(rows.len());
    for (order, version) in rows {
        if let Some(journey) =
            read(db, Reader::Operator, order, Some(version), same_database).await?
        {
            journeys.push(journey);
        }
    }
    Ok(journeys)
}

fn stage(stage: StageName, at: Option<DateTime<Utc>>) -> Option<Stage> {
    Some(Stage {
        stage,
        at: at?,
        reason: None,
        via: None,
        instance: None,
    })
}

/// `operator`: a parked event's reason is the dead letter's own error (the
/// read store's words); its owner gets what the `order-failed` notice told
/// them, never the internals.
fn assemble(id: Uuid, row: Row, same_database: bool, operator: bool) -> Option<Journey> {
    if row.journey_pruned {
        return None;
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(10);
    if same_database && row.claimed_at.is_none() {
        // The order, its search words and its notice commit together: all
        // three become true at that commit, whose nearest recorded time is
        // the notice's (the transaction's last statement). The outbox row's
        // own time is earlier by the rest of the transaction's work, which
        // no one could see yet.
        let at = row.visible_at.unwrap_or(row.created_at);
        stages.extend(stage(StageName::Committed, Some(at)));
        stages.extend(stage(StageName::Searchable, row.visible_at));
    } else {
        stages.extend(stage(StageName::Committed, Some(row.created_at)));
        stages.extend(stage(StageName::Claimed, row.claimed_at));
        stages.extend(stage(StageName::Published, row.handed_at));
        stages.extend(stage(StageName::DeliveredToProjector, row.delivered_at));
        stages.extend(stage(StageName::Indexed, row.indexed_at));
        stages.extend(stage(StageName::Searchable, row.searchable_at));
    }
    if let Some(mut retrying) = stage(StageName::Retrying, row.retried_at) {
        retrying.reason = row.retry_reason;
        stages.push(retrying);
    }
    if let Some(mut parked) = stage(StageName::Parked, row.parked_at) {
        parked.reason = if operator {
            row.parked_reason
        } else {
            row.notice_error
                .clone()
                .filter(|_| row.notice_kind.as_deref() == Some("order-failed"))
                .or_else(|| Some("the order could not be made searchable".to_owned()))
        };
        stages.push(parked);
    }
    if row.notice_kind.is_some() {
        stages.extend(stage(StageName::Noticed, row.visible_at));
        if let Some(mut sent) = stage(StageName::Sent, row.sent_at) {
            sent.via = row.sent_via;
            // Which instance sent it is for operators: to anyone else a
            // host's name and port is the inside of the system.
            sent.instance = row.sent_by.filter(|_| operator);
            stages.push(sent);
        }
    }
    // In the order they happened; a tie keeps the pipeline's order (a stable
    // sort of stages listed in it).
    stages.sort_by_key(|s| s.at);
    Some(Journey {
        id,
        version: row.aggregate_version,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(same: bool) -> Row {
        let t = |ms: i64| Some(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms));
        Row {
            aggregate_version: 1,
            created_at: t(0).unwrap(),
            claimed_at: if same { None } else { t(2) },
            handed_at: if same { None } else { t(3) },
            delivered_at: if same { None } else { t(3) },
            indexed_at: if same { None } else { t(20) },
            searchable_at: if same { None } else { t(30) },
            retried_at: None,
            retry_reason: None,
            journey_pruned: false,
            parked_at: None,
            parked_reason: None,
            notice_kind: Some("order-visible".into()),
            notice_error: None,
            visible_at: t(32),
            sent_at: t(35),
            sent_via: Some("stream".into()),
            sent_by: Some("host:1".into()),
        }
    }

    #[test]
    fn stages_are_in_the_pipelines_order_and_time_order() {
        let journey = assemble(Uuid::nil(), row(false), false, true).unwrap();
        let names: Vec<&str> = journey.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            names,
            [
                "committed",
                "claimed",
                "published",
                "delivered_to_projector",
                "indexed",
                "searchable",
                "noticed",
                "sent"
            ]
        );
        assert_eq!(journey.total(), Some(chrono::Duration::milliseconds(35)));
        assert_eq!(
            journey.slowest_step(),
            Some((StageName::Indexed, chrono::Duration::milliseconds(17)))
        );
        let json = serde_json::to_value(&journey).unwrap();
        assert_eq!(json["stages"][0]["at"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(json["stages"][7]["via"], "stream");
        assert_eq!(json["stages"][7]["instance"], "host:1");
        // Its owner is not told which host sent it.
        let owners = assemble(Uuid::nil(), row(false), false, false).unwrap();
        assert_eq!(owners.stages[7].instance, None);
    }

    #[test]
    fn the_same_database_journey_is_the_short_one() {
        let journey = assemble(Uuid::nil(), row(true), true, false).unwrap();
        let names: Vec<&str> = journey.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["committed", "searchable", "noticed", "sent"]);
    }

    #[test]
    fn a_pruned_journey_is_none() {
        let mut pruned = row(false);
        pruned.journey_pruned = true;
        assert!(assemble(Uuid::nil(), pruned, false, false).is_none());
    }
}
