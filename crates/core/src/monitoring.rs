//! Watching the pipeline from the outside: how far behind the read model is.
//!
//! A monitor task reads the outbox once a second (one cheap query on the
//! pending-events index, never per scrape), keeps the last few minutes of
//! samples for `/status`, sets the database-derived gauges, and watches the
//! lag SLO: one warning when lag goes above `LAG_SLO_MS`, one line when it is
//! back. It also carries the relay's current run of failed batches (which
//! failure, since when) to `/status` and `/metrics`: a passing failure holds
//! orders back without parking them, and this is where it shows. Readiness
//! never depends on lag — a lagging pipeline still takes writes, and taking
//! the instance out of rotation would not help it catch up.
//!
//! Lag is `now − created_at` of the oldest event not yet published (0 when
//! none): how long the oldest committed order has waited to become searchable.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::Unit;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::read_side::index::SearchIndex;
use crate::shutdown::Shutdown;

/// How often the monitor samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples kept for the `/status` chart: five minutes.
pub const HISTORY: usize = 300;

/// Histogram samples are drained into buckets this often even when nobody
/// scrapes (the recorder has no upkeep task of its own).
const UPKEEP_EVERY_TICKS: u64 = 5;

/// The pipeline as one instance saw it at one moment. This is also the JSON
/// of `/status/stream`'s `event: sample`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub t: i64,
    /// Whether PostgreSQL answered; the outbox figures are `None` when not.
    pub postgres: bool,
    pub elasticsearch: bool,
    /// Events committed but not yet published (= lag in events).
    pub backlog: Option<i64>,
    /// Age of the oldest of them, 0 when there are none.
    pub lag_seconds: Option<f64>,
    /// Parked events (dead letters) right now.
    pub dead_letters: Option<i64>,
    pub slo_seconds: f64,
    /// Whether lag is above the SLO in this sample.
    pub slo_breached: bool,
    /// The last batch this instance's relay published, if it runs one.
    pub last_batch_at: Option<i64>,
    pub last_batch_size: Option<i64>,
    /// What keeps this instance's relay failing right now, if anything.
    pub failure: Option<PipelineFailure>,
    /// `READ_STORE=postgres`: orders are visible at commit, so lag is zero
    /// by construction; `backlog` counts events nothing publishes in this
    /// mode (kept for a later move), not lag. Elasticsearch is not used.
    pub same_database: bool,
}

/// A run of failed relay batches that has not ended yet: which failure and
/// since when. Passing failures (a closed, blocked or missing index,
/// Elasticsearch down) show here while their events wait; dead letters are
/// counted apart.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PipelineFailure {
    /// A short word: the Elasticsearch error type (`index_closed_exception`,
    /// `cluster_block_exception`, …), `elasticsearch_unreachable`,
    /// `postgres` or `other`. Of the latest failed batch.
    pub kind: String,
    /// The latest failed batch's error.
    pub error: String,
    /// Unix milliseconds of the first failed batch of the run.
    pub since: i64,
    /// Failed batches in the run so far.
    pub batches: u64,
}

impl Sample {
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.t).unwrap_or_default()
    }
}

/// What the relay last did, for `/status`. Written by the relay after each
/// committed batch; read without locks (the two values may be a batch apart
/// for an instant, which a status page can live with).
#[derive(Default, Debug)]
pub struct PipelineStats {
    /// Unix milliseconds of the last batch's commit; 0 before the first.
    last_batch_at: AtomicI64,
    last_batch_size: AtomicI64,
    failure: Mutex<Option<PipelineFailure>>,
}

impl PipelineStats {
    /// A batch failed: starts a run of failures, or extends the current one.
    pub fn record_failure(&self, kind: String, error: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        let (since, batches) = failure
            .as_ref()
            .map_or((Utc::now().timestamp_millis(), 0), |f| (f.since, f.batches));
        *failure = Some(PipelineFailure {
            kind,
            error,
            since,
            batches: batches + 1,
        });
    }

    /// A batch went through: a run of failures, if any, is over.
    pub fn record_success(&self) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = failure.take() {
            let lasted_ms = (Utc::now().timestamp_millis() - f.since).max(0);
            tracing::info!(kind = %f.kind, batches = f.batches, lasted_ms, "relay recovered");
        }
    }

    /// The current run of failures, if any.
    pub fn failure(&self) -> Option<PipelineFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn record_batch(&self, size: usize) {
        self.last_batch_size
            .store(i64::try_from(size).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.last_batch_at
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// `(unix ms, events)` of the last batch, if any.
    pub fn last_batch(&self) -> Option<(i64, i64)> {
        match self.last_batch_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some((at, self.last_batch_size.load(Ordering::Relaxed))),
        }
    }
}

