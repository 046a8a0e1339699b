//! Recording notices: each user's stream continued under a lock on that
//! user alone, its chain extended, and every hub woken once the recording
//! has committed. See the parent module for the two positions every notice
//! has and how the hubs read the log in commit order without a global lock.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{CHAIN_START, CHANNEL, COLUMNS, NewNotice, Notice, chain};
use crate::locks;

/// Records notices for order versions that search now shows, and wakes every
/// instance's hub once they have committed. Recording the same version again
/// does nothing, so redelivery never sends a notice twice; nor does
/// recording a version older than one already noticed (relay batches run
/// concurrently, so an older version can finish last: its notice would
/// describe an order search no longer shows). Returns the notices newly
/// recorded, in `seq` order.
///
/// Under its users' locks, it picks the new notices, numbers them (each
/// user's `user_seq` and `chain` continuing from `notice_streams`; the
/// global `seq` from its sequence), inserts them and moves the users' heads
/// — three statements in one transaction.
#[tracing::instrument(skip_all, fields(notices = notices.len()))]
pub async fn record(db: &PgPool, notices: &[NewNotice]) -> sqlx::Result<Vec<Notice>> {
    if notices.is_empty() {
        return Ok(vec![]);
    }
    let mut tx = db.begin().await?;
    let recorded = record_in(&mut tx, notices).await?;
    tx.commit().await?;
    if !recorded.is_empty() {
        wake_hubs(db).await;
    }
    Ok(recorded)
}

/// Tells every instance's hub that notices have committed: a NOTIFY of its
/// own, after the recording's commit, never inside it (see [`crate::wake`]).
/// A lost one delays the notices by the hubs' safety timer, never loses them.
pub async fn wake_hubs(db: &PgPool) {
    if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(db)
        .await
    {
        tracing::debug!(error = %e, "failed to wake the notice hubs");
    }
}

/// [`record`] inside the caller's transaction: the same-database mode
/// records an order's notice in the order's own transaction. It wakes no
/// hub: the caller does once it has committed ([`crate::wake`]). The users'
/// locks are held until that transaction ends; they exclude only other
/// recordings for the same users.
pub async fn record_in(tx: &mut PgConnection, notices: &[NewNotice]) -> sqlx::Result<Vec<Notice>> {
    if notices.is_empty() {
        return Ok(vec![]);
    }
    lock_streams(tx, notices).await?;
    // Nobody else records for these users while we hold their locks, so
    // what this sees is what the insert will find (a statement of its own,
    // after the locks: its snapshot includes every recording that released
    // them).
    let fresh = fresh(tx, notices).await?;
    let (rows, heads) = number(notices, fresh);
    if rows.is_empty() {
        return Ok(vec![]);
    }
    insert(tx, &rows, heads).await
}

/// Takes the notices' users' stream locks, in one order (by key) so two
/// recordings never wait for each other in a circle. Held until commit: a
/// user's notices are numbered one recording after another, so `user_seq`
/// grows in commit order. With them, the recording lock shared ([`locks::NOTICE_RECORD`]):
/// recordings never wait for one another on it.
async fn lock_streams(tx: &mut PgConnection, notices: &[NewNotice]) -> sqlx::Result<()> {
    let users: Vec<Uuid> = notices.iter().map(|n| n.user_id).collect();
    sqlx::query(
        "WITH paused AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($3))
         SELECT pg_advisory_xact_lock($1, s.key)
         FROM paused,
              (SELECT DISTINCT hashtext(u::text) AS key FROM UNNEST($2::uuid[]) AS u
               ORDER BY key) AS s",
    )
    .bind(locks::NOTICE_STREAM)
    .bind(&users)
    .bind(locks::NOTICE_RECORD)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Where a user's stream stands: its last `user_seq` and `chain`.
type Head = (i64, String);

/// One notice to insert, numbered: its place and chain in its user's stream.
type Numbered<'a> = (&'a NewNotice, i64, String);

/// The notices not recorded yet, in the batch's order, as their place in
/// `notices` (1-based) with their user's stream head: none whose version (or
/// a newer one of its order) was noticed before.
async fn fresh(
    tx: &mut PgConnection,
    notices: &[NewNotice],
) -> sqlx::Result<Vec<(i64, Option<i64>, Option<String>)>> {
    let users: Vec<Uuid> = notices.iter().map(|n| n.user_id).collect();
    let orders: Vec<Uuid> = notices.iter().map(|n| n.order_id).collect();
    let versions: Vec<i32> = notices.iter().map(|n| n.order_version).collect();
    let kinds: Vec<&str> = notices.iter().map(|n| n.kind).collect();
    sqlx::query_as(
        "SELECT n.ord, s.last_seq, s.last_chain
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[]) WITH ORDINALITY
                AS n (user_id, order_id, order_version, kind, ord)
         LEFT JOIN notice_streams s ON s.user_id = n.user_id
         WHERE NOT EXISTS (SELECT 1 FROM notices later
                            WHERE later.order_id = n.order_id
                              AND later.order_version > n.order_version)
           AND NOT EXISTS (SELECT 1 FROM notices same
                            WHERE same.order_id = n.order_id
                              AND same.order_version = n.order_version
                              AND same.kind = n.kind)
         ORDER BY n.ord",
    )
    .bind(&users)
    .bind(&orders)
    .bind(&versions)
    .bind(&kinds)
    .fetch_all(&mut *tx)
    .await
}

