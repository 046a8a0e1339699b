//! Logging and metrics set-up: the one recorder, and every metric of this
//! crate described to it (each module keeps its own table).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Logs to stderr; `LOG_FORMAT=json` for structured logs, `RUST_LOG` to filter.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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