/// The monitor's output: the latest sample (watchable) and a short history.
pub struct Monitor {
    latest: watch::Sender<Option<Sample>>,
    history: Mutex<VecDeque<Sample>>,
    /// Samples taken (queries of the outbox and pings of Elasticsearch):
    /// one per interval, however many read `/status` and `/status/stream`.
    taken: AtomicU64,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            latest: watch::channel(None).0,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            taken: AtomicU64::new(0),
        }
    }
}

impl Monitor {
    /// The latest sample, waiting up to `within` for the first one (an
    /// instance that just started has none yet).
    pub async fn latest_within(&self, within: Duration) -> Option<Sample> {
        let mut receiver = self.subscribe();
        tokio::time::timeout(within, receiver.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?
            .clone()
    }

    pub fn latest(&self) -> Option<Sample> {
        self.latest.borrow().clone()
    }

    /// The kept samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .expect("monitor lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Wakes on every new sample.
    pub fn subscribe(&self) -> watch::Receiver<Option<Sample>> {
        self.latest.subscribe()
    }

    fn push(&self, sample: Sample) {
        {
            let mut history = self.history.lock().expect("monitor lock poisoned");
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(sample.clone());
        }
        self.latest.send_replace(Some(sample));
    }
}

/// What the lag monitor needs, and no more: the handles it reads and the
/// place it keeps its samples (the web reads them from there).
pub struct Sampler {
    /// The pipeline's pool: a burst of requests does not blind the monitor.
    pub db: PgPool,
    pub search_index: SearchIndex,
    /// Where the samples go; `/status` and `/metrics` read them.
    pub monitor: Arc<Monitor>,
    /// The relay's last batch and current failure.
    pub pipeline: Arc<PipelineStats>,
    pub lag_slo: Duration,
    /// For the exporter's periodic upkeep.
    pub metrics: PrometheusHandle,
    /// `READ_STORE=postgres`: no projection, so no lag (see [`Sample`]).
    pub same_database: bool,
}

impl Sampler {
    /// Takes a fresh sample: the outbox and Elasticsearch, concurrently.
    async fn sample(&self) -> Sample {
        self.monitor.taken.fetch_add(1, Ordering::Relaxed);
        let figures =
            tokio::time::timeout(Duration::from_secs(2), crate::outbox::backlog(&self.db));
        let ping = async { !self.same_database && self.search_index.ping().await };
        let (figures, elasticsearch) = tokio::join!(figures, ping);
        let mut figures = figures.ok().and_then(Result::ok);
        if self.same_database {
            // Nothing is projected: an unpublished event is not late.
            figures = figures.map(|(backlog, _, dead)| (backlog, 0.0, dead));
        }
        let slo_seconds = self.lag_slo.as_secs_f64();
        let last_batch = self.pipeline.last_batch();
        Sample {
            t: Utc::now().timestamp_millis(),
            postgres: figures.is_some(),
            elasticsearch,
            backlog: figures.map(|f| f.0),
            lag_seconds: figures.map(|f| f.1.max(0.0)),
            dead_letters: figures.map(|f| f.2),
            slo_seconds,
            slo_breached: figures.is_some_and(|f| f.1 > slo_seconds),
            last_batch_at: last_batch.map(|b| b.0),
            last_batch_size: last_batch.map(|b| b.1),
            failure: self.pipeline.failure(),
            same_database: self.same_database,
        }
    }
}

/// A change in whether lag is within the SLO.
#[derive(Debug, PartialEq)]
enum Transition {
    Breached,
    Recovered { after: Duration },
}

/// Breach episodes: one transition when lag goes above the SLO, one when it
/// comes back; nothing while it stays on either side.
#[derive(Default)]
struct SloWatch {
    breached_since: Option<Instant>,
}

impl SloWatch {
    fn observe(&mut self, breached: bool, now: Instant) -> Option<Transition> {
        match (self.breached_since, breached) {
            (None, true) => {
                self.breached_since = Some(now);
                Some(Transition::Breached)
            }
            (Some(since), false) => {
                self.breached_since = None;
                Some(Transition::Recovered { after: now - since })
            }
            _ => None,
        }
    }

