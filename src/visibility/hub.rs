//! The in-process hub: fans recorded notices out to this instance's SSE
//! streams and long polls, keyed by user.
//!
//! One database subscription per instance (LISTEN on the notice channel),
//! never one per client. On every wake-up the hub reads the log after the last
//! cursor it dispatched, so a lost notification or a dropped connection delays
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
    loop {
        if listener.is_none() {
            listener = connect_listener(db).await;
        }
        match hub.catch_up(db).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "notice hub cannot read the log; retrying");
                }
            }
        }
        // A notification wakes us at once; the timer is the safety net.
        let wait = Duration::from_millis(if failures > 0 { 1000 } else { 500 });
        tokio::select! {
            _ = shutdown.recv() => return,
            received = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if received.is_err() {
                    listener = None;
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn connect_listener(db: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(db).await.ok()?;
    listener.listen(notice_log::CHANNEL).await.ok()?;
    Some(listener)
}

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
