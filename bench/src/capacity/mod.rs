//! SSE capacity: how many idle `/api/events` streams one instance holds,
//! its resident memory per stream — with one user per stream (each user
//! costs the hub a notice buffer) and with a few users sharing them all —
//! and how fast a notice still reaches one stream while all are connected.
//!
//! A process here may hold at most 20,000 open files, so the client side is
//! split over several child processes (`bench sse-clients`), each binding its
//! own loopback source address (127.0.0.2, 127.0.0.3, …). Those processes,
//! and the bare server of the floor, are in `children`; this file is the
//! measurement that drives them.

mod children;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use sightline_core::visibility::notice_log::{self, NewNotice};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

use children::ClientProcess;
pub use children::{ClientArgs, clients, floor_server};

use super::load::{self, Streams};
use super::server::{Bench, Server, rss_bytes};
use super::stats::Summary;

/// Streams per client process (well below the 20,000 open files allowed).
const PER_PROCESS: usize = 4_500;
/// Users that own the idle streams of the shared shape (sessions are per
/// stream): one, so a notice to that user fans out to every idle stream.
pub const IDLE_USERS: usize = 1;

/// Points of the memory curve (streams open), one user per stream.
const CURVE_POINTS: [usize; 3] = [2_000, 8_000, 18_000];

/// Notices recorded one at a time for the hub-only latency probe.
const HUB_SAMPLES: usize = 300;

/// The shared shape holds hundreds of streams per user, and each client
/// process thousands from one address: far past the default caps, which
/// are not what this measures. That includes the connection cap per address
/// (a tenth of the connection limit by default: about 2,000 here, which
/// held the full run of 2026-12-05 to 10,453 streams).
const STREAM_CAPS_OFF: &[(&str, &str)] = &[
    ("MAX_STREAMS_PER_USER", "1000000"),
    ("MAX_STREAMS_PER_ADDRESS", "1000000"),
    ("MAX_CONNECTIONS_PER_ADDRESS", "1000000"),
];

pub struct Capacity {
    pub target: usize,
    /// Streams open at the end (idle ones plus the probe).
    pub connections: usize,
    pub failed: usize,
    /// Server RSS (and streams open) after the first tenth of the streams,
    /// and after all of them.
    pub rss_before: u64,
    pub rss_after: u64,
    pub streams_before: usize,
    pub streams_after: usize,
    /// Growth per stream between the two (the shared shape: `IDLE_USERS`
    /// users own all the idle streams).
    pub rss_per_connection: f64,
    /// The same with one user per stream, on a server of its own.
    pub per_user: PerUser,
    /// The same for a bare axum SSE server.
    pub floor_rss_per_connection: f64,
    /// 201 → `order-visible` on the probe stream, ms.
    pub notice: Summary,
    pub notice_lost: usize,
    /// Recorded with `notice_log::record` → arrival on the probe stream, ms
    /// (the hub alone, without the pipeline).
    pub hub_notice: Summary,
    pub hub_notice_lost: usize,
    /// Idle streams that received the fan-out notice (one notice recorded
    /// for the user owning them all), and when, ms after it was recorded.
    pub fanout_received: usize,
    pub fanout: Summary,
}

/// Memory per stream when every idle stream is its own user's (so each
/// costs the hub a notice buffer as well), on a server of its own.
pub struct PerUser {
    /// (streams open, server RSS) at each point of `CURVE_POINTS` reached.
    pub curve: Vec<(usize, u64)>,
    pub connected: usize,
    pub failed: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub streams_before: usize,
    pub rss_per_connection: f64,
}

pub async fn measure(
    bench: &Bench,
    streams: usize,
    probe_duration: Duration,
) -> anyhow::Result<Capacity> {
    let floor = floor_memory(bench, streams).await?;
    let per_user = one_user_per_stream(bench, streams).await?;
    let server = bench.start_server("sse-capacity", STREAM_CAPS_OFF).await?;
    let result = run(bench, &server, streams, probe_duration).await;
    server.stop(bench).await?;
    Ok(Capacity {
        floor_rss_per_connection: floor,
        per_user,
        ..result?
    })
}

async fn one_user_per_stream(bench: &Bench, streams: usize) -> anyhow::Result<PerUser> {
    let server = bench.start_server("sse-per-user", STREAM_CAPS_OFF).await?;
    let result = async {
        let users = bench.seed_users(&server, streams).await?;
        let tokens = bench.seed_sessions(&server, &users).await?;
        let held = hold(bench, server.addr, server.pid, &tokens).await?;
        eprintln!(
            "  one user per stream: {} streams open ({} failed)",
            held.connected, held.failed
        );
        let per_user = PerUser {
            curve: held.curve.clone(),
            connected: held.connected,
            failed: held.failed,
            rss_before: held.rss_before,
            rss_after: held.rss_after,
            streams_before: held.streams_before,
            rss_per_connection: held.per_stream(),
        };
        for client in held.clients {
            client.stop().await;
        }
        anyhow::Ok(per_user)
    }
    .await;
    server.stop(bench).await?;
    result
}

