//! An HTTP proxy in front of Elasticsearch that can hold `_refresh`
//! requests, so a test decides when a batch's refresh reaches Elasticsearch
//! (or when its answer reaches the projector) — no sleeping and hoping.
//!
//! It runs on a thread and runtime of its own, so it keeps serving while a
//! test's runtime is blocked (e.g. in a `Drop` that deletes the indices
//! through it).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use tokio::sync::{Semaphore, watch};

use crate::helpers::WAIT;

/// Where a held refresh waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Refreshes pass.
    Off,
    /// A refresh waits before it reaches Elasticsearch: nothing written
    /// since the last refresh is searchable.
    BeforeForwarding,
    /// Elasticsearch refreshes at once, but the answer waits: the projector
    /// still thinks its refresh is running.
    AfterForwarding,
}

/// What went through the proxy so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// `_refresh` requests that reached the proxy.
    pub refreshes_arrived: usize,
    /// `_refresh` requests Elasticsearch has answered.
    pub refreshes_done: usize,
    /// `_bulk` requests Elasticsearch has answered.
    pub bulks_done: usize,
}

struct Inner {
    target: String,
    client: reqwest::Client,
    hold: Mutex<Hold>,
    /// One permit lets one held refresh go on.
    permits: Semaphore,
    seen: watch::Sender<Seen>,
    /// The body of every `_bulk` request, as it arrived.
    bulks: Mutex<Vec<String>>,
}

pub struct EsProxy {
    /// `http://127.0.0.1:<port>`, for `ELASTICSEARCH_URL`.
    pub url: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl EsProxy {
    /// A proxy to `target` (an Elasticsearch URL); nothing held.
    pub fn start(target: &str) -> EsProxy {
        let inner = Arc::new(Inner {
            target: target.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            hold: Mutex::new(Hold::Off),
            permits: Semaphore::new(0),
            seen: watch::Sender::new(Seen::default()),
            bulks: Mutex::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(forward).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        EsProxy {
            url: format!("http://127.0.0.1:{port}"),
            inner,
            stop: Some(stop),
        }
    }

    /// Holds refreshes from now on (`Hold::Off`: lets them pass; those
    /// already held still wait for [`release`](Self::release)).
    pub fn hold_refreshes(&self, hold: Hold) {
        *self.inner.hold.lock().unwrap() = hold;
    }

    /// Lets `n` held refreshes go on (also ones not held yet).
    pub fn release(&self, n: usize) {
        self.inner.permits.add_permits(n);
    }

    /// Holds nothing more and lets every held refresh go.
    pub fn open(&self) {
        self.hold_refreshes(Hold::Off);
        self.inner.permits.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Waits (up to [`WAIT`]) until a `_bulk` request carrying `text` (e.g.
    /// an order's id) has arrived.
    pub async fn wait_for_bulk_with(&self, text: &str) {
        tokio::time::timeout(WAIT, async {
            while !self
                .inner
                .bulks
                .lock()
                .unwrap()
                .iter()
                .any(|b| b.contains(text))
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no bulk write carried {text}"));
    }

    pub fn seen(&self) -> Seen {
        *self.inner.seen.borrow()
    }

    /// Waits (up to [`WAIT`]) until what went through satisfies `condition`.
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Seen) -> bool) {
        let mut seen = self.inner.seen.subscribe();
        tokio::time::timeout(WAIT, seen.wait_for(|s| condition(s)))
            .await
            .unwrap_or_else(|_| panic!("the proxy never saw {what}: {:?}", self.seen()))
            .unwrap();
    }
}

impl Drop for EsProxy {
    fn drop(&mut self) {
        self.open();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn forward(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let is_refresh = path.ends_with("/_refresh");
    let is_bulk = path.ends_with("/_bulk");
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if is_bulk {
        let text = String::from_utf8_lossy(&body).into_owned();
        inner.bulks.lock().unwrap().push(text);
    }
    let hold = if is_refresh {
        inner.seen.send_modify(|s| s.refreshes_arrived += 1);
        *inner.hold.lock().unwrap()
    } else {
        Hold::Off
    };
    if hold == Hold::BeforeForwarding {
        inner.permits.acquire().await.unwrap().forget();
    }

    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or(path);
    let mut outbound = inner
        .client
        .request(parts.method, format!("{}{path_and_query}", inner.target));
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outbound = outbound.header(name, value);
        }
    }
    let answer = match outbound.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    if is_refresh {
        inner.seen.send_modify(|s| s.refreshes_done += 1);
    }
    if is_bulk {
        inner.seen.send_modify(|s| s.bulks_done += 1);
    }
    if hold == Hold::AfterForwarding {
        inner.permits.acquire().await.unwrap().forget();
    }

    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != header::TRANSFER_ENCODING
            && name != header::CONTENT_LENGTH
            && name != header::CONNECTION
        {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap()
}
