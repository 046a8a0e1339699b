//! All integration tests, in one binary (one link, one set-up).

mod direct_writes;
mod helpers;

mod auth_api;
mod browser;
mod dead_letters;
mod errors_api;
mod events_api;
mod orders_api;
mod smoke;
mod stress;
