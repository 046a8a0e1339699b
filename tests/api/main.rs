//! All integration tests, in one binary (one link, one set-up).

mod direct_writes;
mod helpers;

mod auth_api;
mod browser;
mod cors;
mod dead_letters;
mod errors_api;
mod events_api;
mod instances;
mod lifecycle;
mod limits;
mod operations;
mod orders_api;
mod rebuild;
mod smoke;
mod stress;
