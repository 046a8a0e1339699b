//! Building and running the application: where the pipeline's stages, the
//! web and the background tasks are wired together.

pub mod nats_bus;
pub mod same_database;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::password::Hashing;
use crate::auth::throttle::{Policy, Throttle};
use crate::config::{BusKind, OpsAccess, ReadStoreKind, Role, Settings, redact_in, redact_url};
use crate::db::{connect_pool, connect_web_and_migrate};
use crate::projector::Projector;
use crate::projector::in_process_bus::InProcessBus;
use crate::read_side::index::SearchIndex;
use crate::read_side::model::ReadModel;
use crate::read_side::postgres::PgReadModel;
use crate::relay::Relay;
use crate::shutdown::ShutdownSignal;
use crate::supervision::Tasks;
use crate::visibility::deliveries::{self, Deliveries};
use crate::visibility::hub::{self, NoticeHub};
use crate::visibility::notice_log;
use crate::web::state::{App, AppState};
use crate::write_side::InTransaction;
use crate::write_side::orders::Orders;
use crate::write_side::write_limit::WriteLimiter;
use crate::{monitoring, telemetry, web};

pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
}

/// How long open connections get to finish once a stop is asked for.
const CONNECTION_DRAIN: Duration = Duration::from_secs(4);
/// How long background tasks get to finish their work after the server
/// stops; with the drain, a stop takes under 10 s.
const TASK_GRACE: Duration = Duration::from_secs(5);
/// How long `/readyz` answers unready, naming a background task that died,
/// before the instance stops and exits non-zero.
const UNREADY_BEFORE_EXIT: Duration = Duration::from_secs(2);

impl Application {
    /// Connects to PostgreSQL (migrating it), prepares the read model if
    /// Elasticsearch is up, and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check_roles()?;
        settings.check_ops_token()?;
        match settings.ops_access() {
            OpsAccess::Closed => tracing::warn!(
                bind_addr = %settings.bind_addr,
                "/metrics, /status and /status/stream are closed (401): this server listens \
                 beyond loopback without OPS_TOKEN; set OPS_TOKEN to open them to its holder \
                 (Prometheus sends it as a bearer token), or OPS_OPEN=true on a trusted network"
            ),
            OpsAccess::OpenByChoice => tracing::warn!(
                bind_addr = %settings.bind_addr,
                "OPS_OPEN=true: /metrics, /status and /status/stream are open to everyone who \
                 reaches this port"
            ),
            OpsAccess::Token => {
                if settings.ops_open {
                    tracing::info!("OPS_TOKEN is set: OPS_OPEN=true is ignored");
                }
            }
            OpsAccess::OpenOnLoopback => {}
        }
        if !settings.cookie_secure {
            tracing::warn!(
                "COOKIE_SECURE=false: the session cookie is sent over plain HTTP and may be \
                 planted by a sibling subdomain; keep the default (true) behind HTTPS and on localhost"
            );
        }
        let pipeline_pool_size = settings.pipeline_pool_size()?;
        let db = connect_web_and_migrate(&settings).await?;
        let pipeline_db = connect_pool(&settings, pipeline_pool_size).await?;
        let search_index = SearchIndex::from_settings(&settings)?;
        let same_database = settings.read_store == ReadStoreKind::Postgres;
        if same_database {
            // The orders the Elasticsearch mode wrote have no search words
            // (nothing there reads them): add them before anything is
            // noticed or searched.
            let filled = crate::read_side::postgres::search_words::fill_missing(&db)
                .await
                .context("Failed to add the search words of orders written without them")?;
            if filled > 0 {
                tracing::info!(
                    orders = filled,
                    "added the search words the Elasticsearch mode left out"
                );
            }
            // Whatever the Elasticsearch mode left unprojected is visible
            // here already: notice it before anyone listens.
            let noticed = crate::projector::same_database::catch_up(&db, 1000)
                .await
                .context("Failed to notice what the relay had not yet delivered")?;
            tracing::info!(
                noticed,
                "READ_STORE=postgres: reads from this database; no relay, projector or Elasticsearch"
            );
            if !settings.runs(Role::Web) {
                tracing::warn!(
                    "READ_STORE=postgres has no relay or projector to run: this instance only samples the outbox"
                );
            }
        }
        // Elasticsearch being down must not stop the write side: the relay
        // keeps the backlog and catches up once it is back.
        else if let Err(e) = search_index.ensure_exists().await {
            tracing::warn!(
                "Elasticsearch is not usable at {} ({}) — start it with `scripts/services start elasticsearch`; orders are kept and indexed once it is up",
                redact_url(&settings.elasticsearch_url),
                redact_in(&format!("{e:#}"), &settings.elasticsearch_url)
            );
        }

