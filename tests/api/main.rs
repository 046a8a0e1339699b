//! All integration tests, in one binary (one link, one set-up).

mod helpers;
mod smoke;
