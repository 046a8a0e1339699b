//! Building and running the application: where the pipeline's stages, the
//! web and the background tasks are wired together.

pub mod in_process_bus;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::password::Hashing;
use crate::auth::throttle::{Policy, Throttle};
use crate::config::{Role, Settings, redact_in, redact_url};
use crate::db::{connect_and_migrate, connect_pool};
use crate::projector::Projector;
use crate::read_side::index::ReadStore;
use crate::relay::Relay;
use crate::shutdown::ShutdownSignal;
use crate::state::{App, AppState};
use crate::visibility::hub::{self, NoticeHub};
use crate::visibility::notice_log;
use crate::{monitoring, telemetry, web};
use in_process_bus::InProcessBus;

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

impl Application {
    /// Connects to PostgreSQL (migrating it), prepares the read model if
    /// Elasticsearch is up, and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check_roles()?;
        let pipeline_pool_size = settings.pipeline_pool_size()?;
        let db = connect_and_migrate(&settings).await?;
        let pipeline_db = connect_pool(&settings, pipeline_pool_size).await?;
        let read_store = ReadStore::from_settings(&settings)?;
        // Elasticsearch being down must not stop the write side: the relay
        // keeps the backlog and catches up once it is back.
        if let Err(e) = read_store.ensure_exists().await {
            tracing::warn!(
                "Elasticsearch is not usable at {} ({}) — start it with `scripts/services start elasticsearch`; orders are kept and indexed once it is up",
                redact_url(&settings.elasticsearch_url),
                redact_in(&format!("{e:#}"), &settings.elasticsearch_url)
            );
        }

        let head = notice_log::head(&db)
            .await
            .context("Failed to read the notice log")?;
        let listener = TcpListener::bind(settings.bind_addr)
            .await
            .with_context(|| format!("Failed to bind {}", settings.bind_addr))?;
        let port = listener
            .local_addr()
            .context("Failed to read the bound address")?
            .port();

        let state = AppState(Arc::new(App {
            hub: Arc::new(NoticeHub::new(head, settings.sse_buffer)),
            login_throttle: Throttle::new(Policy::from_settings(&settings)),
            hashing: Hashing::new(settings.hash_permits()),
            limits: crate::http::limits::Limits::new(&settings),
            db,
            read_store,
            settings,
            shutdown: ShutdownSignal::new(),
            metrics: telemetry::metrics_handle(),
            monitor: Default::default(),
            pipeline: Default::default(),
            pipeline_db,
            relay_waker: Default::default(),
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

    /// Triggers a graceful stop, as SIGTERM would.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.state.shutdown.clone()
    }

    /// Serves HTTP and runs the pipeline until SIGINT, SIGTERM or the
    /// shutdown signal; then stops accepting, closes SSE streams, lets the
    /// relay finish its batch, and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = self.state;
        let mut tasks = Vec::new();
        if state.settings.runs(Role::Relay) {
            tasks.push(spawn_pipeline(&state));
        }
        // Each long-lived task gets the handles it uses, not the whole state.
        let sampler = monitoring::Sampler {
            db: state.pipeline_db.clone(),
            read_store: state.read_store.clone(),
            monitor: state.monitor.clone(),
            pipeline: state.pipeline.clone(),
            lag_slo: state.settings.lag_slo(),
            metrics: state.metrics.clone(),
        };
        tasks.push(tokio::spawn(monitoring::run(
            sampler,
            state.shutdown.subscribe(),
        )));
        if state.settings.runs(Role::Web) {
            tasks.push(tokio::spawn(hub::run(
                state.hub.clone(),
                state.pipeline_db.clone(),
                state.shutdown.subscribe(),
            )));
            tasks.push(tokio::spawn(crate::outbox::wake::run(
                state.relay_waker.clone(),
                state.db.clone(),
                state.shutdown.subscribe(),
            )));
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
        tracing::info!(max_connections, "connection limit");
        web::serve::serve(
            self.listener,
            router,
            graceful,
            CONNECTION_DRAIN,
            max_connections,
        )
        .await;

        state.shutdown.trigger();
        // One deadline for all of them, so a stop takes at most TASK_GRACE.
        if tokio::time::timeout(TASK_GRACE, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The relay, with the in-process bus and projector.
fn spawn_pipeline(state: &AppState) -> JoinHandle<()> {
    let settings = &state.settings;
    let projector = Projector::new(
        state.pipeline_db.clone(),
        state.read_store.clone(),
        settings.refresh_mode,
    );
    let relay = Relay::new(
        state.pipeline_db.clone(),
        Arc::new(InProcessBus::new(projector)),
        settings.relay_batch_size,
        settings.relay_poll(),
    )
    .with_wake(settings.relay_wake)
    .with_concurrency(settings.relay_concurrency.into())
    .with_stats(state.pipeline.clone());
    tokio::spawn(relay.run(state.shutdown.subscribe()))
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
