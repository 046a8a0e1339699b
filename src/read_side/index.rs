//! The read store: the Elasticsearch orders index, behind an alias.
//!
//! Writes here come only from the projector; reads only from query handlers.

use std::time::Duration;

use anyhow::{Context, bail};
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{IndicesCreateParts, IndicesExistsAliasParts, IndicesRefreshParts};
use elasticsearch::params::Refresh;
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::document::OrderDocument;
use crate::config::RefreshMode;

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

impl From<elasticsearch::Error> for IndexError {
    fn from(e: elasticsearch::Error) -> Self {
        IndexError::Unreachable(e)
    }
}

/// What happened to one document of a bulk write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    /// The index already holds this version or a newer one: nothing to do.
    AlreadyApplied,
    Failed(String),
}

#[derive(Clone)]
pub struct OrderIndex {
    client: Elasticsearch,
    /// Readers and writers use the alias, so a rebuild can swap indices under it.
    alias: String,
    refresh_interval: String,
}

/// One page of a user's orders, newest first.
pub struct SearchPage {
    pub orders: Vec<OrderDocument>,
    /// Sort key of the last order when more follow.
    pub next: Option<SortKey>,
}

/// Position in the (placed_at desc, id desc) order, as Elasticsearch sorts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    pub placed_at_millis: i64,
    pub id: String,
}

