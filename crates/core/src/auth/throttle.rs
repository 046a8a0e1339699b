//! Login and sign-up throttling, in memory, per instance.
//!
//! An attempt is *counted before* the password is checked and given back on
//! success, so parallel guesses cannot slip past the count: the check and the
//! count are one step under one lock. Three counts stand in front of a login:
//!
//! - per (username, client address): the first `LOGIN_FREE_FAILURES` failed
//!   attempts are free, then each attempt waits a delay that doubles from 1 s
//!   up to `LOGIN_MAX_DELAY_SECS`. A success forgets them.
//! - per client address, over all usernames (password spraying): a token
//!   bucket (`LOGIN_ADDRESS_BURST`, refilled at `LOGIN_ADDRESS_PER_HOUR`).
//! - per username, over all addresses (guessing from many addresses): a
//!   softer token bucket (`LOGIN_USER_BURST`, `LOGIN_USER_PER_HOUR`) that an
//!   address the user has logged in from before does not have to pass, so a
//!   stranger's failures cannot keep the user out: there is no hard lockout.
//!
//! Sign-ups are counted per address (`SIGNUP_ADDRESS_BURST`,
//! `SIGNUP_ADDRESS_PER_HOUR`). Usernames are validated before they become
//! keys, and each table holds at most `THROTTLE_MAX_KEYS` keys: past that the
//! entries that have nothing left to count go, then the least recently used.
//! The counts are per instance: with N instances behind a balancer the
//! limits are up to N times as generous (see docs/SECURITY.md).
//!
//! One cohesive thing, kept in one file: the three login counts and the
//! sign-up count share one table type, one lock and one eviction rule; the
//! last fifth of the file is their tests.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Settings;

/// Failures of one (username, address) that no attempt touched for this long
/// are forgotten.
const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(24 * 3600);
/// An address the user logged in from stays known for this long unused.
const REMEMBER_KNOWN_ADDRESS: Duration = Duration::from_secs(30 * 24 * 3600);

/// The rejection counter in `/metrics`, by `limit`.
pub const REJECTIONS: &str = "sightline_auth_rejections_total";
/// Keys evicted from a full throttle table, by `table`.
pub const EVICTIONS: &str = "sightline_auth_throttle_evictions_total";

/// Help text for the throttle's metrics; every label is listed from the start.
pub fn describe_metrics() {
    metrics::describe_counter!(
        REJECTIONS,
        metrics::Unit::Count,
        "Logins and sign-ups refused by a limit: login_user_address (growing delay), login_address, login_user, signup_address (429), hashing_busy (503)."
    );
    for limit in Limit::ALL {
        metrics::counter!(REJECTIONS, "limit" => limit.as_str()).increment(0);
    }
    metrics::describe_counter!(
        EVICTIONS,
        metrics::Unit::Count,
        "Keys dropped from a full throttle table (THROTTLE_MAX_KEYS), least recently used first."
    );
}

/// Which limit refused a request (the `limit` label of [`REJECTIONS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    LoginUserAddress,
    LoginAddress,
    LoginUser,
    SignupAddress,
    HashingBusy,
}

impl Limit {
    pub const ALL: [Limit; 5] = [
        Limit::LoginUserAddress,
        Limit::LoginAddress,
        Limit::LoginUser,
        Limit::SignupAddress,
        Limit::HashingBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::LoginUserAddress => "login_user_address",
            Limit::LoginAddress => "login_address",
            Limit::LoginUser => "login_user",
            Limit::SignupAddress => "signup_address",
            Limit::HashingBusy => "hashing_busy",
        }
    }

    pub fn count(self) {
        metrics::counter!(REJECTIONS, "limit" => self.as_str()).increment(1);
    }
}

/// A refused attempt: which limit, and the whole seconds until it may pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub limit: Limit,
    pub retry_after: u64,
}

/// A token bucket: `burst` at once, refilled at `per_sec`.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub burst: f64,
    pub per_sec: f64,
}

impl Rate {
    pub fn per_hour(burst: u32, per_hour: u32) -> Self {
        Rate {
            burst: f64::from(burst),
            per_sec: f64::from(per_hour) / 3600.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.updated = now;
    }

    /// `Err(seconds)` until a whole token is there.
    fn check(&self, rate: Rate) -> Result<(), u64> {
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate.per_sec).ceil().max(1.0) as u64)
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(rate, now);
        probe.tokens >= rate.burst
    }
}

