//! All integration tests, in one binary (one link, one set-up).

mod helpers;

mod auth_api;
mod browser;
mod errors_api;
mod events_api;
mod lifecycle;
mod orders_api;
mod smoke;
