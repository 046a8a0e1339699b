//! All integration tests, in one binary (one link, one set-up).

mod helpers;

mod auth_api;
mod browser;
mod cors;
mod errors_api;
mod events_api;
mod instances;
mod lifecycle;
mod operations;
mod orders_api;
mod rebuild;
mod smoke;
