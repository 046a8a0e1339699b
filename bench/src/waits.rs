//! What the server's PostgreSQL sessions wait on during a load step:
//! `pg_stat_activity` sampled every 50 ms, counting each active session's
//! wait event (`cpu` when it waits on nothing). Evidence for where a rate
//! stops: a queue lock at commit, the WAL flush, a lock of our own.

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<HashMap<String, u64>>,
}

/// Starts sampling the sessions of this run's databases (one server runs
/// at a time).
pub fn start(admin: PgPool) -> Sampler {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return counts,
            }
            let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'cpu'), count(*)
                 FROM pg_stat_activity
                 WHERE datname LIKE $1 AND state = 'active'
                   AND pid <> pg_backend_pid()
                 GROUP BY 1",
            )
            .bind(format!("bench{}\\_%", std::process::id()))
            .fetch_all(&admin)
            .await;
            for (event, n) in rows.unwrap_or_default() {
                *counts.entry(event).or_default() += n as u64;
            }
        }
    });
    Sampler { stop, task }
}

impl Sampler {
    /// The counts, most frequent first.
    pub async fn finish(self) -> Vec<(String, u64)> {
        let _ = self.stop.send(true);
        let mut counts: Vec<(String, u64)> =
            self.task.await.unwrap_or_default().into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts
    }
}
