//! Login throttling: after too many failed logins for one username within a
//! window, further attempts are refused with 429 until the window passes.
//! Counted per instance, in memory (a restart forgives).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked names, stale entries are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// `Err(seconds)` when `username` must wait before trying again.
    pub fn check(&self, username: &str) -> Result<(), u64> {
        self.check_at(username, Instant::now())
    }

    pub fn record_failure(&self, username: &str) {
        self.record_failure_at(username, Instant::now());
    }

    pub fn record_success(&self, username: &str) {
        self.lock().remove(&username.to_lowercase());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().expect("throttle lock poisoned")
    }

    fn check_at(&self, username: &str, now: Instant) -> Result<(), u64> {
        let mut failures = self.lock();
        let Some(times) = failures.get_mut(&username.to_lowercase()) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = *times.front().expect("at least MAX_FAILURES entries");
        let wait = WINDOW.saturating_sub(now.duration_since(oldest));
        Err(wait.as_secs().max(1))
    }

    fn record_failure_at(&self, username: &str, now: Instant) {
        let mut failures = self.lock();
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        let times = failures.entry(username.to_lowercase()).or_default();
        times.push_back(now);
        if times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_too_many_failures_until_the_window_passes() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(throttle.check_at("Alice", start).is_ok());
            throttle.record_failure_at("alice", start);
        }
        let wait = throttle.check_at("ALICE", start).unwrap_err();
        assert_eq!(wait, WINDOW.as_secs());
        assert!(throttle.check_at("bob", start).is_ok());
        assert!(throttle.check_at("alice", start + WINDOW).is_ok());
    }

    #[test]
    fn success_forgives() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            throttle.record_failure_at("alice", now);
        }
        throttle.record_success("alice");
        assert!(throttle.check_at("alice", now).is_ok());
    }
}
