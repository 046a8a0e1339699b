//! Logging and metrics set-up: the one recorder, and every metric of this
//! crate described to it (each module keeps its own table).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

pub mod traces;

/// Logs to stderr; `LOG_FORMAT=json` for structured logs, `RUST_LOG` to filter.
///
/// With `traces_as` (the service name, see [`traces::service_name`]) and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, the workspace's spans are also exported
/// over OTLP ([`traces`]); call [`traces::shutdown`] before exiting to send
/// the last ones. Otherwise no trace layer is installed at all.
pub fn init_tracing(traces_as: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = std::env::var("LOG_FORMAT").as_deref() == Ok("json");
    let tracer = match traces_as.filter(|_| traces::endpoint_configured()) {
        Some(service) => match traces::install(service) {
            Ok(tracer) => Some(tracer),
            Err(e) => {
                eprintln!("sightline: traces are not exported: {e}");
                None
            }
        },
        None => None,
    };
    let Some(tracer) = tracer else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = if json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        return;
    };
    use tracing::Level;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = if json {
        log.json().boxed()
    } else {
        log.boxed()
    };
    // The traces have a filter of their own: `RUST_LOG=warn` quiets the log
    // without emptying the traces, and the dependencies' spans stay out.
    let spans = Targets::new()
        .with_target("sightline", Level::INFO)
        .with_target("sightline_core", Level::INFO)
        .with_target("sightline_web", Level::INFO)
        .with_target(traces::UNEXPORTED, tracing::level_filters::LevelFilter::OFF);
    let _ = tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans),
        )
        .try_init();
}

/// The process-wide Prometheus recorder (installed once: the `metrics` facade
/// has one global recorder, and tests build many applications per process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static buckets are valid")
                .install_recorder()
                .expect("Failed to install the Prometheus recorder");
            // Each table lives beside the code that records its metrics.
            crate::metric_catalogue::describe(&[
                crate::write_side::METRICS,
                crate::relay::METRICS,
                crate::bus::nats::METRICS,
                crate::projector::METRICS,
                crate::projector::nats_consumer::METRICS,
                crate::read_side::index::writes::METRICS,
                crate::visibility::hub::METRICS,
                crate::monitoring::METRICS,
            ]);
            crate::auth::throttle::describe_metrics();
            handle
        })
        .clone()
}