/// Failures of one username from one address, and whether that address has
/// logged into it.
#[derive(Clone, Copy, Debug)]
struct Pair {
    failures: u32,
    next_allowed: Instant,
    last: Instant,
    known: bool,
}

/// A map whose size is capped: inserting into a full one first drops what
/// `idle` says is worthless, then the least recently used tenth.
struct Table<K, V> {
    name: &'static str,
    map: HashMap<K, (V, Instant)>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    fn new(name: &'static str, cap: usize) -> Self {
        Table {
            name,
            map: HashMap::new(),
            cap,
        }
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    fn get_or_insert(
        &mut self,
        key: K,
        now: Instant,
        make: impl FnOnce() -> V,
        idle: impl Fn(&V) -> bool,
    ) -> &mut V {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.map.retain(|_, (v, _)| !idle(v));
            if self.map.len() >= self.cap {
                let excess = self.map.len() + 1 - self.cap;
                let drop = excess.max(self.cap / 10);
                let mut ages: Vec<(Instant, K)> =
                    self.map.iter().map(|(k, (_, t))| (*t, k.clone())).collect();
                ages.select_nth_unstable_by_key(drop - 1, |(t, _)| *t);
                for (_, k) in ages.into_iter().take(drop) {
                    self.map.remove(&k);
                }
                metrics::counter!(EVICTIONS, "table" => self.name).increment(drop as u64);
            }
        }
        let entry = self.map.entry(key).or_insert_with(|| (make(), now));
        entry.1 = now;
        &mut entry.0
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

struct Tables {
    pairs: Table<(String, IpAddr), Pair>,
    addresses: Table<IpAddr, Bucket>,
    users: Table<String, Bucket>,
    signups: Table<IpAddr, Bucket>,
}

pub struct Policy {
    pub free_failures: u32,
    pub max_delay: Duration,
    pub address: Rate,
    pub user: Rate,
    pub signup: Rate,
    pub max_keys: usize,
}

impl Policy {
    pub fn from_settings(settings: &Settings) -> Self {
        Policy {
            free_failures: settings.login_free_failures,
            max_delay: Duration::from_secs(settings.login_max_delay_secs),
            address: Rate::per_hour(
                settings.login_address_burst,
                settings.login_address_per_hour,
            ),
            user: Rate::per_hour(settings.login_user_burst, settings.login_user_per_hour),
            signup: Rate::per_hour(
                settings.signup_address_burst,
                settings.signup_address_per_hour,
            ),
            max_keys: usize::try_from(settings.throttle_max_keys).unwrap_or(usize::MAX),
        }
    }

    /// The wait after the `failures`-th counted failure: none within the free
    /// ones, then 1 s, 2 s, 4 s … up to the maximum.
    fn delay_after(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(30);
        Duration::from_secs(1u64 << doublings).min(self.max_delay)
    }
}

pub struct Throttle {
    policy: Policy,
    tables: Mutex<Tables>,
}

/// A login attempt that has been counted; tell the throttle how it ended.
#[must_use = "a counted attempt must be settled: succeeded, failed or not_checked"]
pub struct Attempt {
    username: String,
    address: IpAddr,
    /// Whether the per-username bucket was charged (not for known addresses).
    charged_user: bool,
}

impl Throttle {
    pub fn new(policy: Policy) -> Self {
        let cap = policy.max_keys;
        Throttle {
            policy,
            tables: Mutex::new(Tables {
                pairs: Table::new("login_user_address", cap),
                addresses: Table::new("login_address", cap),
                users: Table::new("login_user", cap),
                signups: Table::new("signup_address", cap),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().expect("throttle lock poisoned")
    }

    /// Counts a login attempt for a *validated* username from `address` (the
    /// client's address as the limits key it: an IPv6 client by its /64),
    /// or refuses it.
    pub fn begin_login(&self, username: &str, address: IpAddr) -> Result<Attempt, Refused> {
        self.begin_login_at(username, address, Instant::now())
    }

    fn begin_login_at(
        &self,
        username: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Refused> {
        let username = username.to_lowercase();
        let policy = &self.policy;
        let mut tables = self.lock();
        let tables = &mut *tables;
        let refuse = |limit, retry_after| Refused { limit, retry_after };

        let pair = tables.pairs.get_or_insert(
            (username.clone(), address),
            now,
            || Pair {
                failures: 0,
                next_allowed: now,
                last: now,
                known: false,
            },
            |p| stale_pair(p, now),
        );
        if now.saturating_duration_since(pair.last) >= FORGET_FAILURES_AFTER {
            pair.failures = 0;
        }
        if now < pair.next_allowed {
            let wait = pair.next_allowed - now;
            return Err(refuse(Limit::LoginUserAddress, ceil_secs(wait)));
        }
        let known = pair.known;

        tables
            .addresses
            .bucket(address, policy.address, now)
            .check(policy.address)
            .map_err(|wait| refuse(Limit::LoginAddress, wait))?;

        if !known {
            let user_bucket = tables.users.bucket(username.clone(), policy.user, now);
            user_bucket
                .check(policy.user)
                .map_err(|wait| refuse(Limit::LoginUser, wait))?;
            user_bucket.tokens -= 1.0;
        }
        // Every check passed: charge them all, in one step under the lock.
        if let Some(bucket) = tables.addresses.get_mut(&address) {
            bucket.tokens -= 1.0;
        }
        let pair = tables
            .pairs
            .get_mut(&(username.clone(), address))
            .expect("inserted above, under the same lock");
        pair.failures += 1;
        pair.last = now;
        pair.next_allowed = now + policy.delay_after(pair.failures);
        Ok(Attempt {
            username,
            address,
            charged_user: !known,
        })
    }

    /// The password was right: the attempt is given back everywhere and the
    /// address becomes known to this username.
    pub fn succeeded(&self, attempt: Attempt) {
        let now = Instant::now();
        self.refund(&attempt, now);
        let mut tables = self.lock();
        if let Some(pair) = tables
            .pairs
            .get_mut(&(attempt.username.clone(), attempt.address))
        {
            pair.failures = 0;
            pair.next_allowed = pair.last;
            pair.known = true;
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(&self, attempt: Attempt) {
        let _ = attempt;
    }

    /// The password was never checked (hashing busy, database down): the
    /// attempt is given back, as if it had not been made.
    pub fn not_checked(&self, attempt: Attempt) {
        let now = Instant::now();
        self.refund(&attempt, now);
        let mut tables = self.lock();
        if let Some(pair) = tables
            .pairs
            .get_mut(&(attempt.username.clone(), attempt.address))
        {
            pair.failures = pair.failures.saturating_sub(1);
            let delay = if pair.failures == 0 {
                Duration::ZERO
            } else {
                self.policy.delay_after(pair.failures)
            };
            pair.next_allowed = pair.next_allowed.min(pair.last + delay);
        }
    }

    fn refund(&self, attempt: &Attempt, now: Instant) {
        let mut tables = self.lock();
        let policy = &self.policy;
        if let Some(bucket) = tables.addresses.get_mut(&attempt.address) {
            bucket.refill(policy.address, now);
            bucket.tokens = (bucket.tokens + 1.0).min(policy.address.burst);
        }
        if attempt.charged_user
            && let Some(bucket) = tables.users.get_mut(&attempt.username)
        {
            bucket.refill(policy.user, now);
            bucket.tokens = (bucket.tokens + 1.0).min(policy.user.burst);
        }
    }

    /// Counts a sign-up from `address`, or refuses it.
    pub fn begin_signup(&self, address: IpAddr) -> Result<(), Refused> {
        self.begin_signup_at(address, Instant::now())
    }

    fn begin_signup_at(&self, address: IpAddr, now: Instant) -> Result<(), Refused> {
        let rate = self.policy.signup;
        let mut tables = self.lock();
        let bucket = tables.signups.bucket(address, rate, now);
        bucket.check(rate).map_err(|retry_after| Refused {
            limit: Limit::SignupAddress,
            retry_after,
        })?;
        bucket.tokens -= 1.0;
        Ok(())
    }
}

impl<K: Hash + Eq + Clone> Table<K, Bucket> {
    /// `key`'s bucket, refilled to `now` (a new one starts full; full ones
    /// are the first to go when the table is at its cap).
    fn bucket(&mut self, key: K, rate: Rate, now: Instant) -> &mut Bucket {
        let bucket = self.get_or_insert(
            key,
            now,
            || Bucket::full(rate, now),
            |b| b.is_full(rate, now),
        );
        bucket.refill(rate, now);
        bucket
    }
}

/// Whether a pair holds nothing worth keeping.
fn stale_pair(pair: &Pair, now: Instant) -> bool {
    let idle = now.saturating_duration_since(pair.last);
    if pair.known {
        idle >= REMEMBER_KNOWN_ADDRESS
    } else {
        pair.failures == 0 || idle >= FORGET_FAILURES_AFTER
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            free_failures: 3,
            max_delay: Duration::from_secs(60),
            address: Rate::per_hour(10, 3600),
            user: Rate::per_hour(6, 3600),
            signup: Rate::per_hour(2, 3600),
            max_keys: 100,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn delays_grow_after_the_free_failures_and_a_success_forgets() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..3 {
            let attempt = t.begin_login_at("Alice", ip(1), now).unwrap();
            t.failed(attempt);
        }
        let refused = t.begin_login_at("alice", ip(1), now).err().unwrap();
        assert_eq!(refused.limit, Limit::LoginUserAddress);
        assert_eq!(refused.retry_after, 1);
        // After the wait: one more, then 2 s.
        let later = now + Duration::from_secs(1);
        t.failed(t.begin_login_at("alice", ip(1), later).unwrap());
        let refused = t.begin_login_at("alice", ip(1), later).err().unwrap();
        assert_eq!(refused.retry_after, 2);
        // Another address is not held by this pair's delay.
        let other = t.begin_login_at("alice", ip(2), later).unwrap();
        t.succeeded(other);
        // Success on the first address forgets its failures.
        let after = later + Duration::from_secs(2);
        t.succeeded(t.begin_login_at("alice", ip(1), after).unwrap());
        for _ in 0..3 {
            t.failed(t.begin_login_at("alice", ip(1), after).unwrap());
        }
        assert!(t.begin_login_at("alice", ip(1), after).is_err());
    }

    #[test]
    fn the_delay_is_capped() {
        let p = policy();
        assert_eq!(p.delay_after(2), Duration::ZERO);
        assert_eq!(p.delay_after(3), Duration::from_secs(1));
        assert_eq!(p.delay_after(5), Duration::from_secs(4));
        assert_eq!(p.delay_after(40), Duration::from_secs(60));
    }

    #[test]
    fn spraying_one_address_over_many_names_is_limited() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for n in 0..10 {
            t.failed(t.begin_login_at(&format!("user{n}"), ip(1), now).unwrap());
        }
        let refused = t.begin_login_at("user99", ip(1), now).err().unwrap();
        assert_eq!(refused.limit, Limit::LoginAddress);
        assert!(t.begin_login_at("user99", ip(2), now).is_ok());
    }

    #[test]
    fn a_username_guessed_from_many_addresses_still_admits_its_known_address() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        t.succeeded(t.begin_login_at("alice", ip(200), now).unwrap());
        for n in 0..6 {
            t.failed(t.begin_login_at("alice", ip(n), now).unwrap());
        }
        let refused = t.begin_login_at("alice", ip(100), now).err().unwrap();
        assert_eq!(refused.limit, Limit::LoginUser);
        // The address alice logged in from is not held by the username's limit.
        t.succeeded(t.begin_login_at("alice", ip(200), now).unwrap());
        // And a bucket refills: one token a second here.
        assert!(
            t.begin_login_at("alice", ip(100), now + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn an_attempt_never_checked_is_given_back() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..20 {
            t.not_checked(t.begin_login_at("alice", ip(1), now).unwrap());
        }
        assert!(t.begin_login_at("alice", ip(1), now).is_ok());
    }

    #[test]
    fn sign_ups_are_limited_per_address() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        assert!(t.begin_signup_at(ip(1), now).is_ok());
        assert!(t.begin_signup_at(ip(1), now).is_ok());
        assert_eq!(
            t.begin_signup_at(ip(1), now).unwrap_err().limit,
            Limit::SignupAddress
        );
        assert!(t.begin_signup_at(ip(2), now).is_ok());
    }

    #[test]
    fn tables_stay_within_their_cap() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for n in 0..1000u32 {
            let name = format!("user{n}");
            let address = IpAddr::from(n.to_be_bytes());
            t.failed(t.begin_login_at(&name, address, now).unwrap());
        }
        let tables = t.lock();
        assert!(tables.pairs.len() <= 100, "{}", tables.pairs.len());
        assert!(tables.users.len() <= 100);
        assert!(tables.addresses.len() <= 100);
    }
}
