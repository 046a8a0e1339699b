//! The per-user write limit: how many orders and cancellations one account
//! may place in a short time, so one account cannot crowd out everyone
//! else's writes (`WRITE_BURST`, `WRITE_RATE_PER_MIN`). Refusals are counted
//! in `/metrics` with the other limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use uuid::Uuid;

use super::WriteError;

/// A token bucket per user for writes: `burst` at once, refilled at
/// `per_min` a minute. Only users who wrote recently have a bucket: full
/// ones are forgotten when the map grows.
pub struct WriteLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before the full ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

impl WriteLimiter {
    pub fn new(burst: u32, per_min: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_sec: f64::from(per_min.max(1)) / 60.0,
            buckets: Mutex::default(),
        }
    }

    /// Takes one write from `user`'s bucket, or [`WriteError::RateLimited`] with the
    /// seconds until the next one is allowed.
    pub fn check(&self, user: Uuid) -> Result<(), WriteError> {
        if self.burst < 1.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("write limiter lock poisoned");
        if buckets.len() >= SWEEP_ABOVE && !buckets.contains_key(&user) {
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_sec;
        drop(buckets);
        metrics::counter!("sightline_limit_rejections_total", "kind" => "write", "scope" => "user")
            .increment(1);
        Err(WriteError::RateLimited {
            retry_after: wait.ceil().max(1.0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_bucket_allows_a_burst_then_refuses_with_a_wait() {
        let limiter = WriteLimiter::new(3, 60);
        let user = Uuid::from_u128(1);
        for _ in 0..3 {
            assert!(limiter.check(user).is_ok());
        }
        match limiter.check(user) {
            Err(WriteError::RateLimited { retry_after }) => assert_eq!(retry_after, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Someone else is not affected.
        assert!(limiter.check(Uuid::from_u128(2)).is_ok());
        // Off when the burst is 0.
        let off = WriteLimiter::new(0, 60);
        for _ in 0..100 {
            assert!(off.check(user).is_ok());
        }
    }
}
