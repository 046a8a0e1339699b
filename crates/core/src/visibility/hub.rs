//! The in-process hub: fans recorded notices out to this instance's SSE
//! streams and long polls, keyed by user.
//!
//! One database subscription per instance (LISTEN on the notice channel),
//! never one per client. On a notification (however many arrived since its
//! last read: one read serves them all), a reconnect or the half-second
//! safety timer it reads what became visible in the log since its last
//! snapshot ([`notice_log::between`]), so a lost notification or a dropped
//! connection delays notices but never loses them, and a recording that
//! commits late is read when it commits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::notice_buffer::{NoticeReceiver, NoticeSender};
use super::notice_log::{self, Notice, Snapshot};
use crate::shutdown::Shutdown;

pub struct NoticeHub {
    inner: Mutex<Inner>,
    /// Notices buffered per user; a subscriber further behind is told it lagged.
    buffer: usize,
}

struct Inner {
    /// What the hub has read: every notice this snapshot sees as committed
    /// has been (or, during a read, is being) dispatched.
    head: Snapshot,
    /// The highest `seq` dispatched (a gauge for operators, nothing more).
    last_seq: i64,
    /// Grows only while a subscriber is behind (see `notice_buffer`).
    users: HashMap<Uuid, NoticeSender>,
    /// What the hub has seen of recent orders, so polls about them are
    /// answered from memory instead of the database.
    recent: RecentNotices,
}

/// Per order: its latest notice and its latest `order-visible`, for the most
/// recently noticed orders (bounded; the oldest are forgotten first).
#[derive(Default)]
struct RecentNotices {
    by_order: HashMap<Uuid, KnownOrder>,
    arrival: std::collections::VecDeque<Uuid>,
}

/// What the hub knows of one order.
#[derive(Clone, Debug)]
pub struct KnownOrder {
    pub latest: Notice,
    pub latest_visible: Option<Notice>,
}

/// How many orders the hub remembers for polls.
const RECENT_ORDERS: usize = 100_000;

impl RecentNotices {
    fn record(&mut self, notice: &Notice) {
        // An order's notices are its user's, so a lower position in the
        // user's stream is an older notice: it changes nothing.
        if self
            .by_order
            .get(&notice.order_id)
            .is_some_and(|known| known.latest.user_seq >= notice.user_seq)
        {
            return;
        }
        let visible = (notice.kind == notice_log::ORDER_VISIBLE).then(|| notice.clone());
        match self.by_order.get_mut(&notice.order_id) {
            Some(known) => {
                known.latest = notice.clone();
                if visible.is_some() {
                    known.latest_visible = visible;
                }
            }
            None => {
                self.by_order.insert(
                    notice.order_id,
                    KnownOrder {
                        latest: notice.clone(),
                        latest_visible: visible,
                    },
                );
                self.arrival.push_back(notice.order_id);
                if self.arrival.len() > RECENT_ORDERS
                    && let Some(oldest) = self.arrival.pop_front()
                {
                    self.by_order.remove(&oldest);
                }
            }
        }
    }
}

/// A live feed of one user's notices: every notice `head` does not see as
/// committed (internal, never shown to clients). A notice `head` sees may
/// still arrive, when the hub is mid-read: the stream drops what it has.
pub struct Subscription {
    pub head: Snapshot,
    pub receiver: NoticeReceiver,
}

