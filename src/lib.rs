//! Sightline, in the order the data flows:
//!
//! write_side → outbox → relay → (bus) → projector → read_side → visibility → web
//!
//! The layers are crates, so an import that runs back up is a compile
//! error: the pipeline and its foundations are `sightline-core`
//! (crates/core), all of HTTP is `sightline-web` (crates/web), and this
//! crate is the top: `startup` wires them, `operations` (rebuild, the outbox
//! commands) stands beside the pipeline. The re-exports below keep one path
//! for every module (`sightline::relay`, `sightline::web`, …).

pub use sightline_core::{
    auth, bus, config, consistency, db, journey, locks, metric_catalogue, money, monitoring, order,
    outbox, projector, rate, read_side, rebuild_log, relay, shutdown, supervision, telemetry,
    visibility, wake, write_side,
};

/// All of HTTP: the JSON API, pages, health, status, CORS, extractors,
/// limits, the shared state, the one error type and the accept loop.
pub use sightline_web as web;

/// Wiring: builds the application and runs its tasks.
pub mod startup;

/// Beside the pipeline: rebuild, the outbox commands.
pub mod operations;
