//! The HTTP/1.1 accept loop.
//!
//! `axum::serve` detects HTTP/2 on every connection by reading its first
//! bytes ahead of hyper; hyper then reads the rest of the request into a
//! buffer that already holds them, which doubles the buffer to 16 KiB — and
//! an idle SSE stream keeps it for as long as it lives. Serving HTTP/1.1
//! straight through hyper keeps it at 8 KiB (nothing here speaks cleartext
//! HTTP/2: browsers only use it over TLS, which a proxy in front terminates).
//!
//! A connection whose first request is an event stream is served by
//! `event_streams` instead, without hyper's 16 KiB of buffers.
//!
//! The loop also caps open connections (`MAX_CONNECTIONS`, and each client
//! address's share of them, `MAX_CONNECTIONS_PER_ADDRESS`) and records each
//! connection's peer address for the per-address limits.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::event_streams::{self, FirstRequest, Rewind};
use super::extract::client_addr::limit_key;

/// Serves `router` until `stop` resolves, then gives the open connections up
/// to `drain` to finish (SSE streams end at once on the application's
/// shutdown; a client that stopped reading would otherwise hold the exit).
///
/// At most `max_connections` are open at once, and at most
/// `max_per_address` from one client address: past either a new connection
/// gets a bare 503 `too_many_connections` and is closed, and the open ones
/// (streams included) go on. Each request carries its peer's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
    drain: Duration,
    max_connections: usize,
    max_per_address: usize,
) {
    let connections = GracefulShutdown::new();
    // Tells connections still reading their first request head to close.
    let (stopping, _) = tokio::sync::watch::channel(false);
    let open = Arc::new(Semaphore::new(max_connections));
    let by_address = Arc::new(PerAddress::new(max_per_address));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    metrics::gauge!("sightline_http_connections_max").set(max_connections as f64);
    let mut full = false;
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: accepting again at once
                    // would spin; the open connections go on meanwhile.
                    tracing::error!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("sightline_connections_refused_total", "scope" => "instance")
                .increment(1);
            if !full {
                full = true;
                tracing::warn!(
                    max_connections,
                    "at the connection limit; refusing new connections"
                );
            }
            // Past a few refusals in flight, close without a word.
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tokio::spawn(refuse(stream, refusal, AT_THE_LIMIT));
            }
            continue;
        };
        // Checked after the instance's place is taken, so that a refusal
        // here gives that place back (the permit drops) at once.
        let Some(share) = by_address.take(peer.ip()) else {
            drop(permit);
            metrics::counter!("sightline_connections_refused_total", "scope" => "address")
                .increment(1);
            tracing::debug!(peer = %peer.ip(), max_per_address, "an address is at its share of the connections");
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tokio::spawn(refuse(stream, refusal, AT_THE_ADDRESS_LIMIT));
            }
            continue;
        };
        full = false;
        metrics::gauge!("sightline_http_connections").increment(1.0);
        // Notices are small writes that should leave at once.
        let _ = stream.set_nodelay(true);
        // A `Router` clone is a reference count, not a copy of the routes.
        let router = router.clone();
        // Held until the connection ends, so the drain waits for it.
        let watcher = connections.watcher();
        let mut stopping = stopping.subscribe();
        tokio::spawn(async move {
            let mut stream = stream;
            let first = tokio::select! {
                first = tokio::time::timeout(
                    HEAD_TIMEOUT,
                    event_streams::read_first(&mut stream, STREAM_PATHS),
                ) => first.ok().and_then(Result::ok),
                // Nothing asked yet: nothing to finish.
                _ = stopping.wait_for(|stopping| *stopping) => None,
            };
            match first {
                Some(FirstRequest::Stream(request)) => {
                    let _watched = watcher;
                    drop(stopping);
                    event_streams::serve(stream, router, request, peer).await;
                }
                Some(FirstRequest::Other(read)) => {
                    // The peer's address rides along in every request's
                    // extensions, as axum's `ConnectInfo` (see `client_addr`).
                    let service = router.map_request(move |request: hyper::Request<Incoming>| {
                        let mut request = request.map(Body::new);
                        request.extensions_mut().insert(ConnectInfo(peer));
                        request
                    });
                    let connection = http1::Builder::new()
                        // Enables the default 30 s limit on reading a request head.
                        .timer(TokioTimer::new())
                        .serve_connection(
                            TokioIo::new(Rewind::new(stream, read)),
                            TowerToHyperService::new(service),
                        );
                    // Boxed: the task's own size is what every idle stream pays.
                    if let Err(e) = Box::pin(watcher.watch(connection)).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                Some(FirstRequest::Closed) | None => {}
            }
            // Every way a connection ends comes here (a panic unwinds
            // through the drops too): both places are given back.
            drop(share);
            drop(permit);
            metrics::gauge!("sightline_http_connections").decrement(1.0);
        });
    }
    let _ = stopping.send(true);
    drop(listener);
    if tokio::time::timeout(drain, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "connections still open after the drain; closing them"
        );
    }
}

