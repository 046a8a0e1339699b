//! The HTTP/1.1 accept loop.
//!
//! `axum::serve` detects HTTP/2 on every connection by reading its first
//! bytes ahead of hyper; hyper then reads the rest of the request into a
//! buffer that already holds them, which doubles the buffer to 16 KiB — and
//! an idle SSE stream keeps it for as long as it lives. Serving HTTP/1.1
//! straight through hyper keeps it at 8 KiB (nothing here speaks cleartext
//! HTTP/2: browsers only use it over TLS, which a proxy in front terminates).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `router` until `stop` resolves, then gives the open connections up
/// to `drain` to finish (SSE streams end at once on the application's
/// shutdown; a client that stopped reading would otherwise hold the exit).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
    drain: Duration,
) {
    let connections = GracefulShutdown::new();
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
        // Notices are small writes that should leave at once.
        let _ = stream.set_nodelay(true);
        // A `Router` clone is a reference count, not a copy of the routes.
        // The peer's address rides along in every request's extensions, as
        // axum's `ConnectInfo` (see `client_addr`).
        let service = router
            .clone()
            .map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = http1::Builder::new()
            // Enables the default 30 s limit on reading a request head.
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
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
