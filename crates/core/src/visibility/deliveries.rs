//! The first time each notice reached a client (the journey's `sent`
//! stage), noted by this instance's event streams and long polls as they
//! send, and written to the notice log in batches: one statement per
//! [`FLUSH_EVERY`] for everything sent meanwhile, never a round trip per
//! notice on the path that sends it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::shutdown::Shutdown;
use crate::visibility::notice_log;

/// How often what was sent is written. A journey read right after its
/// notice was sent may lack `sent` for up to this long.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Most sends held between flushes; past it new ones are dropped (their
/// journeys lack `sent`), so a database that does not answer costs bounded
/// memory.
const MAX_HELD: usize = 100_000;

/// How a notice reached its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `GET /api/events` (live or replayed).
    Stream,
    /// `GET /api/orders/{id}/visibility` answering visible.
    Poll,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Stream => "stream",
            Via::Poll => "poll",
        }
    }
}

/// This instance's sends not yet written.
pub struct Deliveries {
    /// How this instance names itself in a journey (`host:port`).
    instance: String,
    /// False with `RECORD_JOURNEYS=false`: nothing is noted.
    enabled: bool,
    held: Mutex<HashMap<i64, (DateTime<Utc>, Via)>>,
}

impl Deliveries {
    pub fn new(instance: String, enabled: bool) -> Self {
        Self {
            instance,
            enabled,
            held: Mutex::default(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Notes that the notice `seq` was sent now; the earliest send of it
    /// this instance saw is the one kept.
    pub fn sent(&self, seq: i64, via: Via) {
        if seq <= 0 || !self.enabled {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() < MAX_HELD {
            held.entry(seq).or_insert((Utc::now(), via));
        }
    }

    fn take(&self) -> HashMap<i64, (DateTime<Utc>, Via)> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes what was sent since the last flush (nothing when nothing was).
    pub async fn flush(&self, db: &PgPool) -> sqlx::Result<()> {
        let held = self.take();
        if held.is_empty() {
            return Ok(());
        }
        let (mut seqs, mut ats, mut vias) = (
            Vec::with_capacity(held.len()),
            Vec::with_capacity(held.len()),
            Vec::with_capacity(held.len()),
        );
        for (seq, (at, via)) in held {
            seqs.push(seq);
            ats.push(at);
            vias.push(via.as_str());
        }
        notice_log::record_sent(db, &seqs, &ats, &vias, &self.instance).await?;
        Ok(())
    }
}

/// Writes this instance's sends every [`FLUSH_EVERY`] until shutdown, then
/// once more. A failed write is dropped (logged): journeys are a view of the
/// pipeline, not part of its promise, and must never hold it up.
pub async fn run(deliveries: std::sync::Arc<Deliveries>, db: PgPool, mut shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = ticks.tick() => {}
        }
        if let Err(e) = deliveries.flush(&db).await {
            tracing::warn!(error = %e, "cannot record when notices were sent");
        }
    }
    if let Err(e) = deliveries.flush(&db).await {
        tracing::warn!(error = %e, "cannot record when notices were sent");
    }
}

/// This machine's name and `port`: how an instance names itself in the
/// journeys it sends (`INSTANCE_NAME` overrides it).
pub fn instance_name(port: u16) -> String {
    if let Ok(name) = std::env::var("INSTANCE_NAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sightline".to_owned());
    format!("{host}:{port}")
}