    fn breached(&self) -> bool {
        self.breached_since.is_some()
    }
}

/// Samples every second until shutdown.
pub async fn run(sampler: Sampler, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut slo = SloWatch::default();
    let mut postgres_was_up = true;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = ticker.tick() => {}
        }
        let mut sample = sampler.sample().await;
        if sample.postgres != postgres_was_up {
            postgres_was_up = sample.postgres;
            if sample.postgres {
                tracing::info!("lag monitor reads the outbox again");
            } else {
                tracing::warn!("lag monitor cannot read the outbox; lag is unknown until it can");
            }
        }
        if sample.postgres {
            match slo.observe(sample.slo_breached, Instant::now()) {
                Some(Transition::Breached) => tracing::warn!(
                    lag_ms = (sample.lag_seconds.unwrap_or_default() * 1000.0) as u64,
                    slo_ms = sampler.lag_slo.as_millis() as u64,
                    backlog = sample.backlog.unwrap_or_default(),
                    "projection lag is above the SLO"
                ),
                Some(Transition::Recovered { after }) => tracing::info!(
                    breach_ms = after.as_millis() as u64,
                    slo_ms = sampler.lag_slo.as_millis() as u64,
                    "projection lag is back within the SLO"
                ),
                None => {}
            }
        } else {
            // Unknown lag: the episode neither starts nor ends.
            sample.slo_breached = slo.breached();
        }
        publish(&sample);
        sampler.monitor.push(sample);
        ticks += 1;
        if ticks.is_multiple_of(UPKEEP_EVERY_TICKS) {
            sampler.metrics.run_upkeep();
        }
    }
    tracing::info!("lag monitor stopped");
}

/// Serialises setting the gauges with rendering them (see [`render_metrics`]).
static PUBLISH: Mutex<()> = Mutex::new(());

fn publish(sample: &Sample) {
    let _guard = PUBLISH.lock().unwrap_or_else(|e| e.into_inner());
    set_gauges(sample);
}

fn set_gauges(sample: &Sample) {
    if let (Some(backlog), Some(lag), Some(dead)) =
        (sample.backlog, sample.lag_seconds, sample.dead_letters)
    {
        metrics::gauge!("sightline_outbox_backlog").set(backlog as f64);
        metrics::gauge!("sightline_outbox_oldest_pending_age_seconds").set(lag);
        metrics::gauge!("sightline_outbox_dead_letters").set(dead as f64);
        metrics::gauge!("sightline_projection_lag_seconds").set(lag);
        let lag_events = if sample.same_database { 0 } else { backlog };
        metrics::gauge!("sightline_projection_lag_events").set(lag_events as f64);
    }
    metrics::gauge!("sightline_lag_slo_seconds").set(sample.slo_seconds);
    // For alerting rules: Prometheus cannot read /readyz's JSON.
    metrics::gauge!("sightline_postgres_up").set(if sample.postgres { 1.0 } else { 0.0 });
    metrics::gauge!("sightline_elasticsearch_up").set(if sample.elasticsearch { 1.0 } else { 0.0 });
    metrics::gauge!("sightline_lag_slo_breached").set(if sample.slo_breached { 1.0 } else { 0.0 });
    set_failure_gauges(sample.failure.as_ref());
}

/// Every kind the failing gauge has been set for (a handful of words).
static FAILING_KINDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `sightline_pipeline_failing{kind}` is 1 for the current failure's kind
/// only: a kind that is over goes back to 0 rather than lingering at 1.
fn set_failure_gauges(failure: Option<&PipelineFailure>) {
    let mut kinds = FAILING_KINDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = failure {
        kinds.insert(f.kind.clone());
    }
    for kind in kinds.iter() {
        let on = failure.is_some_and(|f| &f.kind == kind);
        metrics::gauge!(PIPELINE_FAILING, "kind" => kind.clone()).set(if on { 1.0 } else { 0.0 });
    }
    metrics::gauge!(PIPELINE_FAILING_SINCE).set(failure.map_or(0.0, |f| f.since as f64 / 1000.0));
}

/// Failed relay batches by kind of failure.
pub const BATCH_FAILURES: &str = "sightline_relay_batch_failures_total";

/// 1 for the kind of failure that keeps the relay failing right now.
pub const PIPELINE_FAILING: &str = "sightline_pipeline_failing";
/// Unix time the current run of failed batches began, 0 when none.
pub const PIPELINE_FAILING_SINCE: &str = "sightline_pipeline_failing_since_timestamp_seconds";

/// The Prometheus text for `/metrics`.
///
/// The recorder is process-wide while the monitor's gauges describe one
/// application. A deployment runs one application per process, but tests run
/// many: so each scrape first sets the gauges from its own application's
/// latest sample (no database query: the monitor took it), under the same
/// lock the monitors publish under, and renders before anyone else can.
pub fn render_metrics(monitor: &Monitor, metrics: &PrometheusHandle) -> String {
    let _guard = PUBLISH.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sample) = monitor.latest() {
        set_gauges(&sample);
    }
    metrics::counter!("sightline_status_samples_total")
        .absolute(monitor.taken.load(Ordering::Relaxed));
    metrics.render()
}

/// Where a relay batch's time goes, one `stage` label per step.
pub const BATCH_STAGE_SECONDS: &str = "sightline_batch_stage_seconds";

