//! The NATS bus in tests: settings for `BUS=nats` with a stream of the
//! test's own (so tests running at once never see each other's events), a
//! look at that stream and its consumer, and its removal at the end.
//!
//! Needs the three-node cluster of `scripts/services start nats` (NATS_URL).

use std::time::Duration;

use async_nats::jetstream;
use sightline::bus::nats::{Names, connect};
use sightline::config::{BusKind, Settings};

/// `settings` with `BUS=nats` and a stream named after the test's index
/// prefix (`TEST_<uuid>`, subjects `test_<uuid>.>`).
pub fn nats_settings(mut settings: Settings) -> Settings {
    let suffix: String = settings
        .index_prefix
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    settings.bus = BusKind::Nats;
    settings.nats_stream = format!("TEST_{}", suffix.to_uppercase());
    // Test streams are removed at the end; this bounds a forgotten one.
    settings.nats_max_age_hours = 1;
    settings
}

pub async fn jetstream(settings: &Settings) -> jetstream::Context {
    connect(&settings.nats_url)
        .await
        .expect("NATS must be running: scripts/services start nats")
}

/// What the stream and the consumer hold now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub messages: u64,
    pub pending: u64,
    pub ack_pending: u64,
    pub redelivered: u64,
}

pub async fn stream_state(settings: &Settings) -> StreamState {
    let js = jetstream(settings).await;
    let names = Names::from_settings(settings);
    // Not there yet: nothing published yet.
    let Ok(mut stream) = js.get_stream(&names.stream).await else {
        return StreamState {
            messages: 0,
            pending: 0,
            ack_pending: 0,
            redelivered: 0,
        };
    };
    let messages = stream.info().await.expect("stream info").state.messages;
    let (pending, ack_pending, redelivered) = match stream
        .get_consumer::<jetstream::consumer::pull::Config>(&names.consumer)
        .await
    {
        Ok(mut consumer) => {
            let info = consumer.info().await.expect("consumer info");
            (
                info.num_pending,
                info.num_ack_pending as u64,
                info.num_redelivered as u64,
            )
        }
        Err(_) => (0, 0, 0),
    };
    StreamState {
        messages,
        pending,
        ack_pending,
        redelivered,
    }
}

/// The server name of the stream's leader (e.g. `sightline-nats-2`).
pub async fn stream_leader(settings: &Settings) -> String {
    let js = jetstream(settings).await;
    let mut stream = js
        .get_stream(&settings.nats_stream)
        .await
        .expect("the test's stream exists");
    stream
        .info()
        .await
        .expect("stream info")
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader")
}

/// Deletes the test's stream when dropped, however the test ends.
pub struct TestStream(pub Settings);

impl Drop for TestStream {
    fn drop(&mut self) {
        if std::env::var("KEEP_TEST_DATA").is_ok() {
            return;
        }
        let settings = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    let js = jetstream(&settings).await;
                    let _ = js.delete_stream(&settings.nats_stream).await;
                })
                .await;
            });
        });
        let _ = cleanup.join();
    }
}
