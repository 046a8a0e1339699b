//! The state every handler and background task shares.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::throttle::LoginThrottle;
use crate::config::Settings;
use crate::monitoring::{Monitor, PipelineStats};
use crate::read_side::index::ReadStore;
use crate::shutdown::ShutdownSignal;
use crate::visibility::hub::NoticeHub;

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

pub struct App {
    /// The write database: users, sessions, orders, the outbox and the notice log.
    pub db: PgPool,
    /// The read model. Query handlers read it; only the projector writes it.
    pub read_store: ReadStore,
    /// Fans recorded notices out to this instance's SSE streams and long polls.
    pub hub: NoticeHub,
    pub settings: Settings,
    /// Tells SSE streams, long polls and background tasks to finish.
    pub shutdown: ShutdownSignal,
    /// Failed logins per username, for throttling.
    pub login_throttle: LoginThrottle,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The lag monitor's latest samples, for `/metrics` and `/status`.
    pub monitor: Monitor,
    /// The relay's last batch (empty on an instance without the pipeline).
    pub pipeline: Arc<PipelineStats>,
    /// Caps on streams, polls and writes (see `web::limits`).
    pub limits: crate::web::limits::Limits,
}
