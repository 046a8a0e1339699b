//! How a module lists the metrics it records: each keeps a `METRICS` table
//! beside the code that records them (name, kind, unit, help, and whether
//! the family is in `/metrics` before its first measurement), and start-up
//! describes them all once (`telemetry::metrics_handle` for this crate,
//! `web::describe_metrics` for HTTP's). A metric's help text then lives next
//! to the one place that knows what it counts.

use metrics::Unit;

/// What kind of family a metric is.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Whether a family is listed before its first measurement. Listing
/// counters at zero and histograms empty lets `rate()` see them from the
/// first scrape (absent is not zero); a gauge is never listed early, since
/// a zero would claim a measurement.
#[derive(Clone, Copy, Debug)]
pub enum Listed {
    /// From its first measurement on.
    OnFirstUse,
    /// From the start: a counter at zero, a histogram empty.
    FromStart,
    /// A counter at zero for each value of one label.
    ForEach(&'static str, &'static [&'static str]),
}

/// One metric family a module records.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    pub listed: Listed,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            unit: Unit::Count,
            help,
            listed: Listed::FromStart,
        }
    }

    pub const fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            unit,
            help,
            listed: Listed::OnFirstUse,
        }
    }

    pub const fn seconds(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Histogram,
            unit: Unit::Seconds,
            help,
            listed: Listed::FromStart,
        }
    }

    /// The same family, listed as `listed` says.
    pub const fn listed(self, listed: Listed) -> Self {
        Self { listed, ..self }
    }
}

/// Describes every metric of `tables` to the process's recorder and lists
/// those that are listed from the start.
pub fn describe(tables: &[&[Metric]]) {
    for metric in tables.iter().flat_map(|table| table.iter()) {
        let Metric {
            name,
            kind,
            unit,
            help,
            listed,
        } = *metric;
        match kind {
            Kind::Counter => metrics::describe_counter!(name, unit, help),
            Kind::Gauge => metrics::describe_gauge!(name, unit, help),
            Kind::Histogram => metrics::describe_histogram!(name, unit, help),
        }
        match (kind, listed) {
            (_, Listed::OnFirstUse) | (Kind::Gauge, _) => {}
            (Kind::Counter, Listed::FromStart) => metrics::counter!(name).increment(0),
            (Kind::Histogram, Listed::FromStart) => {
                let _ = metrics::histogram!(name);
            }
            (_, Listed::ForEach(label, values)) => {
                for value in values {
                    metrics::counter!(name, label => *value).increment(0);
                }
            }
        }
    }
}
