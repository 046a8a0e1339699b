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

/// Serialises notice recording across processes: held from before the insert
/// until commit, so the notice log's sequence order is commit order.
pub const NOTICE_RECORD: i64 = 0x5167_6874_6c6e;
