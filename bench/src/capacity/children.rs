//! The capacity test's child processes, and how the parent speaks to them:
//! `bench sse-clients` holds idle streams from one loopback source address
//! (a process may hold at most 20,000 open files, so there are several),
//! and `bench sse-floor-server` is the bare axum SSE server the floor's
//! memory per stream is measured on.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::sse;

#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// The server to connect to.
    #[arg(long)]
    server: SocketAddr,
    /// Local address to bind before connecting.
    #[arg(long)]
    source: IpAddr,
    /// File with one session token per line: one stream each.
    #[arg(long)]
    tokens: PathBuf,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// A `bench sse-clients` child, spoken to over its stdin and stdout.
pub(super) struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    pub(super) async fn spawn(
        server: SocketAddr,
        source: IpAddr,
        tokens: &PathBuf,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("sse-clients")
            .arg("--server")
            .arg(server.to_string())
            .arg("--source")
            .arg(source.to_string())
            .arg("--tokens")
            .arg(tokens)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("Failed to start `bench sse-clients`")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    async fn line(&mut self, word: &str) -> anyhow::Result<(usize, usize)> {
        let line = tokio::time::timeout(Duration::from_secs(600), self.stdout.next_line())
            .await
            .context("sse-clients did not answer in 10 minutes")??
            .context("sse-clients exited")?;
        let mut parts = line.split_whitespace();
        if parts.next() != Some(word) {
            bail!("sse-clients said `{line}`, expected `{word} …`");
        }
        let mut number =
            || -> anyhow::Result<usize> { Ok(parts.next().context("short line")?.parse()?) };
        Ok((number()?, number()?))
    }

    /// (connected, failed) once every connection was tried.
    pub(super) async fn ready(&mut self) -> anyhow::Result<(usize, usize)> {
        self.line("ready").await
    }

    /// When each stream got its first `order-visible` (wall clock).
    pub(super) async fn arrivals(&mut self) -> anyhow::Result<Vec<SystemTime>> {
        self.stdin.write_all(b"times\n").await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .context("sse-clients did not answer in a minute")??
            .context("sse-clients exited")?;
        let mut parts = line.split_whitespace();
        if parts.next() != Some("times") {
            bail!("sse-clients said `{line}`, expected `times …`");
        }
        parts
            .map(|micros| Ok(UNIX_EPOCH + Duration::from_micros(micros.parse()?)))
            .collect()
    }

    /// (open, received an `order-visible`).
    pub(super) async fn report(&mut self) -> anyhow::Result<(usize, usize)> {
        self.stdin.write_all(b"report\n").await?;
        self.stdin.flush().await?;
        self.line("alive").await
    }

    pub(super) async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The `sse-floor-server` sub-mode: the floor's bare axum SSE server on a
/// free port (`listening <addr>` on stdout), until stdin closes.
pub async fn floor_server() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let (_tx, app) = crate::floor::sse_app("/api/events");
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        _ = async {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        } => {}
    }
    std::process::exit(0);
}

/// The `sse-clients` sub-mode: opens one stream per token from `source`,
/// says `ready <connected> <failed>`, then answers `report` with
/// `alive <open> <received>` until its stdin closes.
pub async fn clients(args: ClientArgs) -> anyhow::Result<()> {
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let reported_error = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let total = tokens.len();
    for token in tokens {
        let (connected, failed, open, received, reported_error, gate, arrivals) = (
            connected.clone(),
            failed.clone(),
            open.clone(),
            received.clone(),
            reported_error.clone(),
            gate.clone(),
            arrivals.clone(),
        );
        let (server, source) = (args.server, args.source);
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = tokio::time::timeout(Duration::from_secs(60), async {
                let mut stream =
                    sse::connect(server, Some(source), "/api/events", Some(&token)).await?;
                stream.expect("ready").await?;
                anyhow::Ok(stream)
            })
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
            let mut stream = match opened {
                Ok(stream) => stream,
                Err(e) => {
                    if reported_error.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("sse-clients {source}: a stream failed to open: {e:#}");
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            open.fetch_add(1, Ordering::Relaxed);
            connected.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            let mut seen = false;
            while let Ok(Some(event)) = stream.next().await {
                if !seen && event.kind == "order-visible" {
                    seen = true;
                    let at = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros());
                    arrivals.lock().unwrap().push(at);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "ready {} {}",
        connected.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await? {
        match command.trim() {
            "report" => println!(
                "alive {} {}",
                open.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed)
            ),
            "times" => {
                let times = arrivals.lock().unwrap();
                let mut line = String::from("times");
                for at in times.iter() {
                    line.push_str(&format!(" {at}"));
                }
                println!("{line}");
            }
            _ => {}
        }
    }
    // Closing every socket at once is the quickest way out.
    std::process::exit(0);
}
