//! One refresh of the orders index at a time, shared by every batch in flight.
//!
//! A refresh makes everything written before it started searchable, and
//! Elasticsearch runs refreshes of a shard one after another anyway. So a
//! batch whose write has returned waits for the first refresh that *starts*
//! after that moment; batches finishing while a refresh runs share the next
//! one (group commit) instead of queueing a refresh each.
//!
//! Rounds are numbered, and a caller that waits names the round it waits for
//! (the one it saw running) and checks the finished round against it, so a
//! round that ends between its look and its wait is not missed: it goes back
//! and starts the round it needs itself. (Relying on the watch channel's
//! "seen" flag instead stranded such a caller, waiting for a round nobody
//! started, with its batch's claim transaction open.)

use std::sync::Mutex;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::read_side::index::{IndexError, SearchIndex};

type RefreshFn = Box<dyn Fn() -> BoxFuture<'static, Result<(), IndexError>> + Send + Sync>;
#[cfg(test)]
type Hook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Refresher {
    refresh: RefreshFn,
    rounds: Mutex<Rounds>,
    /// What has finished; only ever moves forward, and is updated under the
    /// `rounds` lock, before the round stops counting as running.
    finished: watch::Sender<Finished>,
    /// Test-only pause point: where a caller has decided to wait for a
    /// round, before it waits.
    #[cfg(test)]
    before_wait: Option<Hook>,
}

#[derive(Default)]
struct Rounds {
    /// Rounds started so far (the running one included).
    started: u64,
    running: bool,
}

#[derive(Clone, Copy, Default)]
struct Finished {
    /// The last round to finish, however it ended.
    round: u64,
    /// The last round that succeeded.
    ok: u64,
}

/// What a caller does next, decided under the lock.
enum Step {
    /// Run this round.
    Lead(u64),
    /// Wait until this round has finished, then look again.
    Await(u64),
}

