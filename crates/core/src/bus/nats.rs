//! The NATS JetStream bus: the relay's side (publishing with deduplication,
//! counting an event taken only on its PubAck) and what both sides share —
//! the stream's and the consumer's settings, the connection, and a look at
//! the cluster for `/metrics` and `/status`.
//!
//! The stream is created at start if missing, with every setting explicit
//! here (see [`stream_config`]); the projectors' side is
//! `projector::nats_consumer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, stream};
use futures::future::BoxFuture;

use crate::bus::{Bus, BusLook, BusWatch, Delivery, Failure, FailureKind};
use crate::config::Settings;
use crate::outbox::OutboxEvent;
use crate::telemetry::traces::TRACEPARENT;

/// The relay retries a failed publish for as long as it takes (backoff at
/// most 5 s), but a batch's rows stay claimed while it publishes, and an
/// unacknowledged publish is retried within seconds: two minutes is far
/// beyond that horizon, so a publish retried after a lost PubAck (or after
/// the relay died between PubAck and marking) is acknowledged as a duplicate
/// instead of being stored twice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Replicas of the stream (and its consumer): one per node of the
/// three-node cluster, so it survives the loss of any one node.
pub const REPLICAS: usize = 3;
/// How long to wait for a PubAck (or any JetStream API answer).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The names and limits of the stream and its consumer, from the settings.
#[derive(Clone, Debug)]
pub struct Names {
    pub stream: String,
    pub consumer: String,
    pub max_age: Duration,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
}

impl Names {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            stream: settings.nats_stream.clone(),
            consumer: settings.nats_consumer.clone(),
            max_age: Duration::from_secs(settings.nats_max_age_hours * 3600),
            ack_wait: settings.nats_ack_wait(),
            max_ack_pending: settings.nats_max_ack_pending,
        }
    }

    /// `orders` for stream `ORDERS`: subjects are `orders.<order id>`.
    pub fn subject_prefix(&self) -> String {
        self.stream.to_lowercase()
    }

    pub fn subject(&self, event: &OutboxEvent) -> String {
        format!("{}.{}", self.subject_prefix(), event.aggregate_id)
    }
}