impl NoticeHub {
    pub fn new(head: Snapshot, buffer: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                head,
                last_seq: 0,
                users: HashMap::new(),
                recent: RecentNotices::default(),
            }),
            buffer: buffer.max(1),
        }
    }

    /// Registers and reads the head under one lock, so the subscriber gets
    /// exactly the notices after `head`: none missed, none before.
    pub fn subscribe(&self, user_id: Uuid) -> Subscription {
        let mut inner = self.inner.lock().expect("hub lock poisoned");
        let head = inner.head.clone();
        let receiver = inner
            .users
            .entry(user_id)
            .or_insert_with(|| NoticeSender::new(self.buffer))
            .subscribe();
        Subscription { head, receiver }
    }

    pub fn head(&self) -> Snapshot {
        self.inner.lock().expect("hub lock poisoned").head.clone()
    }

    /// What this hub has dispatched about an order, if it is among the
    /// recent ones (nothing for orders noticed before this instance started).
    pub fn known(&self, order_id: Uuid) -> Option<KnownOrder> {
        let inner = self.inner.lock().expect("hub lock poisoned");
        inner.recent.by_order.get(&order_id).cloned()
    }

    /// Sends notices (each user's in stream order) to their users'
    /// subscribers. Never blocks: a slow subscriber lags on its own without
    /// holding anyone up.
    fn dispatch(&self, notices: &[Notice]) {
        let mut inner = self.inner.lock().expect("hub lock poisoned");
        for notice in notices {
            inner.last_seq = inner.last_seq.max(notice.seq);
            inner.recent.record(notice);
            if let Some(sender) = inner.users.get(&notice.user_id)
                && sender.send(notice.clone()).is_err()
            {
                // Nobody listens for this user any more.
                inner.users.remove(&notice.user_id);
            }
        }
        inner.users.retain(|_, sender| sender.receiver_count() > 0);
        metrics::gauge!("sightline_notice_head").set(inner.last_seq as f64);
    }

    /// Reads and dispatches what became visible in the log since the head.
    ///
    /// The head moves to the new snapshot before the first page is sent, so
    /// a stream that subscribes during the read replays from the log what it
    /// missed of the pages already sent and drops the rest when it comes
    /// live; one that subscribed before gets every page. Were the head moved
    /// after the last page, a stream subscribing in between would replay up
    /// to the old head and never see the pages sent before it subscribed.
    async fn catch_up(&self, db: &PgPool) -> sqlx::Result<()> {
        let to = notice_log::snapshot(db).await?;
        let from = {
            let mut inner = self.inner.lock().expect("hub lock poisoned");
            std::mem::replace(&mut inner.head, to.clone())
        };
        if !from.precedes(&to) {
            // Another database's history took this one's place: its
            // notices cannot be told from what was read by transaction.
            // Start again from it as it is; a stream's cursor is not of
            // this history, so it gets `reset` when it reconnects.
            tracing::warn!(
                "the notice log's transaction ids went back (a restored backup?): the hub starts again from the log as it is"
            );
            return Ok(());
        }
        let mut after = (Uuid::nil(), 0);
        loop {
            let page = match notice_log::between(db, &from, &to, after, READ_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    // Put the old head back: the next read covers it all
                    // again (what was sent is sent twice, which streams drop).
                    self.inner.lock().expect("hub lock poisoned").head = from;
                    return Err(e);
                }
            };
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = (last.user_id, last.user_seq);
            self.dispatch(&page);
            if (page.len() as i64) < READ_PAGE {
                return Ok(());
            }
        }
    }
}

/// Notices per read of the log.
const READ_PAGE: i64 = 1000;

/// Keeps the hub in step with the notice log until shutdown.
/// `db` is the pipeline's pool, not the web's: a burst of requests must not
/// hold up notices.
pub async fn run(hub: Arc<NoticeHub>, db: PgPool, mut shutdown: Shutdown) {
    let db = &db;
    let mut listener: Option<PgListener> = None;
    let mut failures = 0u32;
    // Whether the log must be read: at start, after a (re)connect, a gap, a
    // notification without notices, a lost one (the timer) or a failed read.
    let mut read_log = true;
    loop {
        if listener.is_none() {
            listener = connect_listener(db).await;
            // Whatever committed before the LISTEN was heard by nobody.
            read_log = true;
        }
        if read_log {
            match hub.catch_up(db).await {
                Ok(()) => {
                    failures = 0;
                    read_log = false;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "notice hub cannot read the log; retrying");
                    }
                }
            }
        }
        // A notification wakes us at once; the timer is the safety net.
        let wait = Duration::from_millis(if failures > 0 { 1000 } else { 500 });
        tokio::select! {
            _ = shutdown.recv() => return,
            received = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(Some),
                    None => std::future::pending().await,
                }
            } => match received {
                Ok(Some(_)) => {
                    // One read answers every notification received so far.
                    if let Some(l) = listener.as_mut() {
                        while l.next_buffered().is_some() {}
                    }
                    read_log = true;
                }
                _ => listener = None,
            },
            _ = tokio::time::sleep(wait) => read_log = true,
        }
    }
}

