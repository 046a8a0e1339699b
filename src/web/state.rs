//! The state every web handler shares (`AppState`). Background tasks (relay, hub,
//! monitor) take only the handles they need when startup spawns them.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::password::Hashing;
use crate::auth::throttle::Throttle;
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
    /// The web's pool: HTTP handlers use this one.
    pub db: PgPool,
    /// The Elasticsearch store: start-up hands it to the projector (its only
    /// writer) and the lag monitor, and `/readyz` pings it (not with
    /// `READ_STORE=postgres`). Query handlers read `read_model` instead.
    pub read_store: ReadStore,
    /// What query handlers read: the Elasticsearch store above, or with
    /// `READ_STORE=postgres` the same-database shape.
    pub read_model: crate::read_side::model::ReadModel,
    /// Places and cancels orders (the write limit, the transaction with
    /// whatever start-up adds to it, the consistency token): the one write
    /// flow of the JSON API and the forms.
    pub orders: crate::write_side::orders::Orders,
    /// Fans recorded notices out to this instance's SSE streams and long polls.
    pub hub: Arc<NoticeHub>,
    pub settings: Settings,
    /// Tells SSE streams, long polls and background tasks to finish.
    pub shutdown: ShutdownSignal,
    /// Login and sign-up attempts per username and client address.
    pub login_throttle: Throttle,
    /// The bound on password hashes computed at once.
    pub hashing: Hashing,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The lag monitor's latest samples, for `/metrics` and `/status`.
    pub monitor: Arc<Monitor>,
    /// The relay's last batch (empty on an instance without the pipeline).
    pub pipeline: Arc<PipelineStats>,
    /// The same database through the pipeline's own pool: relay, projector,
    /// notice hub and lag monitor, never a request, so no burst of requests
    /// holds up notices (`PIPELINE_DATABASE_MAX_CONNECTIONS`).
    pub pipeline_db: PgPool,
    /// Caps on streams, polls and writes (see `web::limits`).
    pub limits: crate::web::limits::Limits,
    /// A distributed bus's latest look (`BUS=nats`), for `/status`.
    pub bus: Arc<crate::bus::BusWatch>,
    /// How many write requests are worked on at once, and how many wait
    /// (see `web::admission`).
    pub write_admission: Arc<crate::web::admission::WriteAdmission>,
    /// Wakes the relay after write requests (see `outbox::wake`).
    pub relay_waker: Arc<crate::outbox::wake::RelayWaker>,
    /// Whether every background task still runs (`/readyz`; see `supervision`).
    pub task_health: Arc<crate::supervision::TaskHealth>,
    /// The test seam that makes a background task panic.
    pub task_faults: Arc<crate::supervision::TaskFaults>,
}

impl App {
    /// Sign-up and login, with this instance's throttle and hashing bound.
    pub fn accounts(&self) -> crate::auth::Accounts<'_> {
        crate::auth::Accounts {
            db: &self.db,
            throttle: &self.login_throttle,
            hashing: &self.hashing,
            settings: &self.settings,
        }
    }
}

/// Per-address limits count the client a trusted proxy names, not the proxy.
impl axum::extract::FromRef<AppState> for crate::web::extract::client_addr::TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        Self(state.settings.trusted_proxies.clone())
    }
}
