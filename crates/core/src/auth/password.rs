//! Password hashing. Argon2 is deliberately slow and big (~19 MiB and a
//! blocking thread per hash, default parameters), so it runs on the blocking
//! pool — never stalling the async workers — and under a small concurrency
//! limit (`HASH_CONCURRENCY`): a request that finds every permit taken is
//! refused at once (503 with `Retry-After`) instead of queueing, so a flood
//! of logins can neither exhaust memory nor take every core.

use std::sync::Arc;

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::throttle::Limit;

/// The permits for hashing work.
#[derive(Clone)]
pub struct Hashing {
    permits: Arc<Semaphore>,
}

/// A right to run one hash; held by the blocking task until it ends, so a
/// client that hangs up does not free a permit its hash still uses.
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

impl Hashing {
    pub fn new(concurrency: usize) -> Self {
        Hashing {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// A permit, or `None` (counted as `hashing_busy`) when all are taken.
    pub fn try_permit(&self) -> Option<Permit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Permit { _held: permit }),
            Err(_) => {
                Limit::HashingBusy.count();
                None
            }
        }
    }
}

pub async fn hash(permit: Permit, password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("Failed to hash password: {e}"))
    })
    .await
    .context("Failed to join the hashing task")?
}

/// Checks `password` against a stored hash. When the user does not exist we
/// still verify against a dummy hash so both paths take the same time.
pub async fn verify(
    permit: Permit,
    password: String,
    stored: Option<String>,
) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| anyhow::anyhow!("Failed to parse stored hash: {e}"))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .context("Failed to join the verification task")?
}

/// Checks `current` against a stored hash as [`verify`] does and, if it is
/// right, hashes `new`: the answer is the new hash, or `None` for a wrong
/// password. Both hashes run in one blocking task under the one permit, so
/// a change never waits for a second permit half-way through.
pub async fn verify_then_hash(
    permit: Permit,
    current: String,
    stored: Option<String>,
    new: String,
) -> anyhow::Result<Option<String>> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| anyhow::anyhow!("Failed to parse stored hash: {e}"))?;
        if Argon2::default()
            .verify_password(current.as_bytes(), &parsed)
            .is_err()
        {
            return Ok(None);
        }
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(new.as_bytes(), &salt)
            .map(|h| Some(h.to_string()))
            .map_err(|e| anyhow::anyhow!("Failed to hash password: {e}"))
    })
    .await
    .context("Failed to join the hashing task")?
}

/// Argon2id hash of a random password nobody knows (default parameters).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8kBxUuo0BvplN3tyn8i8xZ0A0Fj6Qx9cD1DnY3eF1Lk";
