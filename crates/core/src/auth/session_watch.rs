//! A stream lives no longer than its session. Every open event stream and
//! waiting long poll of this instance watches the session that opened it;
//! the watch ends them when that session ends:
//!
//! - **Signed out** (`DELETE /api/sessions`, sign out everywhere, a password
//!   change): the statement that deletes the session rows also sends their
//!   keys on `session::ENDED_CHANNEL` (`pg_notify` inside it, so only a committed
//!   sign-out is heard), and every instance's watch LISTENs there.
//! - **Expired or gone for any other reason** (idle or absolute end, a
//!   NOTIFY missed while the LISTEN connection was down): every
//!   [`SWEEP_EVERY`] the watch asks the database which watched sessions are
//!   still open, and after every (re)connect of its LISTEN. So no stream
//!   outlives its session by more than one sweep, whatever was missed.
//!
//! An open stream does not count as use: it does not move the session's
//! idle end (only requests do), so a tab left open still ends at the idle
//! timeout unless the user does something.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::session;
use crate::shutdown::Shutdown;

/// How often the watched sessions are checked against the database.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why a session ended, as the stream's last event says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Signed out (this session, or all of the user's).
    SignedOut,
    /// Past its idle or absolute end.
    Expired,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::SignedOut => "signed_out",
            Ended::Expired => "expired",
        }
    }
}

/// The sessions this instance's streams and polls are open under.
#[derive(Default)]
pub struct SessionWatch {
    watched: Mutex<HashMap<Vec<u8>, watch::Sender<Option<Ended>>>>,
}

/// One stream's or poll's view of its session: [`SessionEnd::ended`]
/// resolves when the session ends.
pub struct SessionEnd(watch::Receiver<Option<Ended>>);

impl SessionEnd {
    /// Waits until the session ends; never, if the watch goes away first.
    pub async fn ended(&mut self) -> Ended {
        loop {
            if let Some(ended) = *self.0.borrow_and_update() {
                return ended;
            }
            if self.0.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

impl SessionWatch {
    /// Watches the session with this key (`CurrentUser::session_key`).
    pub fn watch(&self, session_key: &[u8]) -> SessionEnd {
        let mut watched = self.watched.lock().expect("session watch poisoned");
        let sender = watched
            .entry(session_key.to_vec())
            .or_insert_with(|| watch::channel(None).0);
        SessionEnd(sender.subscribe())
    }

    /// Ends every stream and poll watching `session_key`.
    pub fn end(&self, session_key: &[u8], why: Ended) {
        let mut watched = self.watched.lock().expect("session watch poisoned");
        if let Some(sender) = watched.remove(session_key) {
            let _ = sender.send(Some(why));
        }
    }

    /// The keys still watched by someone (forgetting those nobody watches).
    fn keys(&self) -> Vec<Vec<u8>> {
        let mut watched = self.watched.lock().expect("session watch poisoned");
        watched.retain(|_, sender| sender.receiver_count() > 0);
        watched.keys().cloned().collect()
    }

    /// Ends the watched sessions the database no longer holds open.
    async fn sweep(&self, db: &PgPool) -> sqlx::Result<()> {
        let keys = self.keys();
        if keys.is_empty() {
            return Ok(());
        }
        let open = session::open_among(db, &keys).await?;
        for key in keys {
            match open.get(&key) {
                Some(true) => {}
                // Past its end, or deleted by a sign-out whose NOTIFY this
                // instance missed (or by retention, after its end).
                Some(false) => self.end(&key, Ended::Expired),
                None => self.end(&key, Ended::SignedOut),
            }
        }
        Ok(())
    }
}

/// Listens for sign-outs and sweeps for ends until shutdown.
pub async fn run(watch: Arc<SessionWatch>, db: PgPool, mut shutdown: Shutdown) {
    let mut listener: Option<PgListener> = None;
    let mut sweep = true;
    loop {
        if listener.is_none() {
            listener = connect(&db).await;
            // Sign-outs sent while nobody listened were heard by no one.
            sweep = true;
        }
        if sweep {
            match watch.sweep(&db).await {
                Ok(()) => sweep = false,
                Err(e) => {
                    tracing::warn!(error = %e, "session watch cannot read the sessions; retrying")
                }
            }
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            received = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(Some),
                    None => std::future::pending().await,
                }
            } => match received {
                Ok(Some(notification)) => {
                    for key in notification.payload().split(',') {
                        match decode_hex(key) {
                            Some(key) => watch.end(&key, Ended::SignedOut),
                            None => sweep = true,
                        }
                    }
                }
                _ => listener = None,
            },
            _ = tokio::time::sleep(SWEEP_EVERY) => sweep = true,
        }
    }
}

async fn connect(db: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(db).await.ok()?;
    listener.listen(session::ENDED_CHANNEL).await.ok()?;
    Some(listener)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.is_empty() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ending_a_session_ends_every_watcher_of_it_and_only_it() {
        let watch = SessionWatch::default();
        let mut a1 = watch.watch(b"a");
        let mut a2 = watch.watch(b"a");
        let mut b = watch.watch(b"b");
        watch.end(b"a", Ended::SignedOut);
        assert_eq!(a1.ended().await, Ended::SignedOut);
        assert_eq!(a2.ended().await, Ended::SignedOut);
        let still = tokio::time::timeout(Duration::from_millis(50), b.ended()).await;
        assert!(still.is_err(), "another session's stream ended too");
        assert_eq!(watch.keys(), vec![b"b".to_vec()]);
    }

    #[test]
    fn keys_travel_as_hex() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