        let head = notice_log::snapshot(&db)
            .await
            .context("Failed to read the notice log")?;
        let listener = TcpListener::bind(settings.bind_addr)
            .await
            .with_context(|| format!("Failed to bind {}", settings.bind_addr))?;
        let port = listener
            .local_addr()
            .context("Failed to read the bound address")?
            .port();

        let notice_waker: Arc<crate::wake::Waker> = Default::default();
        let (read_model, in_transaction): (ReadModel, Option<Arc<dyn InTransaction>>) =
            if same_database {
                (
                    ReadModel::new(PgReadModel::new(db.clone())),
                    Some(Arc::new(same_database::NoticeInTransaction {
                        hubs: notice_waker.clone(),
                    })),
                )
            } else {
                (ReadModel::new(search_index.clone()), None)
            };
        let state = AppState(Arc::new(App {
            read_model,
            orders: Orders::new(
                db.clone(),
                in_transaction,
                WriteLimiter::new(settings.write_burst, settings.write_rate_per_min),
            ),
            hub: Arc::new(NoticeHub::new(head, settings.sse_buffer)),
            deliveries: Arc::new(Deliveries::new(
                deliveries::instance_name(port),
                settings.record_journeys,
            )),
            sessions: Default::default(),
            login_throttle: Throttle::new(Policy::from_settings(&settings)),
            hashing: Hashing::new(settings.hash_permits()),
            limits: crate::web::limits::Limits::new(&settings),
            write_admission: Arc::new(crate::web::admission::WriteAdmission::from_settings(
                &settings,
            )),
            db,
            search_index,
            settings,
            shutdown: ShutdownSignal::new(),
            metrics: {
                let handle = telemetry::metrics_handle();
                web::describe_metrics();
                handle
            },
            monitor: Default::default(),
            pipeline: Default::default(),
            pipeline_db,
            bus: Default::default(),
            relay_waker: Default::default(),
            notice_waker,
            task_health: Default::default(),
            task_faults: Default::default(),
        }));
        Ok(Self {
            listener,
            port,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// This instance's write admission (tests read its line and refusals;
    /// `/metrics` sums every instance of the process).
    pub fn write_admission(&self) -> Arc<crate::web::admission::WriteAdmission> {
        self.state.write_admission.clone()
    }

    /// Makes a background task panic by name (tests: see `supervision`).
    pub fn task_faults(&self) -> Arc<crate::supervision::TaskFaults> {
        self.state.task_faults.clone()
    }

    /// Triggers a graceful stop, as SIGTERM would.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.state.shutdown.clone()
    }

    /// Serves HTTP and runs the pipeline until SIGINT, SIGTERM or the
    /// shutdown signal; then stops accepting, closes SSE streams, lets the
    /// relay finish its batch, and returns. If a background task ends on its
    /// own first, the instance turns unready, stops the same way and
    /// returns an error naming the task (the process exits non-zero).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = self.state;
        let mut tasks = Tasks::new(state.task_faults.clone());
        let nats = match state.settings.bus {
            BusKind::Nats => Some(nats_bus::NatsWiring::connect(&state.settings).await?),
            BusKind::Inprocess => None,
        };
        // The same-database mode has nothing to publish the outbox to.
        let publishes = state.settings.read_store == ReadStoreKind::Elasticsearch;
        if publishes && state.settings.runs(Role::Relay) {
            tasks.spawn("relay", pipeline(&state, nats.as_ref()));
        }
        if let Some(nats) = &nats {
            if publishes && state.settings.runs(Role::Projector) {
                tasks.spawn(
                    "projector (NATS consumer)",
                    nats.projector(
                        &state.settings,
                        state.pipeline_db.clone(),
                        state.search_index.clone(),
                        state.pipeline.clone(),
                        state.shutdown.subscribe(),
                    ),
                );
            }
            tasks.spawn(
                "bus watch",
                nats.watch(state.bus.clone(), state.shutdown.subscribe()),
            );
        }
        // Each long-lived task gets the handles it uses, not the whole state.
        let sampler = monitoring::Sampler {
            db: state.pipeline_db.clone(),
            search_index: state.search_index.clone(),
            monitor: state.monitor.clone(),
            pipeline: state.pipeline.clone(),
            lag_slo: state.settings.lag_slo(),
            metrics: state.metrics.clone(),
            same_database: state.settings.read_store == ReadStoreKind::Postgres,
        };
        tasks.spawn(
            "lag monitor",
            monitoring::run(sampler, state.shutdown.subscribe()),
        );
        if state.settings.runs(Role::Web) {
            tasks.spawn(
                "notice hub",
                hub::run(
                    state.hub.clone(),
                    state.pipeline_db.clone(),
                    state.shutdown.subscribe(),
                ),
            );
            tasks.spawn(
                "notice deliveries",
                deliveries::run(
                    state.deliveries.clone(),
                    state.pipeline_db.clone(),
                    state.shutdown.subscribe(),
                ),
            );
            tasks.spawn(
                "session watch",
                crate::auth::session_watch::run(
                    state.sessions.clone(),
                    state.db.clone(),
                    state.shutdown.subscribe(),
                ),
            );
            tasks.spawn(
                "notice waker",
                crate::wake::run(
                    state.notice_waker.clone(),
                    state.db.clone(),
                    notice_log::CHANNEL,
                    state.shutdown.subscribe(),
                ),
            );
            tasks.spawn(
                "relay waker",
                crate::outbox::wake::run(
                    state.relay_waker.clone(),
                    state.db.clone(),
                    state.shutdown.subscribe(),
                ),
            );
        }
        let router = if state.settings.runs(Role::Web) {
            web::app(state.clone())
        } else {
            web::operations_app(state.clone())
        };
        tracing::info!(roles = ?state.settings.roles, "starting");

        let signal = state.shutdown.clone();
        let mut stopped = signal.subscribe();
        let graceful = async move {
            tokio::select! {
                _ = os_signal() => tracing::info!("shutdown requested"),
                _ = stopped.recv() => {}
            }
            signal.trigger();
        };
        tracing::info!(addr = %self.listener.local_addr()?, "listening");
        let max_connections = state.settings.connection_limit();
        let max_per_address = state.settings.connection_limit_per_address();
        tracing::info!(max_connections, max_per_address, "connection limit");
        let server = web::serve::serve(
            self.listener,
            router,
            graceful,
            CONNECTION_DRAIN,
            max_connections,
            max_per_address,
        );
        tokio::pin!(server);

        // The server and its tasks side by side: a task that ends before
        // shutdown was asked for is never silent (see `supervision`).
        let mut failure = None;
        let running = state.shutdown.subscribe();
        tokio::select! {
            () = &mut server => {}
            dead = tasks.first_death(&state.task_health, &running) => {
                tracing::error!(
                    task = dead.name,
                    error = %dead.error,
                    "a background task stopped while the server runs: this instance is unready and exits"
                );
                // /readyz says so (with the task's name) while balancers
                // take the instance out of rotation; then a graceful stop.
                tokio::time::sleep(UNREADY_BEFORE_EXIT).await;
                state.shutdown.trigger();
                server.await;
                failure = Some(dead);
            }
        }

        state.shutdown.trigger();
        // One deadline for all of them, so a stop takes at most TASK_GRACE.
        if tokio::time::timeout(TASK_GRACE, tasks.join_all())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        match failure {
            Some(dead) => {
                tracing::error!(task = dead.name, "stopped because a background task died");
                Err(anyhow::anyhow!(
                    "background task `{}` stopped while the server ran: {}",
                    dead.name,
                    dead.error
                ))
            }
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// The relay, with the in-process bus and projector, or publishing to NATS.
fn pipeline(
    state: &AppState,
    nats: Option<&nats_bus::NatsWiring>,
) -> impl Future<Output = ()> + Send + use<> {
    let settings = &state.settings;
    let bus: Arc<dyn crate::bus::Bus> = match nats {
        Some(nats) => nats.bus(),
        None => Arc::new(InProcessBus::new(Projector::new(
            state.pipeline_db.clone(),
            state.search_index.clone(),
            settings.refresh_mode,
        ))),
    };
    let relay = Relay::new(
        state.pipeline_db.clone(),
        bus,
        settings.relay_batch_size,
        settings.relay_poll(),
    )
    .with_wake(settings.relay_wake)
    // The web's writes in this process (if it runs here) wake it directly.
    .with_local_wake(state.relay_waker.clone())
    .with_concurrency(settings.relay_concurrency.into())
    .with_journeys(settings.record_journeys)
    .with_stats(state.pipeline.clone());
    relay.run(state.shutdown.subscribe())
}

async fn os_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
