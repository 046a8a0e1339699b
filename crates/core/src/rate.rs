//! Token buckets per user: the write limit's (`write_side::write_limit`)
//! and the read limit's (`web::limits`). `burst` at once, refilled at
//! `per_min` a minute; only users who used theirs recently have a bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use uuid::Uuid;

pub struct UserBuckets {
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

impl UserBuckets {
    /// A `burst` of 0 takes nothing: the limit is off.
    pub fn new(burst: u32, per_min: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_sec: f64::from(per_min.max(1)) / 60.0,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token from `user`'s bucket, or `Err` with the whole seconds
    /// (at least 1) until the next one is there.
    pub fn take(&self, user: Uuid) -> Result<(), u64> {
        if self.burst < 1.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_ABOVE && !buckets.contains_key(&user) {
            // A bucket that has refilled is the same as no bucket.
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
        Err(wait.ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_refuses_with_a_wait() {
        let buckets = UserBuckets::new(3, 60);
        let user = Uuid::from_u128(1);
        for _ in 0..3 {
            assert!(buckets.take(user).is_ok());
        }
        assert_eq!(buckets.take(user), Err(1));
        // Someone else is not affected.
        assert!(buckets.take(Uuid::from_u128(2)).is_ok());
        // Off when the burst is 0.
        let off = UserBuckets::new(0, 60);
        for _ in 0..100 {
            assert!(off.take(user).is_ok());
        }
    }
}
