//! Resuming far behind: a client cut off `n` notices ago reconnects with its
//! `Last-Event-ID` and gets them all (the paged replay from the log, then
//! live). Timed from the connect to the last notice, on a server of its own.

use std::time::{Duration, Instant};

use anyhow::bail;
use sightline_core::visibility::notice_log::{self, NewNotice};
use uuid::Uuid;

use super::server::Bench;
use super::sse;

pub struct Replay {
    pub notices: usize,
    pub received: usize,
    pub seconds: f64,
}

/// Notices recorded per call of the notice log's `record`.
const RECORD_BATCH: usize = 1_000;

pub async fn measure(bench: &Bench, notices: usize) -> anyhow::Result<Replay> {
    let server = bench.start_server("replay", &[]).await?;
    let result = async {
        let users = bench.seed_users(&server, 1).await?;
        let token = bench.seed_sessions(&server, &users).await?;
        let mut left = notices;
        while left > 0 {
            let batch: Vec<NewNotice> = (0..left.min(RECORD_BATCH))
                .map(|_| NewNotice::placed(users[0], Uuid::new_v4()))
                .collect();
            notice_log::record(&server.db, &batch).await?;
            left -= batch.len();
        }
        // The hub reads the new notices too; let it finish before timing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started = Instant::now();
        // `0`: the cursor before the user's first notice.
        let mut stream =
            sse::connect_resuming(server.addr, None, "/api/events", Some(&token[0]), Some("0"))
                .await?;
        let mut received = 0;
        while received < notices {
            match tokio::time::timeout(Duration::from_secs(120), stream.next()).await {
                Ok(Ok(Some(event))) if event.kind == "order-visible" => received += 1,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => bail!("the stream closed after {received} notices"),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("no notice for 120 s after {received}"),
            }
        }
        anyhow::Ok(Replay {
            notices,
            received,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
    .await;
    server.stop(bench).await?;
    result
}
