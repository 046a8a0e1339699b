//! Sightline, in the order the data flows:
//!
//! write_side → outbox → relay → (bus) → projector → read_side → visibility → web
//!
//! wired at the top by `startup`; `operations` (rebuild, the outbox
//! commands) stands beside the pipeline, not inside it; the foundations at
//! the end are shared by every stage.

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

/// All of HTTP: the JSON API, pages, health, status, CORS, extractors,
/// limits, the shared state, the one error type and the accept loop.
pub mod web;

/// Wiring: builds the application and runs its tasks.
pub mod startup;

/// Beside the pipeline: rebuild, the outbox commands.
pub mod operations;

/// Lag samples and pipeline statistics for `/metrics` and `/status`.
pub mod monitoring;

// Foundations every stage may use.
pub mod auth;
pub mod config;
pub mod consistency;
pub mod db;
pub mod locks;
pub mod money;
pub mod order;
pub mod rate;
pub mod shutdown;
pub mod supervision;
pub mod telemetry;