/// Event stream paths: when one is a connection's first request, the
/// stream is served without hyper's buffers (see `event_streams`).
const STREAM_PATHS: &[&str] = &[crate::api::events::EVENTS_PATH];

/// How long a connection may take to send its first request head (hyper's
/// own limit for later heads on the connection).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Refusals answered at once; more are closed without an answer, so a flood
/// of connections cannot make refusing them cost more than a few sockets.
const REFUSING_AT_ONCE: usize = 64;

const AT_THE_LIMIT: &str = r#"{"error":"the server is at its connection limit, try again shortly","code":"too_many_connections"}"#;
const AT_THE_ADDRESS_LIMIT: &str = r#"{"error":"too many connections are open from this address; close some or try again shortly","code":"too_many_connections"}"#;

/// A connection past a limit: a 503 in plain HTTP/1.1, then close. The
/// request is read and thrown away until the client closes (at most 1 s), so
/// that closing does not reset the connection before the answer is read.
async fn refuse(mut stream: TcpStream, _refusal: OwnedSemaphorePermit, body: &'static str) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// Open connections per client address, each address up to its share.
///
/// The address is the TCP peer's, by [`limit_key`] (IPv6 by /64, as the
/// other per-address limits count): at accept time no request has been
/// read, so `TRUSTED_PROXIES`' forwarded-for headers cannot apply — behind
/// a proxy every client shares the proxy's address, and the share must be
/// raised to the whole limit (or the proxy limits per client itself).
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::default(),
        }
    }

    /// One more connection from `peer`, or `None` at its share. O(1): one
    /// hash map entry per address with connections open, none for the rest.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<AddressShare> {
        let key = limit_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressShare {
            table: self.clone(),
            key,
        })
    }
}

/// One open connection counted against its address; given back on drop.
struct AddressShare {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        // An address with nothing open leaves the map, so it holds only
        // addresses with connections (at most `max_connections` entries).
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

use metrics::Unit;
use sightline_core::metric_catalogue::{Listed, Metric};

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::gauge("sightline_http_connections", Unit::Count, "Open HTTP connections on this instance."),
    Metric::gauge("sightline_http_connections_max", Unit::Count, "The connection limit in force (MAX_CONNECTIONS, or sized from the open-file limit)."),
    // Both scopes listed from the start, so a rate over them is never empty.
    Metric::counter("sightline_connections_refused_total", "Connections refused by scope: instance (MAX_CONNECTIONS) or address (one client address at its share, MAX_CONNECTIONS_PER_ADDRESS).").listed(Listed::ForEach("scope", &["instance", "address"])),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_an_ipv6_network_counts_as_one() {
        let table = Arc::new(PerAddress::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = table.take(a).unwrap();
        let _second = table.take(a).unwrap();
        assert!(table.take(a).is_none());
        assert!(table.take("10.0.0.2".parse().unwrap()).is_some());
        drop(first);
        assert!(table.take(a).is_some());

        let _v6 = table.take("2001:db8::1".parse().unwrap()).unwrap();
        let _v6b = table.take("2001:db8::2".parse().unwrap()).unwrap();
        assert!(table.take("2001:db8::ffff".parse().unwrap()).is_none());
    }
}