async fn connect_listener(db: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(db).await.ok()?;
    listener.listen(notice_log::CHANNEL).await.ok()?;
    Some(listener)
}

use crate::metric_catalogue::Metric;
use metrics::Unit;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::gauge("sightline_notice_head", Unit::Count, "The highest global notice sequence this instance's hub dispatched (internal; clients see per-user cursors)."),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(seq: i64, order: u128, kind: &str) -> Notice {
        Notice {
            seq,
            user_id: Uuid::from_u128(1),
            user_seq: seq,
            chain: "00000000".to_owned(),
            order_id: Uuid::from_u128(order),
            order_version: 1,
            kind: kind.to_owned(),
            status: "placed".to_owned(),
            error: None,
            visible_at: chrono::Utc::now(),
            committed_at: None,
        }
    }

    /// The receiver's next notice if one is there now.
    fn next(receiver: &mut NoticeReceiver) -> Option<Notice> {
        use futures::FutureExt;
        receiver
            .recv()
            .now_or_never()
            .map(|r| Notice::clone(&r.unwrap()))
    }

    fn hub(buffer: usize) -> NoticeHub {
        NoticeHub::new(Snapshot::from_text("5:5:"), buffer)
    }

    #[test]
    fn dispatched_notices_reach_their_users_subscribers_only() {
        let hub = hub(8);
        let mut mine = hub.subscribe(Uuid::from_u128(1)).receiver;
        let mut first = notice(5, 7, notice_log::ORDER_VISIBLE);
        first.committed_at = Some(chrono::Utc::now());
        let mut other = notice(6, 8, notice_log::ORDER_VISIBLE);
        other.user_id = Uuid::from_u128(2);
        hub.dispatch(&[first.clone(), other]);
        // What reaches the stream is the notice as recorded, commit time too.
        assert_eq!(next(&mut mine).unwrap(), first);
        assert!(next(&mut mine).is_none());
        assert_eq!(
            hub.subscribe(Uuid::from_u128(1)).head,
            Snapshot::from_text("5:5:")
        );
    }

    #[test]
    fn the_hub_remembers_recent_orders_and_forgets_the_oldest() {
        let hub = hub(4);
        hub.dispatch(&[notice(1, 7, notice_log::ORDER_VISIBLE)]);
        hub.dispatch(&[notice(2, 7, notice_log::ORDER_FAILED)]);
        let known = hub.known(Uuid::from_u128(7)).unwrap();
        assert_eq!(known.latest.seq, 2);
        assert_eq!(known.latest_visible.unwrap().seq, 1);
        // A replayed older notice changes nothing.
        hub.dispatch(&[notice(1, 7, notice_log::ORDER_VISIBLE)]);
        assert_eq!(hub.known(Uuid::from_u128(7)).unwrap().latest.seq, 2);

        let many: Vec<Notice> = (0..RECENT_ORDERS as i64)
            .map(|i| notice(3 + i, 1000 + i as u128, notice_log::ORDER_VISIBLE))
            .collect();
        hub.dispatch(&many);
        assert!(hub.known(Uuid::from_u128(7)).is_none());
        assert!(
            hub.known(Uuid::from_u128(1000 + RECENT_ORDERS as u128 - 1))
                .is_some()
        );
    }
}