impl OrderIndex {
    pub fn new(url: &str, prefix: &str, refresh_interval: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(url).context("Failed to parse ELASTICSEARCH_URL")?;
        let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(Duration::from_secs(15))
            .disable_proxy()
            .build()
            .context("Failed to build the Elasticsearch client")?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            alias: format!("{prefix}orders"),
            refresh_interval: refresh_interval.to_owned(),
        })
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

    /// Creates `<alias>_v1` with its mapping and points the alias at it,
    /// unless the alias already exists.
    #[tracing::instrument(skip(self), fields(alias = %self.alias))]
    pub async fn ensure_exists(&self) -> Result<(), IndexError> {
        let exists = self
            .client
            .indices()
            .exists_alias(IndicesExistsAliasParts::Name(&[&self.alias]))
            .send()
            .await?;
        if exists.status_code().is_success() {
            return Ok(());
        }
        let index = format!("{}_v1", self.alias);
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&index))
            .body(self.definition())
            .send()
            .await?;
        let status = response.status_code().as_u16();
        if status == 200 {
            tracing::info!(%index, "created the orders index");
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        // Another instance won the race: fine.
        if status == 400 && body.contains("resource_already_exists_exception") {
            return Ok(());
        }
        Err(IndexError::Refused { status, body })
    }

    fn definition(&self) -> Value {
        json!({
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                // Explicit: an unset interval lets idle shards skip refreshes.
                "refresh_interval": self.refresh_interval,
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "id": { "type": "keyword" },
                    "user_id": { "type": "keyword" },
                    "username": { "type": "keyword" },
                    "items": { "type": "object", "enabled": false },
                    "skus": { "type": "text", "fields": { "raw": { "type": "keyword" } } },
                    "note": { "type": "text" },
                    "total_cents": { "type": "long" },
                    "placed_at": { "type": "date" },
                    "version": { "type": "long" }
                }
            },
            "aliases": { &self.alias: {} }
        })
    }

    /// Writes documents with `version_type=external` keyed on the domain
    /// version, so a replayed or reordered write can never overwrite a newer
    /// one. Returns one outcome per document, in order.
    #[tracing::instrument(skip_all, fields(docs = docs.len()))]
    pub async fn bulk_write(
        &self,
        docs: &[OrderDocument],
        refresh: RefreshMode,
    ) -> Result<Vec<WriteOutcome>, IndexError> {
        let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(docs.len() * 2);
        for doc in docs {
            body.push(
                json!({ "index": {
                    "_id": doc.id,
                    "version": doc.version,
                    "version_type": "external"
                }})
                .into(),
            );
            body.push(
                serde_json::to_value(doc)
                    .context("Failed to encode a document")?
                    .into(),
            );
        }
        let mut request = self.client.bulk(BulkParts::Index(&self.alias)).body(body);
        if refresh == RefreshMode::WaitFor {
            request = request.refresh(Refresh::WaitFor);
        }
        let started = std::time::Instant::now();
        let response = request.send().await?;
        metrics::histogram!("sightline_es_bulk_seconds").record(started.elapsed().as_secs_f64());
        let status = response.status_code().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(IndexError::Refused { status, body });
        }
        let parsed: BulkResponse = response
            .json()
            .await
            .context("Failed to read the bulk response")?;
        if parsed.items.len() != docs.len() {
            return Err(anyhow::anyhow!(
                "bulk answered {} items for {}",
                parsed.items.len(),
                docs.len()
            )
            .into());
        }
        Ok(parsed
            .items
            .into_iter()
            .map(|item| match item.index.status {
                200 | 201 => WriteOutcome::Applied,
                409 => WriteOutcome::AlreadyApplied,
                _ => WriteOutcome::Failed(
                    item.index
                        .error
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| format!("status {}", item.index.status)),
                ),
            })
            .collect())
    }

    /// Makes every write so far searchable.
    pub async fn refresh(&self) -> Result<(), IndexError> {
        let response = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.alias]))
            .send()
            .await?;
        let status = response.status_code().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(IndexError::Refused { status, body });
        }
        Ok(())
    }

    /// A page of one user's orders, newest first, optionally full-text
    /// filtered over skus and note.
    #[tracing::instrument(skip(self))]
    pub async fn search(
        &self,
        user_id: Uuid,
        q: Option<&str>,
        limit: usize,
        after: Option<&SortKey>,
    ) -> Result<SearchPage, IndexError> {
        let mut must = vec![];
        if let Some(q) = q.filter(|q| !q.trim().is_empty()) {
            must.push(json!({ "multi_match": {
                "query": q,
                "fields": ["skus", "note"],
                "type": "cross_fields",
                "operator": "and"
            }}));
        }
        let mut body = json!({
            "size": limit + 1,
            "query": { "bool": {
                "filter": [{ "term": { "user_id": user_id } }],
                "must": must
            }},
            "sort": [{ "placed_at": "desc" }, { "id": "desc" }]
        });
        if let Some(after) = after {
            body["search_after"] = json!([after.placed_at_millis, after.id]);
        }
        let mut hits = self.run_search(body).await?;
        let next = if hits.len() > limit {
            hits.truncate(limit);
            hits.last().map(|(_, key)| key.clone())
        } else {
            None
        };
        Ok(SearchPage {
            orders: hits.into_iter().map(|(doc, _)| doc).collect(),
            next,
        })
    }

    /// One order of one user, if search can see it. (GET-by-id is real-time
    /// and would see documents search cannot yet find; this is a search.)
    pub async fn find(&self, user_id: Uuid, id: Uuid) -> Result<Option<OrderDocument>, IndexError> {
        let body = json!({
            "size": 1,
            "query": { "bool": { "filter": [
                { "ids": { "values": [id] } },
                { "term": { "user_id": user_id } }
            ]}}
        });
        Ok(self
            .run_search(body)
            .await?
            .into_iter()
            .next()
            .map(|(doc, _)| doc))
    }

    async fn run_search(&self, body: Value) -> Result<Vec<(OrderDocument, SortKey)>, IndexError> {
        let response = self
            .client
            .search(SearchParts::Index(&[&self.alias]))
            .body(body)
            .send()
            .await?;
        let status = response.status_code().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(IndexError::Refused { status, body });
        }
        let parsed: SearchResponse = response
            .json()
            .await
            .context("Failed to read the search response")?;
        parsed
            .hits
            .hits
            .into_iter()
            .map(|hit| {
                let key = SortKey {
                    placed_at_millis: hit.source.placed_at.timestamp_millis(),
                    id: hit.source.id.to_string(),
                };
                Ok((hit.source, key))
            })
            .collect()
    }

    /// Deletes every index this instance's prefix names (tests clean up with it).
    pub async fn delete_all(&self) -> anyhow::Result<()> {
        let pattern = format!("{}*", self.alias);
        let response = self
            .client
            .indices()
            .delete(elasticsearch::indices::IndicesDeleteParts::Index(&[
                &pattern,
            ]))
            .send()
            .await?;
        if !response.status_code().is_success() && response.status_code().as_u16() != 404 {
            bail!("Failed to delete {pattern}: {}", response.status_code());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct BulkResponse {
    items: Vec<BulkItem>,
}

#[derive(Deserialize)]
struct BulkItem {
    index: BulkItemResult,
}

#[derive(Deserialize)]
struct BulkItemResult {
    status: u16,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct SearchResponse {
    hits: Hits,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_source")]
    source: OrderDocument,
}
