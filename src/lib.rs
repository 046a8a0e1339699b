//! Sightline, in the order the data flows:
//!
//! write_side → outbox → relay (bus) → projector → read_side → visibility → web

pub mod auth;
pub mod config;
pub mod consistency;
pub mod error;
pub mod http;
pub mod monitoring;
pub mod order;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod telemetry;

pub mod outbox;
pub mod projector;
pub mod read_side;
pub mod relay;
pub mod visibility;
pub mod web;
pub mod write_side;
