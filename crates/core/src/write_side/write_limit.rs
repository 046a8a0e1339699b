//! The per-user write limit: how many orders and cancellations one account
//! may place in a short time, so one account cannot crowd out everyone
//! else's writes (`WRITE_BURST`, `WRITE_RATE_PER_MIN`). Refusals are counted
//! in `/metrics` with the other limits.

use uuid::Uuid;

use super::WriteError;
use crate::rate::UserBuckets;

/// A token bucket per user for writes: `burst` at once, refilled at
/// `per_min` a minute (see [`UserBuckets`]).
pub struct WriteLimiter(UserBuckets);

impl WriteLimiter {
    pub fn new(burst: u32, per_min: u32) -> Self {
        Self(UserBuckets::new(burst, per_min))
    }

    /// Takes one write from `user`'s bucket, or [`WriteError::RateLimited`] with the
    /// seconds until the next one is allowed.
    pub fn check(&self, user: Uuid) -> Result<(), WriteError> {
        self.0.take(user).map_err(|retry_after| {
            metrics::counter!("sightline_limit_rejections_total", "kind" => "write", "scope" => "user")
                .increment(1);
            WriteError::RateLimited { retry_after }
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