/// The stream, every setting explicit: all subjects of the prefix, kept on
/// disk on all three nodes, by age (limits retention: consuming does not
/// delete, so a new consumer can replay what is younger than `max_age`),
/// deduplicated on `Nats-Msg-Id` (the outbox id) within [`DUPLICATE_WINDOW`].
pub fn stream_config(names: &Names) -> stream::Config {
    stream::Config {
        name: names.stream.clone(),
        subjects: vec![format!("{}.>", names.subject_prefix())],
        storage: StorageType::File,
        num_replicas: REPLICAS,
        retention: RetentionPolicy::Limits,
        max_age: names.max_age,
        // At the limit the oldest go, never a new publish (only age limits it).
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The projectors' shared durable pull consumer: explicit acks; redelivery
/// after `ack_wait`; at most `max_ack_pending` unacknowledged. Its
/// `max_deliver` is unlimited on purpose: the projector parks an event on
/// its `NATS_MAX_DELIVER`-th delivery itself (dead letter + `order-failed`),
/// whereas the server, at its own limit, would only drop it silently.
pub fn consumer_config(names: &Names) -> pull::Config {
    pull::Config {
        durable_name: Some(names.consumer.clone()),
        description: Some("Sightline projectors: orders into the read model".to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: names.ack_wait,
        max_deliver: -1,
        max_ack_pending: names.max_ack_pending,
        num_replicas: REPLICAS,
        ..Default::default()
    }
}

/// Connects to the cluster. Returns at once even when no node answers yet:
/// the client keeps trying (and fails over between the URLs), so NATS being
/// down never stops the write side; the relay keeps the backlog meanwhile.
pub async fn connect(urls: &str) -> anyhow::Result<jetstream::Context> {
    let urls: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse()
                .with_context(|| format!("NATS_URL: {u:?} is not a URL"))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!urls.is_empty(), "NATS_URL names no server");
    let client = async_nats::ConnectOptions::new()
        .name("sightline")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(urls)
        .await
        .context("Failed to connect to NATS")?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .build(client))
}

/// Creates the stream if it is missing (an existing one is used as it is).
pub async fn ensure_stream(
    js: &jetstream::Context,
    names: &Names,
) -> anyhow::Result<stream::Stream> {
    js.get_or_create_stream(stream_config(names))
        .await
        .with_context(|| format!("Failed to create or find the stream {}", names.stream))
}

/// The relay's bus: one message per event on `<prefix>.<order id>`, with
/// `Nats-Msg-Id` = the outbox id.
pub struct NatsBus {
    js: jetstream::Context,
    names: Names,
    stream_ready: AtomicBool,
}

impl NatsBus {
    pub fn new(js: jetstream::Context, names: Names) -> Self {
        Self {
            js,
            names,
            stream_ready: AtomicBool::new(false),
        }
    }

    /// Publishes the whole batch at once, then waits for every PubAck. Only
    /// acknowledged events are taken (a duplicate ack too: the stream has
    /// it); the others stay unpublished and are retried.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn publish_batch(&self, events: &[OutboxEvent]) -> anyhow::Result<Delivery> {
        if !self.stream_ready.load(Ordering::Relaxed) {
            ensure_stream(&self.js, &self.names)
                .await
                .context(FailureKind("nats_unavailable".to_owned()))?;
            self.stream_ready.store(true, Ordering::Relaxed);
        }
        let started = Instant::now();
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event).context("Failed to encode an event")?;
            let mut publish = PublishMessage::build()
                .payload(payload.into())
                .message_id(message_id(event));
            // The relay's span for this event (W3C trace context), where
            // any consumer looks for it: the message's headers.
            if let Some(traceparent) = &event.traceparent {
                publish = publish.header(TRACEPARENT, traceparent.as_str());
            }
            sent.push(
                self.js
                    .send_publish(self.names.subject(event), publish)
                    .await,
            );
        }
        let acks = futures::future::join_all(sent.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            }
        }))
        .await;
        let mut delivery = Delivery::default();
        let mut duplicates = 0u64;
        for (event, ack) in events.iter().zip(acks) {
            match ack {
                Ok(ack) if ack.stream == self.names.stream => {
                    duplicates += u64::from(ack.duplicate);
                    delivery.taken.push(event.id);
                }
                Ok(ack) => delivery.retry.push((
                    event.id,
                    Failure {
                        kind: "nats_wrong_stream".to_owned(),
                        detail: format!("acknowledged by stream {}", ack.stream),
                    },
                )),
                Err(e) => {
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        // Deleted under us: create it again before the retry.
                        self.stream_ready.store(false, Ordering::Relaxed);
                    }
                    delivery.retry.push((event.id, publish_failure(&e)));
                }
            }
        }
        metrics::histogram!(PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
        crate::monitoring::record_stage("publish", started);
        metrics::counter!(PUBLISH_DUPLICATES).increment(duplicates);
        Ok(delivery)
    }
}

impl Bus for NatsBus {
    fn publish<'a>(&'a self, events: &'a [OutboxEvent]) -> BoxFuture<'a, anyhow::Result<Delivery>> {
        Box::pin(self.publish_batch(events))
    }

    fn projects_later(&self) -> bool {
        true
    }
}

/// The deduplication id: the outbox id, and after an `outbox retry` the
/// attempt too — a retried event must not be taken for the duplicate of its
/// first publish (within the duplicate window no projector would see it).
pub fn message_id(event: &OutboxEvent) -> String {
    match event.relay_attempt {
        0 => event.id.to_string(),
        attempt => format!("{}.{attempt}", event.id),
    }
}

/// One short word for why a publish was not acknowledged.
fn publish_failure(e: &jetstream::context::PublishError) -> Failure {
    let kind = match e.kind() {
        PublishErrorKind::TimedOut => "nats_publish_timed_out",
        PublishErrorKind::StreamNotFound => "nats_stream_not_found",
        PublishErrorKind::BrokenPipe => "nats_unavailable",
        _ => "nats_publish_failed",
    };
    Failure {
        kind: kind.to_owned(),
        detail: e.to_string(),
    }
}

/// Seconds from a batch's first publish to its last PubAck.
pub const PUBLISH_SECONDS: &str = "sightline_bus_publish_seconds";
/// Publishes the stream acknowledged as duplicates (already stored).
pub const PUBLISH_DUPLICATES: &str = "sightline_bus_publish_duplicates_total";

