//! The in-process hub: fans recorded notices out to this instance's SSE
//! streams and long polls, keyed by user.
//!
//! One database subscription per instance (LISTEN on the notice channel),
//! never one per client. A notification carries the notices its recording
//! committed; when they follow the last `seq` the hub dispatched, it sends
//! them as they are. Otherwise — a gap, a notification too big to carry
//! them, a reconnect, or the half-second safety timer — it reads the log
//! after that `seq`, so a lost notification or a dropped connection delays
//! notices but never loses them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::notice_buffer::{NoticeReceiver, NoticeSender};
use super::notice_log::{self, Notice};
use crate::shutdown::Shutdown;

pub struct NoticeHub {
    inner: Mutex<Inner>,
    /// Notices buffered per user; a subscriber further behind is told it lagged.
    buffer: usize,
}

struct Inner {
    /// The last cursor dispatched: every notice up to here has been sent.
    head: i64,
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

/// A live feed of one user's notices, starting right after `head` (the
/// global `seq`: internal, never shown to clients).
pub struct Subscription {
    pub head: i64,
    pub receiver: NoticeReceiver,
}

impl NoticeHub {
    pub fn new(head: i64, buffer: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                head,
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
        let head = inner.head;
        let receiver = inner
            .users
            .entry(user_id)
            .or_insert_with(|| NoticeSender::new(self.buffer))
            .subscribe();
        Subscription { head, receiver }
    }

    pub fn head(&self) -> i64 {
        self.inner.lock().expect("hub lock poisoned").head
    }

    /// What this hub has dispatched about an order, if it is among the
    /// recent ones (nothing for orders noticed before this instance started).
    pub fn known(&self, order_id: Uuid) -> Option<KnownOrder> {
        let inner = self.inner.lock().expect("hub lock poisoned");
        inner.recent.by_order.get(&order_id).cloned()
    }

    /// Sends notices (in cursor order) to their users' subscribers. Never
    /// blocks: a slow subscriber lags on its own without holding anyone up.
    fn dispatch(&self, notices: &[Notice]) {
        let mut inner = self.inner.lock().expect("hub lock poisoned");
        for notice in notices {
            if notice.seq <= inner.head {
                continue;
            }
            inner.head = notice.seq;
            inner.recent.record(notice);
            if let Some(sender) = inner.users.get(&notice.user_id)
                && sender.send(notice.clone()).is_err()
            {
                // Nobody listens for this user any more.
                inner.users.remove(&notice.user_id);
            }
        }
        inner.users.retain(|_, sender| sender.receiver_count() > 0);
        metrics::gauge!("sightline_notice_head").set(inner.head as f64);
    }

    /// Sends the notices a notification carries when they follow the head
    /// with nothing between (the log's `seq`s are commit order, and
    /// notifications arrive in commit order), saving the read of the log.
    /// False when the log must be read instead: no notices carried, or a
    /// gap before them — a notification missed, or a number a rolled-back
    /// recording took.
    fn dispatch_carried(&self, payload: &str) -> bool {
        let Some(notices) = notice_log::carried(payload) else {
            return false;
        };
        let follows = notices[0].seq <= self.head() + 1
            && notices.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if !follows {
            return false;
        }
        self.dispatch(&notices);
        true
    }

    /// Reads the log after the head until it is drained.
    async fn catch_up(&self, db: &PgPool) -> sqlx::Result<()> {
        loop {
            let batch = notice_log::after(db, self.head(), 1000).await?;
            if batch.is_empty() {
                return Ok(());
            }
            self.dispatch(&batch);
        }
    }
}

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
                Ok(Some(notification)) => {
                    if !hub.dispatch_carried(notification.payload()) {
                        read_log = true;
                    }
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
    Metric::gauge("sightline_notice_head", Unit::Count, "The last global notice sequence this instance's hub dispatched (internal; clients see per-user cursors)."),
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

    fn carrying(notices: &[Notice]) -> String {
        notice_log::payload(notices)
    }

    /// The receiver's next notice if one is there now.
    fn next(receiver: &mut NoticeReceiver) -> Option<Notice> {
        use futures::FutureExt;
        receiver
            .recv()
            .now_or_never()
            .map(|r| Notice::clone(&r.unwrap()))
    }

    #[test]
    fn carried_notices_that_follow_the_head_are_sent_and_a_gap_asks_for_the_log() {
        let hub = NoticeHub::new(4, 8);
        let mut receiver = hub.subscribe(Uuid::from_u128(1)).receiver;
        let mut first = notice(5, 7, notice_log::ORDER_VISIBLE);
        first.committed_at = Some(chrono::Utc::now());
        let carried = [first.clone(), notice(6, 8, notice_log::ORDER_VISIBLE)];
        assert!(hub.dispatch_carried(&carrying(&carried)));
        assert_eq!(hub.head(), 6);
        let got = next(&mut receiver).unwrap();
        // What reaches the stream is the notice as recorded, commit time too.
        assert_eq!(got, first);
        assert_eq!(next(&mut receiver).unwrap().seq, 6);

        // Seq 7 was never seen: the log must be read, nothing is sent.
        assert!(!hub.dispatch_carried(&carrying(&[notice(8, 9, "order-visible")])));
        // A gap inside one notification is a gap too.
        let inner_gap = [notice(7, 9, "order-visible"), notice(9, 9, "order-visible")];
        assert!(!hub.dispatch_carried(&carrying(&inner_gap)));
        // Too many to carry: the notification carries none and the hub reads
        // the log.
        let many: Vec<Notice> = (7..100)
            .map(|seq| notice(seq, 9, "order-visible"))
            .collect();
        assert_eq!(carrying(&many), "");
        assert!(!hub.dispatch_carried(""));
        assert_eq!(hub.head(), 6);
        assert!(next(&mut receiver).is_none());

        // Notices the log already gave are skipped, the new one is sent.
        let overlapping = [notice(6, 8, "order-visible"), notice(7, 9, "order-visible")];
        assert!(hub.dispatch_carried(&carrying(&overlapping)));
        assert_eq!(next(&mut receiver).unwrap().seq, 7);
        assert!(next(&mut receiver).is_none());
    }

    #[test]
    fn the_hub_remembers_recent_orders_and_forgets_the_oldest() {
        let hub = NoticeHub::new(0, 4);
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
