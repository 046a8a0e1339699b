//! The in-process hub: fans recorded notices out to this instance's SSE
//! streams and long polls, keyed by user.
//!
//! One database subscription per instance (LISTEN on the notice channel),
//! never one per client. On every wake-up the hub reads the log after the last
//! cursor it dispatched, so a lost notification or a dropped connection delays
//! notices but never loses them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::notice_log::{self, Notice};
use crate::shutdown::Shutdown;
use crate::state::AppState;

pub struct NoticeHub {
    inner: Mutex<Inner>,
    /// Notices buffered per user; a subscriber further behind is told it lagged.
    buffer: usize,
}

struct Inner {
    /// The last cursor dispatched: every notice up to here has been sent.
    head: i64,
    users: HashMap<Uuid, broadcast::Sender<Notice>>,
}

/// A live feed of one user's notices, starting right after `head`.
pub struct Subscription {
    pub head: i64,
    pub receiver: broadcast::Receiver<Notice>,
}

impl NoticeHub {
    pub fn new(head: i64, buffer: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                head,
                users: HashMap::new(),
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
            .or_insert_with(|| broadcast::channel(self.buffer).0)
            .subscribe();
        Subscription { head, receiver }
    }

    pub fn head(&self) -> i64 {
        self.inner.lock().expect("hub lock poisoned").head
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
pub async fn run(state: AppState, mut shutdown: Shutdown) {
    let db = &state.db;
    let hub = &state.hub;
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
