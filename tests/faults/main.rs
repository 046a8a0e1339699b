//! Fault tests: the real PostgreSQL and Elasticsearch are stopped and started
//! (`scripts/services`), and the real binary is killed with SIGKILL; with
//! `BUS=nats`, nodes of the three-node NATS cluster are stopped or
//! SIGKILLed too (`nats.rs`).
//!
//! They run one at a time (`services::serial`), and each leaves the services
//! running when it ends, also when it fails. Cargo runs test binaries one
//! after another, so no other test sees a service stopped by these.
//!
//! With port overrides (`SIGHTLINE_PG_PORT`, `SIGHTLINE_ES_PORT`,
//! `SIGHTLINE_ES_TRANSPORT_PORT`, plus matching `DATABASE_URL` and
//! `ELASTICSEARCH_URL`) they act on that instance; the environment is passed
//! through to `scripts/services`.

// The shared test support, under the name every test file imports it by.
use sightline_test_support as helpers;
mod services;

mod elasticsearch_down;
mod nats;
mod postgres_restart;
mod sigkill;
