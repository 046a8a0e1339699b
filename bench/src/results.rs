//! What one run measured, part by part: filled in by `run`, read by the
//! table and `latest.json` in `report`.

use crate::load::LoadResult;
use crate::stats::{self, round2};
use crate::{bare_write, bus, capacity, floor, replay};

/// What one run measured (a part left out with `--only` stays `None`).
#[derive(Default)]
pub struct Results {
    pub floor: Option<floor::Floor>,
    pub visibility: Vec<(u32, LoadResult)>,
    pub seed: Option<(LoadResult, LoadResult)>,
    pub steps: Vec<(u32, LoadResult, bool)>,
    pub max_sustained: Option<u32>,
    /// `pgbench` running the write transaction's SQL alone: the anchor the
    /// maximum rates are compared with.
    pub bare_write: Option<bare_write::BareWrite>,
    /// The same, with `READ_STORE=postgres`.
    pub pg_visibility: Vec<(u32, LoadResult)>,
    pub pg_steps: Vec<(u32, LoadResult, bool)>,
    pub pg_max_sustained: Option<u32>,
    pub sse: Option<capacity::Capacity>,
    /// Per layout (`inprocess`, `nats`, `nats-2-projectors`): the 200/s
    /// scenario and the maximum sustained rate.
    pub bus: Vec<bus::BusResult>,
    /// The disk's fdatasync latency (`pg_test_fsync`).
    pub fsync: Option<bus::Fsync>,
    /// 200/s with the streams spread over n web instances, per n.
    pub fanout: Vec<(usize, LoadResult)>,
    /// 200/s in process with journeys recorded (`true`) and not, alternately.
    pub journeys: Vec<(bool, LoadResult)>,
    /// The floor again after each visibility step and after the maximum
    /// search: the machine's noise, measured through the run.
    pub floors: Vec<floor::Floor>,
    pub replay: Option<replay::Replay>,
}

impl Results {
    /// The floor the targets compare with: the median of every floor
    /// measured in the run (the first and the interleaved ones).
    pub fn floor_p50(&self) -> Option<f64> {
        let mut all: Vec<f64> = self
            .floor
            .iter()
            .chain(&self.floors)
            .map(floor::Floor::p50_sum)
            .collect();
        if all.is_empty() {
            return None;
        }
        all.sort_by(f64::total_cmp);
        Some(stats::percentile(&all, 50.0))
    }

    /// Every floor of the run, in the order measured.
    pub fn floor_samples(&self) -> Vec<f64> {
        self.floor
            .iter()
            .chain(&self.floors)
            .map(|f| round2(f.p50_sum()))
            .collect()
    }
}