impl Refresher {
    /// Refreshes the orders index of `store`.
    pub fn new(store: SearchIndex) -> Self {
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
            #[cfg(test)]
            before_wait: None,
        }
    }

    /// Returns once every order written before the call is searchable.
    pub async fn make_searchable(&self) -> Result<(), IndexError> {
        let mut finished = self.finished.subscribe();
        // Only a round started after this point surely sees our writes.
        let needed = self.lock().started + 1;
        loop {
            let step = {
                let mut rounds = self.lock();
                if rounds.running {
                    Step::Await(rounds.started)
                } else if rounds.started < needed {
                    rounds.running = true;
                    rounds.started += 1;
                    Step::Lead(rounds.started)
                } else {
                    // Round `needed` started and, as none runs, has finished.
                    Step::Await(needed)
                }
            };
            let awaited = match step {
                Step::Lead(round) => {
                    let guard = RoundGuard {
                        refresher: self,
                        round,
                        ok: false,
                    };
                    return guard.run().await;
                }
                Step::Await(round) => round,
            };
            #[cfg(test)]
            if let Some(hook) = &self.before_wait {
                hook().await;
            }
            // `wait_for` looks at the current value before it waits, so a
            // round that finished since the decision above counts.
            let last = *finished
                .wait_for(|f| f.round >= awaited)
                .await
                .expect("the sender lives as long as the refresher");
            if last.ok >= needed {
                return Ok(());
            }
            if last.round >= needed {
                return Err(anyhow::anyhow!("the refresh this batch waited for failed").into());
            }
            // The round we saw running started too early for our writes:
            // look again, and lead the next one if nobody has.
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
        // Published under the lock: whoever sees no round running finds
        // this one among the finished.
        let mut rounds = self.refresher.lock();
        let (round, ok) = (self.round, self.ok);
        self.refresher.finished.send_modify(|f| {
            f.round = f.round.max(round);
            if ok {
                f.ok = f.ok.max(round);
            }
        });
        rounds.running = false;
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

    /// A refresher whose callers stop where they decided to wait, until the
    /// test lets them go: each pause reports itself on `reached` and takes
    /// a permit of `go`.
    fn pausing_refresher() -> (Arc<Refresher>, Arc<Fake>, Arc<Pause>) {
        let (refresher, fake) = refresher();
        let mut refresher = Arc::into_inner(refresher).unwrap();
        let pause = Arc::new(Pause {
            reached: AtomicUsize::new(0),
            go: Semaphore::new(0),
        });
        let p = pause.clone();
        refresher.before_wait = Some(Box::new(move || {
            let p = p.clone();
            Box::pin(async move {
                p.reached.fetch_add(1, Ordering::SeqCst);
                p.go.acquire().await.unwrap().forget();
            })
        }));
        (Arc::new(refresher), fake, pause)
    }

    struct Pause {
        reached: AtomicUsize,
        go: Semaphore,
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

    /// The interleaving of issue 9: a caller finds a round running and
    /// decides to wait; that round finishes before the caller looks at what
    /// has finished. No other caller is around to start the round it needs,
    /// so it must start that round itself rather than wait for one nobody
    /// starts (which held its batch, its claim transaction and the rebuild
    /// lock until unrelated traffic came by).
    #[tokio::test]
    async fn a_round_finishing_while_a_caller_decides_to_wait_does_not_strand_it() {
        let (refresher, fake, pause) = pausing_refresher();
        let first = tokio::spawn({
            let r = refresher.clone();
            async move { r.make_searchable().await }
        });
        until("the first round", || {
            fake.started.load(Ordering::SeqCst) == 1
        })
        .await;

        // Written while round 1 runs: it needs round 2.
        let stranded = tokio::spawn({
            let r = refresher.clone();
            async move { r.make_searchable().await }
        });
        until("the second caller to decide to wait", || {
            pause.reached.load(Ordering::SeqCst) == 1
        })
        .await;

        // Round 1 ends between that decision and the wait.
        fake.release.add_permits(1);
        first.await.unwrap().unwrap();
        // Round 2 may run to its end whenever somebody starts it.
        fake.release.add_permits(1);
        pause.go.add_permits(1);

        tokio::time::timeout(Duration::from_secs(10), stranded)
            .await
            .expect("the caller waits for a round nobody starts")
            .unwrap()
            .unwrap();
        assert_eq!(fake.started.load(Ordering::SeqCst), 2);
    }

    /// Many callers on several threads, each pausing a random while where it
    /// decided to wait, against a refresh that takes a random while: every
    /// call returns (no caller is stranded, whatever the interleaving), and
    /// only after a round that saw its write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_caller_is_stranded_and_each_sees_its_write() {
        use rand::Rng;
        use std::sync::atomic::AtomicU64;

        fn jitter() -> BoxFuture<'static, ()> {
            let yields = rand::rng().random_range(0..4);
            Box::pin(async move {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            })
        }
        // Writes so far, and the most of them a finished round has seen.
        let written = Arc::new(AtomicU64::new(0));
        let searchable = Arc::new(AtomicU64::new(0));
        let (w, s) = (written.clone(), searchable.clone());
        let mut refresher = Refresher::with(Box::new(move || {
            let (w, s) = (w.clone(), s.clone());
            Box::pin(async move {
                let seen = w.load(Ordering::SeqCst);
                jitter().await;
                s.fetch_max(seen, Ordering::SeqCst);
                Ok(())
            })
        }));
        refresher.before_wait = Some(Box::new(jitter));
        let refresher = Arc::new(refresher);

        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (r, w, s) = (refresher.clone(), written.clone(), searchable.clone());
                tokio::spawn(async move {
                    for _ in 0..500 {
                        let mine = w.fetch_add(1, Ordering::SeqCst) + 1;
                        r.make_searchable().await.unwrap();
                        assert!(
                            s.load(Ordering::SeqCst) >= mine,
                            "returned before a round that saw write {mine}"
                        );
                    }
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(callers))
            .await
            .expect("a caller was stranded")
            .into_iter()
            .for_each(|r| r.unwrap());
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
