//! All integration tests, in one binary (one link, one set-up).

mod direct_writes;
// The shared test support, under the name every test file imports it by.
use sightline_test_support as helpers;

mod accounts;
mod auth_api;
mod bounded_work;
mod browser;
mod contract;
mod cors;
mod dead_letters;
mod e2e_recipe;
mod errors_api;
mod es_faults;
mod event_streams;
mod events_api;
mod hang_ups;
mod instances;
mod journeys;
mod lifecycle;
mod limits;
mod log_privacy;
mod login_limits;
mod long_polls;
mod many_pending;
mod nats_bus;
mod notice_commit_order;
mod operations;
mod operators;
mod ops_access;
mod orders_api;
mod outbox_retry;
mod overload;
mod pages_without_browser;
mod pools;
mod rebuild;
mod relay_wake;
mod resume;
mod session_streams;
mod sessions;
mod smoke;
mod sse_clients;
mod stress;
mod table_owners;
mod task_deaths;
// One trace per order across the processes, in Jaeger (issue 27).
mod traces;
mod typed_client;
mod write_costs;

// Tests that prove the promise by driving the real code (issue 9).
mod binary;
mod es_proxy;
// Moving between READ_STORE=postgres and Elasticsearch (issue 14).
mod graduation;
mod proofs;
mod properties;
mod same_database;