/// The same streams held by a bare axum SSE server (`bench
/// sse-floor-server`, no auth, no middleware): memory per stream that is
/// axum's, hyper's and tokio's rather than Sightline's.
async fn floor_memory(bench: &Bench, streams: usize) -> anyhow::Result<f64> {
    let mut server = Command::new(std::env::current_exe()?)
        .arg("sse-floor-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to start `bench sse-floor-server`")?;
    let pid = server.id().context("sse-floor-server exited at once")?;
    let mut lines = BufReader::new(server.stdout.take().context("no stdout")?).lines();
    let line = lines
        .next_line()
        .await?
        .context("sse-floor-server said nothing")?;
    let addr: SocketAddr = line
        .strip_prefix("listening ")
        .context("sse-floor-server did not say where it listens")?
        .parse()?;
    let tokens = vec!["-".to_owned(); streams];
    let held = hold(bench, addr, pid, &tokens).await?;
    eprintln!(
        "  bare axum: {} streams open ({} failed)",
        held.connected, held.failed
    );
    let per_stream = held.per_stream();
    for client in held.clients {
        client.stop().await;
    }
    let _ = server.kill().await;
    Ok(per_stream)
}

/// Streams held by client processes, and the server's memory on the way.
struct Held {
    clients: Vec<ClientProcess>,
    connected: usize,
    failed: usize,
    /// Server RSS (and streams open) after the first tenth of the streams,
    /// and after all of them.
    rss_before: u64,
    rss_after: u64,
    streams_before: usize,
    /// (streams open, RSS) at each point of `CURVE_POINTS` passed.
    curve: Vec<(usize, u64)>,
}

impl Held {
    fn per_stream(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64
            / self.connected.saturating_sub(self.streams_before).max(1) as f64
    }
}

/// Opens one stream per token from client processes of at most
/// `PER_PROCESS` streams, each on its own loopback source address. A first
/// tenth goes first, alone, to warm up what does not grow per stream (the
/// database pool, allocator arenas); the memory per stream is the growth
/// from there to all of them. The processes start one after another, cut
/// at the points of `CURVE_POINTS`, where the server's RSS is read too.
async fn hold(
    bench: &Bench,
    server: SocketAddr,
    pid: u32,
    tokens: &[String],
) -> anyhow::Result<Held> {
    let warm_count = (tokens.len() / 10).max(1).min(tokens.len());
    let mut cuts: Vec<usize> = CURVE_POINTS
        .iter()
        .copied()
        .filter(|&p| p > warm_count && p < tokens.len())
        .collect();
    cuts.push(tokens.len());
    let mut batches: Vec<&[String]> = vec![&tokens[..warm_count]];
    let mut at = warm_count;
    for cut in cuts {
        while at < cut {
            let end = (at + PER_PROCESS).min(cut);
            batches.push(&tokens[at..end]);
            at = end;
        }
    }
    let mut clients = Vec::new();
    let (mut connected, mut failed) = (0, 0);
    let (mut rss_before, mut streams_before) = (0, 0);
    let mut curve = Vec::new();
    let started = Instant::now();
    let total = tokens.len();
    for (i, batch) in batches.iter().enumerate() {
        let file = bench.out_dir.join(format!("sse-tokens-{i}.txt"));
        std::fs::write(&file, batch.join("\n"))?;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8));
        let mut client = ClientProcess::spawn(server, source, &file).await?;
        let (ok, bad) = client.ready().await?;
        let _ = std::fs::remove_file(&file);
        clients.push(client);
        connected += ok;
        failed += bad;
        let asked: usize = batches[..=i].iter().map(|b| b.len()).sum();
        if i == 0 {
            // The warm-up batch first, alone.
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_before = rss_bytes(pid)?;
            streams_before = connected;
        } else if CURVE_POINTS.contains(&asked) && asked < total {
            tokio::time::sleep(Duration::from_secs(2)).await;
            curve.push((connected, rss_bytes(pid)?));
        }
    }
    eprintln!(
        "  {connected} streams from {} processes in {:.1} s",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_bytes(pid)?;
    curve.push((connected, rss_after));
    Ok(Held {
        clients,
        connected,
        failed,
        rss_before,
        rss_after,
        streams_before,
        curve,
    })
}

