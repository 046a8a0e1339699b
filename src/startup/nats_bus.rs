//! The NATS JetStream bus, wired (`BUS=nats`): one client per process,
//! shared by the relay's publisher, the projectors' consumer and the bus
//! watch behind `/metrics` and `/status`. Relay and projectors may run in
//! different processes (`--roles relay`, `--roles projector`).

use std::sync::Arc;
use std::time::Duration;

use crate::bus::Bus;
use crate::bus::BusWatch;
use crate::bus::nats::{self, Names, NatsBus};
use crate::config::Settings;
use crate::monitoring::PipelineStats;
use crate::projector::Projector;
use crate::projector::nats_consumer::NatsConsumer;
use crate::read_side::index::SearchIndex;
use crate::shutdown::Shutdown;
use async_nats::jetstream;

/// How often the bus watch looks at the stream and the consumer.
const WATCH_EVERY: Duration = Duration::from_secs(2);

pub struct NatsWiring {
    js: jetstream::Context,
    names: Names,
}

impl NatsWiring {
    /// Connects (returns at once; the client connects in the background).
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            js: nats::connect(&settings.nats_url).await?,
            names: Names::from_settings(settings),
        })
    }

    /// The relay's side: publishes to the stream.
    pub fn bus(&self) -> Arc<dyn Bus> {
        Arc::new(NatsBus::new(self.js.clone(), self.names.clone()))
    }

    /// A projector on the shared durable consumer (a task for startup to run).
    pub fn projector(
        &self,
        settings: &Settings,
        db: sqlx::PgPool,
        read_store: SearchIndex,
        stats: Arc<PipelineStats>,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + use<> {
        let projector = Arc::new(Projector::new(
            db.clone(),
            read_store,
            settings.refresh_mode,
        ));
        NatsConsumer::new(
            self.js.clone(),
            self.names.clone(),
            projector,
            db,
            usize::try_from(settings.relay_batch_size).unwrap_or(1),
            settings.nats_max_deliver,
            stats,
        )
        .with_concurrency(settings.projector_concurrency.into())
        .with_journeys(settings.record_journeys)
        .run(shutdown)
    }

    /// Samples the stream and the consumer for `/metrics` and `/status`.
    pub fn watch(
        &self,
        latest: Arc<BusWatch>,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + use<> {
        nats::watch(
            self.js.clone(),
            self.names.clone(),
            latest,
            WATCH_EVERY,
            shutdown,
        )
    }
}
