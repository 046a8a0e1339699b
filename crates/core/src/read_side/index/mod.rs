//! The read store: two Elasticsearch indices, each behind an alias — orders
//! (searchable) and per-user summaries (counters). One type, [`SearchIndex`],
//! split by its callers: [`writes`] for the projector, [`search`] for the
//! query handlers, [`admin`] for start-up, alias repair and `rebuild`. This
//! file holds what they share: the client, the aliases, the mappings and
//! how an answer becomes a value or an [`IndexError`].

mod admin;
mod search;
pub mod writes;

pub use search::{SearchPage, SortKey};
pub use writes::{ItemFailure, WriteOutcome, is_document_refusal};

use std::time::Duration;

use anyhow::Context;
use elasticsearch::Elasticsearch;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use serde_json::{Value, json};

/// A failure to read or write the index.
#[derive(thiserror::Error, Debug)]
pub enum IndexError {
    /// Elasticsearch could not be reached (down, timed out).
    #[error("Elasticsearch is unreachable: {0}")]
    Unreachable(#[source] elasticsearch::Error),
    /// Elasticsearch answered, but not with success.
    #[error("Elasticsearch answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl IndexError {
    /// One short word for this failure, for `/status` and metrics:
    /// Elasticsearch's error type (`index_closed_exception`, …),
    /// `elasticsearch_unreachable`, or `status_<code>`; none for other errors.
    pub fn kind(&self) -> Option<String> {
        match self {
            IndexError::Unreachable(_) => Some("elasticsearch_unreachable".to_owned()),
            IndexError::Refused { status, body } => Some(
                serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|b| b["error"]["type"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("status_{status}")),
            ),
            IndexError::Other(_) => None,
        }
    }
}

impl From<elasticsearch::Error> for IndexError {
    fn from(e: elasticsearch::Error) -> Self {
        IndexError::Unreachable(e)
    }
}

#[derive(Clone)]
pub struct SearchIndex {
    client: Elasticsearch,
    /// Readers and writers use aliases, so a rebuild can swap indices under them.
    alias: String,
    summaries_alias: String,
    refresh_interval: String,
}

impl SearchIndex {
    pub fn new(url: &str, prefix: &str, refresh_interval: &str) -> anyhow::Result<Self> {
        let mut url = url::Url::parse(url).context("Failed to parse ELASTICSEARCH_URL")?;
        // Credentials in the URL become basic auth, and leave the URL: the
        // client's errors quote request URLs, and those reach the logs.
        let credentials = (!url.username().is_empty()).then(|| {
            elasticsearch::auth::Credentials::Basic(
                url.username().to_owned(),
                url.password().unwrap_or_default().to_owned(),
            )
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(Duration::from_secs(15))
            .disable_proxy();
        if let Some(credentials) = credentials {
            transport = transport.auth(credentials);
        }
        let transport = transport
            .build()
            .context("Failed to build the Elasticsearch client")?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            alias: format!("{prefix}orders"),
            summaries_alias: format!("{prefix}summaries"),
            refresh_interval: refresh_interval.to_owned(),
        })
    }

    /// The read store the settings name.
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        Self::new(
            &settings.elasticsearch_url,
            &settings.index_prefix,
            &settings.index_refresh_interval,
        )
    }

    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// Whether Elasticsearch answers. (The integ-test distribution answers
    /// `/` with 405, so this asks for cluster health instead of pinging.)
    pub async fn ping(&self) -> bool {
        matches!(
            self.client
                .cluster()
                .health(elasticsearch::cluster::ClusterHealthParts::None)
                .request_timeout(Duration::from_secs(2))
                .send()
                .await,
            Ok(r) if r.status_code().is_success()
        )
    }

    pub fn summaries_alias(&self) -> &str {
        &self.summaries_alias
    }

    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// Settings, mappings and alias of a new index behind `alias`.
    pub fn definition(&self, alias: &str, mappings: Value) -> Value {
        let mut definition = self.bare_definition(mappings);
        definition["aliases"] = json!({ alias: {} });
        definition
    }

    pub fn summary_mappings(&self) -> Value {
        summary_mappings()
    }

    pub fn order_mappings(&self) -> Value {
        json!({
            "dynamic": "strict",
            "properties": {
                "id": { "type": "keyword" },
                "user_id": { "type": "keyword" },
                "username": { "type": "keyword" },
                "items": { "type": "object", "enabled": false },
                "skus": { "type": "text", "fields": { "raw": { "type": "keyword" } } },
                "note": { "type": "text" },
                "total_cents": { "type": "long" },
                "currency": { "type": "keyword" },
                "placed_at": { "type": "date" },
                "status": { "type": "keyword" },
                "cancelled_at": { "type": "date" },
                "version": { "type": "long" }
            }
        })
    }
}

/// The JSON body of a 200 answer; any other answer is `Refused` with its body.
async fn read_json<T: serde::de::DeserializeOwned>(
    response: elasticsearch::http::response::Response,
    what: &str,
) -> Result<T, IndexError> {
    let status = response.status_code().as_u16();
    if status != 200 {
        let body = response.text().await.unwrap_or_default();
        return Err(IndexError::Refused { status, body });
    }
    Ok(response
        .json()
        .await
        .with_context(|| format!("Failed to read the {what} response"))?)
}

/// Turns a non-success answer into an error.
async fn check(response: elasticsearch::http::response::Response) -> Result<(), IndexError> {
    let status = response.status_code().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(IndexError::Refused { status, body })
}

fn summary_mappings() -> Value {
    json!({
        "dynamic": "strict",
        "properties": {
            "user_id": { "type": "keyword" },
            "orders_placed": { "type": "long" },
            "orders_cancelled": { "type": "long" },
            "spent_cents": { "type": "object", "enabled": false },
            "last_order_at": { "type": "date" },
            "revision": { "type": "long" }
        }
    })
}
