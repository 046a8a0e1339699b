//! The floor: what the three unavoidable steps of making an order visible
//! cost on this machine with nothing of Sightline in between — a PostgreSQL
//! commit of an order and its outbox row, an Elasticsearch index call that is
//! searchable on return, and an SSE push over loopback.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::server::Bench;
use super::sse;
use super::stats::Summary;

pub struct Floor {
    pub postgres: Summary,
    pub elasticsearch: Summary,
    pub sse: Summary,
}

impl Floor {
    pub fn p50_sum(&self) -> f64 {
        self.postgres.p50 + self.elasticsearch.p50 + self.sse.p50
    }
}

const WARM_UP: usize = 20;

pub async fn measure(bench: &Bench, samples: usize) -> anyhow::Result<Floor> {
    let n = bench.next_number();
    let name = bench.database_name(n);
    let db = bench.create_database(&name).await?;
    let postgres = postgres(&db, samples).await;
    db.close().await;
    bench.drop_database(&name).await?;

    let index = format!("{}floor", bench.index_prefix(n));
    let elasticsearch = elasticsearch(bench, &index, samples).await;
    bench.delete_indices(&index).await?;

    let sse = sse_push(samples).await;
    Ok(Floor {
        postgres: postgres?,
        elasticsearch: elasticsearch?,
        sse: sse?,
    })
}

/// The statements `write_side::place_order` runs (user row, order, items,
/// outbox row, NOTIFY), in one transaction, sequentially; begin → commit.
async fn postgres(db: &sqlx::PgPool, samples: usize) -> anyhow::Result<Summary> {
    sightline_core::db::migrate(db)
        .await
        .context("Failed to migrate the floor database")?;
    let user = Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, username, password_hash) VALUES ($1, 'floor', 'x')")
        .bind(user)
        .execute(db)
        .await?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..WARM_UP + samples {
        let order = Uuid::new_v4();
        let payload = serde_json::json!({"order_id": order, "user_id": user, "items": [{"sku": "FLOOR", "quantity": 1, "unit_price_cents": 1299}]});
        let started = Instant::now();
        let mut tx = db.begin().await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE users SET write_seq = write_seq + 1 WHERE id = $1 RETURNING write_seq",
        )
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, user_write_seq, note, total_cents, currency)
             VALUES ($1, $2, $3, 'floor', 1299, 'USD') ON CONFLICT (id) DO NOTHING RETURNING placed_at",
        )
        .bind(order)
        .bind(user)
        .bind(seq)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents)
             VALUES ($1, 0, 'FLOOR', 1, 1299)",
        )
        .bind(order)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, schema_version, aggregate_id,
                                 aggregate_version, user_id, payload)
             VALUES ($1, 'OrderPlaced', 2, $2, 1, $3, $4)",
        )
        .bind(Uuid::new_v4())
        .bind(order)
        .bind(user)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
        // No NOTIFY: the write path wakes the relay after the commit
        // (`outbox::wake`), outside the transaction.
        tx.commit().await?;
        if i >= WARM_UP {
            times.push(ms(started.elapsed()));
        }
    }
    Ok(Summary::of(times))
}

/// `PUT <index>/_doc/<id>?refresh=true` of an order-sized document, sequentially.
async fn elasticsearch(bench: &Bench, index: &str, samples: usize) -> anyhow::Result<Summary> {
    let es = &bench.es_url;
    bench
        .http
        .put(format!("{es}/{index}"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"settings": {"index": {
                "number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"
            }}})
            .to_string(),
        )
        .send()
        .await?
        .error_for_status()
        .context("Failed to create the floor index")?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..WARM_UP + samples {
        let id = Uuid::new_v4();
        let doc = serde_json::json!({
            "id": id, "user_id": Uuid::new_v4(), "username": "floor",
            "skus": ["FLOOR-1", "FLOOR-2"], "total_cents": 2598, "currency": "USD",
            "note": "benchmark floor", "placed_at": chrono::Utc::now(), "status": "placed", "version": 1
        });
        let started = Instant::now();
        bench
            .http
            .put(format!("{es}/{index}/_doc/{id}?refresh=true"))
            .header("content-type", "application/json")
            .body(doc.to_string())
            .send()
            .await?
            .error_for_status()?;
        if i >= WARM_UP {
            times.push(ms(started.elapsed()));
        }
    }
    Ok(Summary::of(times))
}

/// A minimal axum SSE server in this process; the sender stamps the time,
/// hands a number to the stream, and the raw client reads it back.
async fn sse_push(samples: usize) -> anyhow::Result<Summary> {
    let (tx, app) = sse_app("/events");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream = sse::connect(addr, None, "/events", None).await?;
    stream.expect("ready").await?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..(WARM_UP + samples) as u64 {
        // Idle between pushes, as a notice usually finds its stream.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        tx.send(i).context("the SSE stream is gone")?;
        let event = stream.expect("push").await?;
        let elapsed = started.elapsed();
        if event.data != i.to_string() {
            bail!("SSE floor: expected {i}, got {}", event.data);
        }
        if i >= WARM_UP as u64 {
            times.push(ms(elapsed));
        }
    }
    server.abort();
    Ok(Summary::of(times))
}

/// A bare axum SSE endpoint at `path`: `ready`, then one `push` per number
/// sent into the returned sender.
pub fn sse_app(path: &str) -> (broadcast::Sender<u64>, Router) {
    let (tx, _) = broadcast::channel::<u64>(16);
    let app = Router::new()
        .route(path, get(events))
        .with_state(tx.clone());
    (tx, app)
}

async fn events(
    State(tx): State<broadcast::Sender<u64>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = tx.subscribe();
    let ready = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let pushes = BroadcastStream::new(rx).filter_map(|n| async move {
        n.ok()
            .map(|n| Ok(Event::default().event("push").data(n.to_string())))
    });
    Sse::new(ready.chain(pushes))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
