//! The state every web handler shares (`AppState`). Background tasks (relay, hub,
//! monitor) take only the handles they need when startup spawns them.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use sightline_core::auth::password::Hashing;
use sightline_core::auth::throttle::Throttle;
use sightline_core::config::Settings;
use sightline_core::monitoring::{Monitor, PipelineStats};
use sightline_core::read_side::index::SearchIndex;
use sightline_core::shutdown::ShutdownSignal;
use sightline_core::visibility::hub::NoticeHub;

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
    pub search_index: SearchIndex,
    /// What query handlers read: the Elasticsearch store above, or with
    /// `READ_STORE=postgres` the same-database shape.
    pub read_model: sightline_core::read_side::model::ReadModel,
    /// Places and cancels orders (the write limit, the transaction with
    /// whatever start-up adds to it, the consistency token): the one write
    /// flow of the JSON API and the forms.
    pub orders: sightline_core::write_side::orders::Orders,
    /// Fans recorded notices out to this instance's SSE streams and long polls.
    pub hub: Arc<NoticeHub>,
    /// When this instance first sent each notice (the journeys' `sent`),
    /// written in batches by its task (`visibility::deliveries`).
    pub deliveries: Arc<sightline_core::visibility::deliveries::Deliveries>,
    /// The sessions this instance's streams and polls are open under: they
    /// end when their session does.
    pub sessions: Arc<sightline_core::auth::session_watch::SessionWatch>,
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
    pub limits: crate::limits::Limits,
    /// A distributed bus's latest look (`BUS=nats`), for `/status`.
    pub bus: Arc<sightline_core::bus::BusWatch>,
    /// How many write requests are worked on at once, and how many wait
    /// (see `web::admission`).
    pub write_admission: Arc<crate::admission::WriteAdmission>,
    /// Wakes the relay after write requests (see `outbox::wake`).
    pub relay_waker: Arc<sightline_core::outbox::wake::RelayWaker>,
    /// Wakes every instance's notice hub after a write that recorded a
    /// notice in its own transaction (`READ_STORE=postgres`; see `wake`).
    pub notice_waker: Arc<sightline_core::wake::Waker>,
    /// Whether every background task still runs (`/readyz`; see `supervision`).
    pub task_health: Arc<sightline_core::supervision::TaskHealth>,
    /// The test seam that makes a background task panic.
    pub task_faults: Arc<sightline_core::supervision::TaskFaults>,
}

impl App {
    /// Sign-up and login, with this instance's throttle and hashing bound.
    pub fn accounts(&self) -> sightline_core::auth::Accounts<'_> {
        sightline_core::auth::Accounts {
            db: &self.db,
            throttle: &self.login_throttle,
            hashing: &self.hashing,
            settings: &self.settings,
        }
    }
}