/// Numbers the fresh notices in the batch's order, continuing each user's
/// stream from its head, and returns them with the users' new heads.
fn number<'a>(
    notices: &'a [NewNotice],
    fresh: Vec<(i64, Option<i64>, Option<String>)>,
) -> (Vec<Numbered<'a>>, HashMap<Uuid, Head>) {
    // The newest version of each order this batch has noticed so far: a
    // batch may carry several versions of one order in any order (a
    // redelivery), and one that follows a newer version of its order would
    // send that order's stream back a version.
    let mut noticed: HashMap<Uuid, i32> = HashMap::new();
    let mut seen = HashSet::new();
    let mut heads: HashMap<Uuid, Head> = HashMap::new();
    let mut rows: Vec<Numbered<'a>> = Vec::with_capacity(fresh.len());
    for (ord, last_seq, last_chain) in fresh {
        let notice = &notices[(ord - 1) as usize];
        if noticed
            .get(&notice.order_id)
            .is_some_and(|&newer| newer > notice.order_version)
        {
            continue;
        }
        noticed
            .entry(notice.order_id)
            .and_modify(|v| *v = (*v).max(notice.order_version))
            .or_insert(notice.order_version);
        // The same notice twice in one batch counts once.
        if !seen.insert((notice.order_id, notice.order_version, notice.kind)) {
            continue;
        }
        let head = heads.entry(notice.user_id).or_insert_with(|| {
            (
                last_seq.unwrap_or(0),
                last_chain.unwrap_or_else(|| CHAIN_START.to_owned()),
            )
        });
        head.0 += 1;
        head.1 = chain(&head.1, notice.order_id, notice.order_version, notice.kind);
        rows.push((notice, head.0, head.1.clone()));
    }
    (rows, heads)
}

/// Inserts the numbered notices and moves each user's stream head to its
/// last new notice, in one statement; returns the notices as recorded, in
/// `seq` order, with their commit times. `seq` comes from the column's
/// sequence as the rows are inserted; nothing relies on its order (the hubs
/// read by transaction and order each user's notices by `user_seq`).
async fn insert(
    tx: &mut PgConnection,
    rows: &[Numbered<'_>],
    heads: HashMap<Uuid, Head>,
) -> sqlx::Result<Vec<Notice>> {
    let col = |f: fn(&NewNotice) -> Uuid| rows.iter().map(|r| f(r.0)).collect::<Vec<_>>();
    let (users, positions, chains): (Vec<Uuid>, Vec<i64>, Vec<String>) = heads
        .into_iter()
        .map(|(user, (position, chain))| (user, position, chain))
        .fold(
            Default::default(),
            |(mut u, mut p, mut c), (user, position, chain)| {
                u.push(user);
                p.push(position);
                c.push(chain);
                (u, p, c)
            },
        );
    let mut recorded: Vec<Notice> = sqlx::query_as(&format!(
        "WITH recorded AS (
             INSERT INTO notices (user_id, user_seq, chain, order_id, order_version, kind,
                                  status, error, visible_at)
             SELECT n.*, clock_timestamp()
             FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::int[],
                         $6::text[], $7::text[], $8::text[])
                  AS n (user_id, user_seq, chain, order_id, order_version, kind, status, error)
             RETURNING {COLUMNS}
         ), heads AS (
             INSERT INTO notice_streams (user_id, last_seq, last_chain)
             SELECT * FROM UNNEST($9::uuid[], $10::bigint[], $11::text[])
             ON CONFLICT (user_id) DO UPDATE
               SET last_seq = excluded.last_seq, last_chain = excluded.last_chain
         )
         SELECT * FROM recorded ORDER BY seq"
    ))
    .bind(col(|n| n.user_id))
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>())
    .bind(col(|n| n.order_id))
    .bind(rows.iter().map(|r| r.0.order_version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.0.kind).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.0.status).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.0.error.clone()).collect::<Vec<_>>())
    .bind(&users)
    .bind(&positions)
    .bind(&chains)
    .fetch_all(&mut *tx)
    .await?;
    // What the caller knew of each event's commit, carried to the hubs.
    let committed: HashMap<(Uuid, i32, &str), _> = rows
        .iter()
        .map(|r| {
            (
                (r.0.order_id, r.0.order_version, r.0.kind),
                r.0.committed_at,
            )
        })
        .collect();
    for notice in &mut recorded {
        notice.committed_at = committed
            .get(&(notice.order_id, notice.order_version, notice.kind.as_str()))
            .copied()
            .flatten();
    }
    Ok(recorded)
}
