//! Sightline's pipeline, in the order the data flows:
//!
//! write_side → outbox → relay → (bus) → projector → read_side → visibility
//!
//! HTTP (`sightline-web`) sits on top of this crate and start-up and
//! operations (`sightline`) on top of both; nothing here can reach up to
//! them, because this crate does not depend on them. Inside it, each stage
//! imports only the stages before it and the foundations at the end.

/// Where an order is validated and committed, with its outbox row.
pub mod write_side;

/// The event log: the write side's only way out.
pub mod outbox;

/// Claims committed outbox events and hands them to the bus.
pub mod relay;

/// The seam between the relay and the consumers of events.
pub mod bus;

/// Where an order becomes searchable, and its notice is recorded.
pub mod projector;

/// The read model, and the one read path allowed into the write database.
pub mod read_side;

/// The notice log, the hub and the two ways a notice leaves (SSE, long poll).
pub mod visibility;

/// Lag samples and pipeline statistics for `/metrics` and `/status`.
pub mod monitoring;

/// One order version's journey through all of the above, read back.
pub mod journey;

// Foundations every stage may use.
pub mod auth;
pub mod config;
pub mod consistency;
pub mod db;
pub mod locks;
pub mod metric_catalogue;
pub mod money;
pub mod order;
pub mod rate;
pub mod rebuild_log;
pub mod shutdown;
pub mod supervision;
pub mod telemetry;
pub mod wake;
