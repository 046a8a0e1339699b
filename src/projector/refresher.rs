//! One refresh of the orders index at a time, shared by every batch in flight.
//!
//! A refresh makes everything written before it started searchable, and
//! Elasticsearch runs refreshes of a shard one after another anyway. So a
//! batch whose write has returned waits for the first refresh that *starts*
//! after that moment; batches finishing while a refresh runs share the next
//! one (group commit) instead of queueing a refresh each.

use std::sync::Mutex;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::read_side::index::{IndexError, ReadStore};

type RefreshFn = Box<dyn Fn() -> BoxFuture<'static, Result<(), IndexError>> + Send + Sync>;

pub struct Refresher {
    refresh: RefreshFn,
    rounds: Mutex<Rounds>,
    /// The last round to finish, and whether it succeeded.
    finished: watch::Sender<Finished>,
}

#[derive(Default)]
struct Rounds {
    /// Rounds started so far (the running one included).
    started: u64,
    running: bool,
}

#[derive(Clone, Copy, Default)]
struct Finished {
    round: u64,
    ok: bool,
}

impl Refresher {
    /// Refreshes the orders index of `store`.
    pub fn new(store: ReadStore) -> Self {
        Self::with(Box::new(move || {
            let store = store.clone();
            Box::pin(async move { store.refresh_orders().await })
        }))
    }

    fn with(refresh: RefreshFn) -> Self {
        Self {
            refresh,
            rounds: Mutex::default(),
            finished: watch::Sender::new(Finished::default()),
        }
    }

    /// Returns once every order written before the call is searchable.
    pub async fn make_searchable(&self) -> Result<(), IndexError> {
        // Only a round started after this point surely sees our writes.
        let needed = self.lock().started + 1;
        loop {
            let mut finished = self.finished.subscribe();
            let lead = {
                let mut rounds = self.lock();
                if !rounds.running && rounds.started < needed {
                    rounds.running = true;
                    rounds.started += 1;
                    Some(rounds.started)
                } else {
                    None
                }
            };
            if let Some(round) = lead {
                let guard = RoundGuard {
                    refresher: self,
                    round,
                    ok: false,
                };
                return guard.run().await;
            }
            let last = *finished.borrow_and_update();
            if last.round >= needed {
                return if last.ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("the refresh this batch waited for failed").into())
                };
            }
            // The sender lives as long as `self`.
            let _ = finished.changed().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().expect("refresher lock poisoned")
    }
}

/// A running round. Ends it however the refresh ends — also when the future
/// is dropped halfway — so the next batch can lead a round.
struct RoundGuard<'a> {
    refresher: &'a Refresher,
    round: u64,
    ok: bool,
}

impl RoundGuard<'_> {
    async fn run(mut self) -> Result<(), IndexError> {
        let result = (self.refresher.refresh)().await;
        self.ok = result.is_ok();
        result
    }
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.refresher.lock().running = false;
        self.refresher.finished.send_replace(Finished {
            round: self.round,
            ok: self.ok,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// A fake refresh that counts its rounds and runs each until the test
    /// hands it a permit.
    struct Fake {
        started: AtomicUsize,
        release: Semaphore,
        fail: AtomicBool,
    }

    fn refresher() -> (Arc<Refresher>, Arc<Fake>) {
        let fake = Arc::new(Fake {
            started: AtomicUsize::new(0),
            release: Semaphore::new(0),
            fail: AtomicBool::new(false),
        });
        let f = fake.clone();
        let refresher = Refresher::with(Box::new(move || {
            let f = f.clone();
            Box::pin(async move {
                f.started.fetch_add(1, Ordering::SeqCst);
                f.release.acquire().await.unwrap().forget();
                if f.fail.load(Ordering::SeqCst) {
                    Err(anyhow::anyhow!("refresh refused").into())
                } else {
                    Ok(())
                }
            })
        }));
        (Arc::new(refresher), fake)
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..1000 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn callers_during_a_round_wait_for_one_shared_next_round() {
        let (refresher, fake) = refresher();
        let first = tokio::spawn({
            let r = refresher.clone();
            async move { r.make_searchable().await }
        });
        until("the first round", || {
            fake.started.load(Ordering::SeqCst) == 1
        })
        .await;

        // Written while round 1 runs: round 1 may not see these writes.
        let later: Vec<_> = (0..5)
            .map(|_| {
                let r = refresher.clone();
                tokio::spawn(async move { r.make_searchable().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            fake.started.load(Ordering::SeqCst),
            1,
            "one round at a time"
        );

        fake.release.add_permits(1);
        first.await.unwrap().unwrap();
        until("the second round", || {
            fake.started.load(Ordering::SeqCst) == 2
        })
        .await;
        for handle in &later {
            assert!(
                !handle.is_finished(),
                "returned before a round that saw its write"
            );
        }
        fake.release.add_permits(1);
        for handle in later {
            handle.await.unwrap().unwrap();
        }
        assert_eq!(
            fake.started.load(Ordering::SeqCst),
            2,
            "five callers, one round"
        );
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_waiters_and_the_next_call_starts_afresh() {
        let (refresher, fake) = refresher();
        fake.fail.store(true, Ordering::SeqCst);
        let failing = tokio::spawn({
            let r = refresher.clone();
            async move { r.make_searchable().await }
        });
        until("the round", || fake.started.load(Ordering::SeqCst) == 1).await;
        fake.release.add_permits(1);
        assert!(failing.await.unwrap().is_err());

        fake.fail.store(false, Ordering::SeqCst);
        fake.release.add_permits(1);
        refresher.make_searchable().await.unwrap();
        assert_eq!(fake.started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_abandoned_round_does_not_block_the_next_caller() {
        let (refresher, fake) = refresher();
        let abandoned = tokio::spawn({
            let r = refresher.clone();
            async move { r.make_searchable().await }
        });
        until("the round", || fake.started.load(Ordering::SeqCst) == 1).await;
        abandoned.abort();
        let _ = abandoned.await;

        fake.release.add_permits(1);
        tokio::time::timeout(Duration::from_secs(10), refresher.make_searchable())
            .await
            .expect("the next caller leads a round of its own")
            .unwrap();
        assert_eq!(fake.started.load(Ordering::SeqCst), 2);
    }
}