/// The stages, in pipeline order (the benchmark prints them in this order).
/// The in-process bus: waiting, claim, count, write, refresh, notices,
/// mark. NATS: the relay's waiting, claim, publish (first publish to last
/// PubAck), relayed (marking them and committing); the projector's delivery
/// (an event stored in the stream to this process having it), batching
/// (having it to its batch starting), count, write, refresh, notices,
/// published (marking them), ack.
pub const BATCH_STAGES: [&str; 13] = [
    "waiting",
    "claim",
    "publish",
    "relayed",
    "delivery",
    "batching",
    "count",
    "write",
    "refresh",
    "notices",
    "published",
    "ack",
    "mark",
];

/// The histogram of one stage.
pub fn stage_histogram(stage: &'static str) -> metrics::Histogram {
    metrics::histogram!(BATCH_STAGE_SECONDS, "stage" => stage)
}

/// Records how long a relay batch spent in one stage.
pub fn record_stage(stage: &'static str, started: std::time::Instant) {
    stage_histogram(stage).record(started.elapsed().as_secs_f64());
}

use crate::metric_catalogue::{Listed, Metric};

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::gauge("sightline_outbox_backlog", Unit::Count, "Outbox events committed but not yet published (sampled every second)."),
    Metric::gauge("sightline_outbox_oldest_pending_age_seconds", Unit::Seconds, "Age of the oldest unpublished outbox event, 0 when none (sampled every second)."),
    Metric::gauge("sightline_outbox_dead_letters", Unit::Count, "Events parked in the dead-letter table right now."),
    Metric::gauge("sightline_projection_lag_seconds", Unit::Seconds, "Projection lag: now minus the commit time of the oldest unpublished event, 0 when none."),
    Metric::gauge("sightline_projection_lag_events", Unit::Count, "Projection lag in events (the outbox backlog)."),
    Metric::gauge("sightline_lag_slo_seconds", Unit::Seconds, "The projection lag SLO (LAG_SLO_MS)."),
    Metric::gauge("sightline_lag_slo_breached", Unit::Count, "1 while projection lag is above the SLO, else 0."),
    Metric::gauge("sightline_postgres_up", Unit::Count, "1 when this instance's last pipeline sample reached PostgreSQL, else 0."),
    Metric::gauge("sightline_elasticsearch_up", Unit::Count, "1 when this instance's last pipeline sample reached Elasticsearch, else 0."),
    Metric::gauge(PIPELINE_FAILING, Unit::Count, "1 for the kind of failure (Elasticsearch error type, elasticsearch_unreachable, postgres, other) that keeps this instance's relay failing right now; 0 for kinds that are over."),
    Metric::gauge(PIPELINE_FAILING_SINCE, Unit::Seconds, "Unix time the current run of failed relay batches began on this instance, 0 when the relay is not failing."),
    Metric::counter("sightline_status_samples_total", "Pipeline samples taken (outbox query + Elasticsearch ping): one a second, shared by every /status reader."),
    Metric::counter(BATCH_FAILURES, "Relay batches that failed, by kind of failure; their events are retried with backoff.").listed(Listed::OnFirstUse),
    Metric::seconds(BATCH_STAGE_SECONDS, "Time a batch spends in each stage, where visibility latency goes. The relay: waiting (an event's creation to its claim), claim, then with the in-process bus count, write, refresh, notices, mark; with NATS publish (first publish to last PubAck) and relayed (marking, commit). A NATS projector: delivery (an event stored in the stream to this process having it) and batching (to its batch starting), both per event, then count, write, refresh, notices, published, ack.").listed(Listed::OnFirstUse),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breach_is_reported_once_and_so_is_the_recovery() {
        let start = Instant::now();
        let mut slo = SloWatch::default();
        assert_eq!(slo.observe(false, start), None);
        assert_eq!(slo.observe(true, start), Some(Transition::Breached));
        assert_eq!(slo.observe(true, start + Duration::from_secs(1)), None);
        assert!(slo.breached());
        assert_eq!(
            slo.observe(false, start + Duration::from_secs(3)),
            Some(Transition::Recovered {
                after: Duration::from_secs(3)
            })
        );
        assert_eq!(slo.observe(false, start + Duration::from_secs(4)), None);
        assert_eq!(
            slo.observe(true, start + Duration::from_secs(5)),
            Some(Transition::Breached)
        );
    }

    #[test]
    fn pipeline_stats_start_empty_and_keep_the_last_batch() {
        let stats = PipelineStats::default();
        assert_eq!(stats.last_batch(), None);
        stats.record_batch(3);
        stats.record_batch(7);
        assert_eq!(stats.last_batch().map(|b| b.1), Some(7));
    }
}