async fn run(
    bench: &Bench,
    server: &Server,
    streams: usize,
    probe_duration: Duration,
) -> anyhow::Result<Capacity> {
    // The owner of every idle stream, then the probe user.
    let users = bench.seed_users(server, IDLE_USERS + 1).await?;
    let (idle_users, probe_user) = users.split_at(IDLE_USERS);
    let owners = vec![idle_users[0]; streams];
    let idle_tokens = bench.seed_sessions(server, &owners).await?;
    let probe_token = bench.seed_sessions(server, probe_user).await?;

    let probe = Streams::open(&[server.addr], &probe_token).await?;
    // Warm the path up before the baseline.
    let warm = load::offer(
        &bench.http,
        &server.base,
        &probe_token,
        20.0,
        Duration::from_secs(1),
    )
    .await;
    probe
        .wait_for(&warm.created, load::QUIET, Duration::from_secs(10))
        .await;

    let Held {
        mut clients,
        connected,
        failed,
        rss_before,
        rss_after,
        streams_before,
        curve: _,
    } = hold(bench, server.addr, server.pid, &idle_tokens).await?;
    eprintln!("  sightline: {connected} idle streams open ({failed} failed)");

    // Notices to the probe stream, one of them, while all are connected.
    let offered = load::offer(
        &bench.http,
        &server.base,
        &probe_token,
        20.0,
        probe_duration,
    )
    .await;
    if let Some(e) = &offered.first_error {
        eprintln!("  warning: {} probe order(s) failed: {e}", offered.errors);
    }
    probe
        .wait_for(&offered.created, load::QUIET, Duration::from_secs(30))
        .await;
    let (samples, notice_lost) = {
        let visible = probe.visible.lock().unwrap();
        load::latencies(&offered.created, &visible, Instant::now())
    };

    // The hub alone: notices recorded with the notice log's own function,
    // one at a time, each timed from `record`'s return (committed) to its
    // arrival on the probe stream.
    let mut recorded = HashMap::new();
    for _ in 0..HUB_SAMPLES {
        let order_id = Uuid::new_v4();
        record(&server.db, probe_user[0], order_id).await?;
        recorded.insert(order_id, Instant::now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    probe
        .wait_for(&recorded, Duration::from_secs(5), Duration::from_secs(30))
        .await;
    let (hub_samples, hub_notice_lost) = {
        let visible = probe.visible.lock().unwrap();
        load::latencies(&recorded, &visible, Instant::now())
    };

    // Fan-out: one notice to the user owning every idle stream; each client
    // process keeps the wall-clock time each stream got it.
    record(&server.db, idle_users[0], Uuid::new_v4()).await?;
    let recorded_at = SystemTime::now();
    let fanout_started = Instant::now();
    let mut open = 0;
    let mut fanout_received = 0;
    while fanout_started.elapsed() < Duration::from_secs(30) {
        (open, fanout_received) = (0, 0);
        for client in &mut clients {
            let (o, r) = client.report().await?;
            open += o;
            fanout_received += r;
        }
        if fanout_received >= open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fanout = Vec::with_capacity(fanout_received);
    for client in &mut clients {
        for at in client.arrivals().await? {
            let ms = at
                .duration_since(recorded_at)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            fanout.push(ms);
        }
    }
    for client in clients {
        client.stop().await;
    }
    let probe_open = usize::from(probe.closed() == 0);
    drop(probe);

    let connections = open + probe_open;
    Ok(Capacity {
        target: streams,
        connections,
        failed,
        rss_before,
        rss_after,
        streams_before: streams_before + 1,
        streams_after: connected + 1,
        rss_per_connection: rss_after.saturating_sub(rss_before) as f64
            / connected.saturating_sub(streams_before).max(1) as f64,
        floor_rss_per_connection: f64::NAN,
        per_user: PerUser {
            curve: Vec::new(),
            connected: 0,
            failed: 0,
            rss_before: 0,
            rss_after: 0,
            streams_before: 0,
            rss_per_connection: f64::NAN,
        },
        notice: Summary::of(samples),
        notice_lost,
        hub_notice: Summary::of(hub_samples),
        hub_notice_lost,
        fanout_received,
        fanout: Summary::of(fanout),
    })
}

/// Records one `order-visible` notice for `user` through the server's own
/// notice log (as the projector does once the order is searchable).
pub async fn record(db: &sqlx::PgPool, user: Uuid, order_id: Uuid) -> anyhow::Result<()> {
    notice_log::record(db, &[NewNotice::placed(user, order_id)])
        .await
        .context("Failed to record a notice")?;
    Ok(())
}
