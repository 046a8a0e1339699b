//! Every PostgreSQL advisory-lock key Sightline takes, in one place, so no
//! two uses can collide and a reader sees at once who excludes whom.
//!
//! The keys are arbitrary but fixed (`0x5167_6874_…`, "Qght…"): other
//! processes — a second instance, a rebuild, `outbox prune`, a test holding
//! one on purpose — must agree on them.

/// Every relay batch (and every batch of a NATS projector) holds this lock
/// shared, from its first statement until it commits; a rebuild takes it
/// exclusively for its final catch-up and the alias swap. So no batch is in flight across the swap: a batch either
/// finished before the final catch-up (which then replays its events into the
/// new index) or starts after the swap (and writes through the alias into the
/// new index).
pub const REBUILD: i64 = 0x5167_6874_7262;

/// Held (session-level) by a running rebuild for its whole run, and by
/// `outbox prune`: the two exclude each other, so pruning never removes
/// events a rebuild has yet to replay.
pub const MAINTENANCE: i64 = 0x5167_6874_6d74;

/// The class of the per-user notice-stream locks (`pg_advisory_xact_lock(
/// NOTICE_STREAM, hashtext(user_id))`: the two-key form, a key space apart
/// from the keys above). A recording holds its users' locks from before it
/// reads their stream heads until it commits, so each user's notices are
/// numbered in commit order; users that share a hash merely wait for each
/// other.
pub const NOTICE_STREAM: i32 = 0x5167_6873;

/// Every notice recording holds this lock *shared* until it commits, so
/// recordings never wait for each other on it; whoever holds it exclusively
/// pauses every recording (and, with `READ_STORE=postgres`, every write)
/// until it lets go. Nothing in Sightline takes it exclusively: it is the
/// seam through which a test (or an operator, by hand) holds notices back.
pub const NOTICE_RECORD: i64 = 0x5167_6874_6c6e;
