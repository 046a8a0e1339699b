//! Operations code, beside the pipeline rather than inside it: what an
//! operator runs from the command line against a live system. Each
//! subcommand's arguments and its printing live with it; `main.rs` only
//! parses the command line and calls in here.
//!
//! - [`rebuild`]: a fresh read model from the event log, swapped in while the
//!   live one keeps serving.
//! - [`outbox`]: backlog, dead letters, retries and retention of the outbox.
//! - [`journey`]: one order's journey through the pipeline.
//! - [`prune`]: the `prune` command; [`retention`]: what it counts and
//!   deletes, through each table's owner.

pub mod journey;
pub mod outbox;
pub mod prune;
pub mod rebuild;
pub mod retention;