/// Looks at the stream and the consumer (whose state lives on the cluster,
/// so any instance can say where the projectors stand).
pub async fn look(js: &jetstream::Context, names: &Names) -> BusLook {
    let mut look = BusLook::default();
    let stream = match js.get_stream(&names.stream).await {
        Ok(stream) => stream,
        Err(e) => {
            look.error = Some(format!("stream {}: {e}", names.stream));
            return look;
        }
    };
    match stream.get_info().await {
        Ok(info) => {
            look.stream_messages = info.state.messages;
            if let Some(cluster) = info.cluster {
                if let Some(leader) = &cluster.leader {
                    look.nodes.push((leader.clone(), true));
                }
                look.leader = cluster.leader;
                for peer in cluster.replicas {
                    look.nodes.push((peer.name, !peer.offline));
                }
                look.nodes.sort();
            }
        }
        Err(e) => look.error = Some(format!("stream {}: {e}", names.stream)),
    }
    // No consumer yet (no projector has started): nothing pending anywhere.
    if let Ok(mut consumer) = stream.get_consumer::<pull::Config>(&names.consumer).await {
        match consumer.info().await {
            Ok(info) => {
                look.consumer_pending = info.num_pending;
                look.consumer_ack_pending = info.num_ack_pending as u64;
                look.redelivered = info.num_redelivered as u64;
            }
            Err(e) => look.error = Some(format!("consumer {}: {e}", names.consumer)),
        }
    }
    look
}

/// Samples the bus every `every` into gauges (`sightline_bus_*`) and the
/// shared [`BusWatch`] that `/status` reads, until shutdown.
pub async fn watch(
    js: jetstream::Context,
    names: Names,
    latest: Arc<BusWatch>,
    every: Duration,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = interval.tick() => {}
        }
        let look = tokio::time::timeout(every * 3, look(&js, &names))
            .await
            .unwrap_or_else(|_| BusLook {
                error: Some("the cluster did not answer in time".to_owned()),
                ..Default::default()
            });
        metrics::gauge!("sightline_bus_stream_messages").set(look.stream_messages as f64);
        metrics::gauge!("sightline_bus_consumer_pending").set(look.consumer_pending as f64);
        metrics::gauge!("sightline_bus_consumer_ack_pending").set(look.consumer_ack_pending as f64);
        metrics::gauge!("sightline_bus_consumer_redelivered").set(look.redelivered as f64);
        for (node, up) in &look.nodes {
            metrics::gauge!("sightline_bus_node_up", "node" => node.clone()).set(if *up {
                1.0
            } else {
                0.0
            });
        }
        metrics::gauge!("sightline_bus_reachable").set(if look.error.is_some() {
            0.0
        } else {
            1.0
        });
        latest.set(look);
    }
}

use crate::metric_catalogue::{Listed, Metric};
use metrics::Unit;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    // The distributed bus (BUS=nats): listed only where it runs.
    Metric::gauge("sightline_bus_stream_messages", Unit::Count, "Events the stream holds (sampled every 2 s)."),
    Metric::gauge("sightline_bus_consumer_pending", Unit::Count, "Events in the stream no projector has been handed yet."),
    Metric::gauge("sightline_bus_consumer_ack_pending", Unit::Count, "Events handed to projectors and not yet acknowledged."),
    Metric::gauge("sightline_bus_consumer_redelivered", Unit::Count, "Unacknowledged events that were delivered more than once."),
    Metric::gauge("sightline_bus_node_up", Unit::Count, "1 for each node holding the stream that is up (the leader, or a replica not offline), else 0."),
    Metric::gauge("sightline_bus_reachable", Unit::Count, "1 while the stream and consumer can be looked at, else 0."),
    Metric::counter("sightline_bus_publish_duplicates_total", "Publishes the stream acknowledged as duplicates (it had the outbox id already: a retry after a lost PubAck or a relay crash).").listed(Listed::OnFirstUse),
    Metric::seconds("sightline_bus_publish_seconds", "From a relay batch's first publish to its last PubAck.").listed(Listed::OnFirstUse),
];
