//! The read store: two Elasticsearch indices, each behind an alias — orders
//! (searchable) and per-user summaries (counters).
//!
//! Writes here come only from the projector; reads only from query handlers.

use std::time::Duration;

use anyhow::Context;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsAliasParts, IndicesGetAliasParts, IndicesRefreshParts,
};
use elasticsearch::params::Refresh;
use elasticsearch::{BulkParts, Elasticsearch, GetParts, SearchParts};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::document::{OrderDocument, SummaryDocument};
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

/// What happened to one document of a bulk write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    /// The index already holds this version or a newer one: nothing to do.
    AlreadyApplied,
    /// A passing failure: nothing is wrong with the document, the index or
    /// the cluster cannot take it now (overload, a closed, write-blocked or
    /// missing index, unavailable shards, authentication). Try again later.
    Failed(ItemFailure),
    /// The document is refused for what it is (a mapping or parse error for
    /// its fields): retrying the same document cannot help.
    Rejected(String),
}

/// Why Elasticsearch did not apply one document, for a passing failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    /// Elasticsearch's error type (`index_closed_exception`, …), or
    /// `status_<code>` when the answer names none. A short, bounded word:
    /// `/status` shows it and metrics use it as a label.
    pub kind: String,
    /// The whole error, for the log.
    pub detail: String,
}

impl std::fmt::Display for ItemFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Whether a bulk item's error refuses that one document for what it is
/// (poison: park it) rather than saying the index or the cluster cannot take
/// writes now (passing: retry). Only a mapping or parse error of the
/// document's own fields is poison. Index- and cluster-level refusals —
/// `index_closed_exception` (400), `cluster_block_exception` (403; 429 for
/// the disk flood stage), `index_not_found_exception` (404, also a missing
/// alias under `require_alias`), `unavailable_shards_exception` (503),
/// `security_exception` (401/403), rejected execution (429) — are passing,
/// and so is anything not known to be about the document: an unknown error
/// retried keeps the order waiting, visibly on `/status`; parked, it would
/// tell its owner a falsehood.
pub fn is_document_refusal(status: u16, error: Option<&Value>) -> bool {
    if status != 400 {
        return false;
    }
    let Some(error) = error else { return false };
    match error["type"].as_str().unwrap_or_default() {
        "document_parsing_exception"
        | "mapper_parsing_exception"
        | "strict_dynamic_mapping_exception" => true,
        // Also used for index-level trouble ("no write index is defined for
        // alias"): poison only when it is about one of the document's fields
        // ("immense term in field=…").
        "illegal_argument_exception" => error["reason"]
            .as_str()
            .is_some_and(|r| r.contains("field")),
        _ => false,
    }
}

#[derive(Clone)]
pub struct ReadStore {
    client: Elasticsearch,
    /// Readers and writers use aliases, so a rebuild can swap indices under them.
    alias: String,
    summaries_alias: String,
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

impl ReadStore {
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

    /// Makes sure both aliases exist (creating `<alias>_v1` with its mapping)
    /// and that their mappings have every field this version writes.
    #[tracing::instrument(skip(self), fields(alias = %self.alias))]
    pub async fn ensure_exists(&self) -> Result<(), IndexError> {
        self.ensure_alias(&self.alias, self.order_mappings())
            .await?;
        self.ensure_alias(&self.summaries_alias, summary_mappings())
            .await
    }

    async fn ensure_alias(&self, alias: &str, mappings: Value) -> Result<(), IndexError> {
        let exists = self
            .client
            .indices()
            .exists_alias(IndicesExistsAliasParts::Name(&[alias]))
            .send()
            .await?;
        if exists.status_code().is_success() {
            // Adding fields to a mapping is allowed and idempotent: older
            // indices learn the fields newer code writes.
            let response = self
                .client
                .indices()
                .put_mapping(elasticsearch::indices::IndicesPutMappingParts::Index(&[
                    alias,
                ]))
                .body(mappings)
                .send()
                .await?;
            return check(response).await;
        }
        let index = format!("{alias}_v1");
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&index))
            .body(self.definition(alias, mappings))
            .send()
            .await?;
        let status = response.status_code().as_u16();
        if status == 200 {
            tracing::info!(%index, "created index");
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        // Another instance won the race: fine.
        if status == 400 && body.contains("resource_already_exists_exception") {
            return Ok(());
        }
        Err(IndexError::Refused { status, body })
    }

    /// Settings, mappings and alias of a new index behind `alias`.
    pub fn definition(&self, alias: &str, mappings: Value) -> Value {
        let mut definition = self.bare_definition(mappings);
        definition["aliases"] = json!({ alias: {} });
        definition
    }

    /// Settings and mappings of a new index behind no alias, so nothing
    /// reads it yet (a rebuild's target).
    pub fn bare_definition(&self, mappings: Value) -> Value {
        json!({
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                // Explicit: an unset interval lets idle shards skip refreshes.
                "refresh_interval": self.refresh_interval,
            },
            "mappings": mappings,
        })
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

    /// Writes a projected batch — its orders and the summaries it changed — in
    /// one bulk request with `version_type=external` keyed on the domain
    /// version (orders) or revision (summaries), so a replayed or reordered
    /// write can never overwrite a newer one. `RefreshMode::WaitFor` waits
    /// for the next scheduled refresh; otherwise the caller refreshes. Returns
    /// one outcome per document, orders then summaries, each in order.
    #[tracing::instrument(skip_all, fields(orders = orders.len(), summaries = summaries.len()))]
    pub async fn write_batch(
        &self,
        orders: &[OrderDocument],
        summaries: &[SummaryDocument],
        refresh: RefreshMode,
    ) -> Result<(Vec<WriteOutcome>, Vec<WriteOutcome>), IndexError> {
        let mut writes = Vec::with_capacity(orders.len() + summaries.len());
        for d in orders {
            let doc = serde_json::to_value(d).context("Failed to encode an order document")?;
            writes.push((self.alias.as_str(), d.id.to_string(), d.version, doc));
        }
        // Every write goes through an alias: with `require_alias` a missing
        // alias is an error (retried), never an index auto-created under its
        // name with guessed mappings, which search could not filter by user.
        for d in summaries {
            let doc = serde_json::to_value(d).context("Failed to encode a summary document")?;
            writes.push((
                self.summaries_alias.as_str(),
                d.user_id.to_string(),
                d.revision,
                doc,
            ));
        }
        let refresh = match refresh {
            RefreshMode::Explicit => Refresh::False,
            RefreshMode::WaitFor => Refresh::WaitFor,
        };
        let mut outcomes = self.bulk(writes, refresh, true).await?;
        let summary_outcomes = outcomes.split_off(orders.len());
        Ok((outcomes, summary_outcomes))
    }

    /// One bulk request of `(id, external version, document)` writes to
    /// `target` (an alias or an index), for the rebuild's copies.
    pub async fn bulk_versioned(
        &self,
        target: &str,
        writes: Vec<(String, i64, Value)>,
        refresh: Refresh,
    ) -> Result<Vec<WriteOutcome>, IndexError> {
        let writes = writes
            .into_iter()
            .map(|(id, version, doc)| (target, id, version, doc))
            .collect();
        let require_alias = target == self.alias || target == self.summaries_alias;
        self.bulk(writes, refresh, require_alias).await
    }

    /// One bulk request of `(target, id, external version, document)` writes.
    /// With `require_alias`, every target must be an alias.
    async fn bulk(
        &self,
        writes: Vec<(&str, String, i64, Value)>,
        refresh: Refresh,
        require_alias: bool,
    ) -> Result<Vec<WriteOutcome>, IndexError> {
        if writes.is_empty() {
            return Ok(vec![]);
        }
        let count = writes.len();
        let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(count * 2);
        for (target, id, version, doc) in writes {
            body.push(
                json!({ "index": {
                    "_index": target, "_id": id, "version": version, "version_type": "external",
                    "require_alias": require_alias
                } })
                .into(),
            );
            body.push(doc.into());
        }
        let started = std::time::Instant::now();
        let response = self
            .client
            .bulk(BulkParts::None)
            .refresh(refresh)
            .body(body)
            .send()
            .await?;
        metrics::histogram!("sightline_es_bulk_seconds").record(started.elapsed().as_secs_f64());
        let parsed: BulkResponse = read_json(response, "bulk").await?;
        if parsed.items.len() != count {
            return Err(
                anyhow::anyhow!("bulk answered {} items for {count}", parsed.items.len()).into(),
            );
        }
        Ok(parsed
            .items
            .into_iter()
            .map(|item| {
                let status = item.index.status;
                let error = item.index.error.as_ref();
                let reason = || {
                    error
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| format!("status {status}"))
                };
                match status {
                    200 | 201 => WriteOutcome::Applied,
                    409 => WriteOutcome::AlreadyApplied,
                    _ if is_document_refusal(status, error) => WriteOutcome::Rejected(reason()),
                    _ => WriteOutcome::Failed(ItemFailure {
                        kind: error
                            .and_then(|e| e["type"].as_str())
                            .map_or_else(|| format!("status_{status}"), str::to_owned),
                        detail: reason(),
                    }),
                }
            })
            .collect())
    }

    /// Points `alias` at `index` again, if `alias` is missing and `index`
    /// exists; returns whether it did. Fails, changing nothing, when an
    /// index has taken the alias's name (Elasticsearch refuses the alias).
    pub async fn restore_alias(&self, alias: &str, index: &str) -> Result<bool, IndexError> {
        if self.alias_target(alias).await?.is_some() || !self.index_exists(index).await? {
            return Ok(false);
        }
        let response = self
            .client
            .indices()
            .update_aliases()
            .body(json!({ "actions": [{ "add": { "index": index, "alias": alias } }] }))
            .send()
            .await?;
        check(response).await?;
        Ok(true)
    }

    /// Makes every order written so far searchable. Summaries need no
    /// refresh: they are read by id, in real time.
    pub async fn refresh_orders(&self) -> Result<(), IndexError> {
        let response = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.alias]))
            .send()
            .await?;
        check(response).await
    }

    // --- Index management, for `sightline rebuild` ---------------------------

    /// The index `alias` points at; `None` when there is no such alias.
    pub async fn alias_target(&self, alias: &str) -> Result<Option<String>, IndexError> {
        let response = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Name(&[alias]))
            .send()
            .await?;
        let status = response.status_code().as_u16();
        if status == 404 {
            return Ok(None);
        }
        let indices: serde_json::Map<String, Value> = read_json(response, "alias").await?;
        let mut names: Vec<String> = indices.keys().cloned().collect();
        match names.len() {
            1 => Ok(names.pop()),
            n => Err(anyhow::anyhow!("alias {alias} points at {n} indices: {names:?}").into()),
        }
    }

    /// The names of the existing indices that match `pattern` (e.g. `x_v*`).
    pub async fn indices_matching(&self, pattern: &str) -> Result<Vec<String>, IndexError> {
        let response = self
            .client
            .indices()
            .get(elasticsearch::indices::IndicesGetParts::Index(&[pattern]))
            .expand_wildcards(&[elasticsearch::params::ExpandWildcards::All])
            .send()
            .await?;
        let indices: serde_json::Map<String, Value> = read_json(response, "index list").await?;
        Ok(indices.keys().cloned().collect())
    }

    pub async fn index_exists(&self, index: &str) -> Result<bool, IndexError> {
        let response = self
            .client
            .indices()
            .exists(elasticsearch::indices::IndicesExistsParts::Index(&[index]))
            .send()
            .await?;
        Ok(response.status_code().is_success())
    }

    /// Creates `index` with `bare_definition(mappings)`; false if it existed.
    pub async fn create_bare_index(
        &self,
        index: &str,
        mappings: Value,
    ) -> Result<bool, IndexError> {
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(index))
            .body(self.bare_definition(mappings))
            .send()
            .await?;
        let status = response.status_code().as_u16();
        if status == 200 {
            return Ok(true);
        }
        let body = response.text().await.unwrap_or_default();
        if status == 400 && body.contains("resource_already_exists_exception") {
            return Ok(false);
        }
        Err(IndexError::Refused { status, body })
    }

    /// Sets an index's `refresh_interval`; `None` turns scheduled refreshes
    /// off (fast bulk loading), `Some` of the configured one puts them back.
    pub async fn set_refresh_interval(
        &self,
        index: &str,
        interval: Option<&str>,
    ) -> Result<(), IndexError> {
        let response = self
            .client
            .indices()
            .put_settings(elasticsearch::indices::IndicesPutSettingsParts::Index(&[
                index,
            ]))
            .body(json!({ "index": { "refresh_interval": interval.unwrap_or("-1") } }))
            .send()
            .await?;
        check(response).await
    }

    /// The configured `refresh_interval` of new indices.
    pub fn refresh_interval(&self) -> &str {
        &self.refresh_interval
    }

    /// Makes every write so far to these indices (or aliases) searchable.
    pub async fn refresh_indices(&self, indices: &[&str]) -> Result<(), IndexError> {
        let response = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(indices))
            .send()
            .await?;
        check(response).await
    }

    /// How many documents search sees in `index`.
    pub async fn count(&self, index: &str) -> Result<u64, IndexError> {
        let response = self
            .client
            .count(elasticsearch::CountParts::Index(&[index]))
            .send()
            .await?;
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        let parsed: Count = read_json(response, "count").await?;
        Ok(parsed.count)
    }

    /// Moves aliases in one atomic `POST _aliases`: for each `(alias, from,
    /// to)`, readers and writers of `alias` see `from` before and `to` after,
    /// never both and never neither. Fails, changing nothing, if an alias no
    /// longer points at its `from`.
    pub async fn swap_aliases(&self, swaps: &[(&str, &str, &str)]) -> Result<(), IndexError> {
        let mut actions = Vec::with_capacity(swaps.len() * 2);
        for (alias, from, to) in swaps {
            actions
                .push(json!({ "remove": { "index": from, "alias": alias, "must_exist": true } }));
            actions.push(json!({ "add": { "index": to, "alias": alias } }));
        }
        let response = self
            .client
            .indices()
            .update_aliases()
            .body(json!({ "actions": actions }))
            .send()
            .await?;
        check(response).await
    }

    /// Deletes an index; one that does not exist is fine.
    pub async fn delete_index(&self, index: &str) -> Result<(), IndexError> {
        let response = self
            .client
            .indices()
            .delete(elasticsearch::indices::IndicesDeleteParts::Index(&[index]))
            .send()
            .await?;
        if response.status_code().as_u16() == 404 {
            return Ok(());
        }
        check(response).await
    }

    /// One user's summary, if the read store has one. A real-time get by id:
    /// it sees the latest write without waiting for a refresh, so the
    /// projector only has to refresh the orders before a notice.
    pub async fn summary(&self, user_id: Uuid) -> Result<Option<SummaryDocument>, IndexError> {
        #[derive(Deserialize)]
        struct GetResponse {
            found: bool,
            #[serde(rename = "_source")]
            source: Option<SummaryDocument>,
        }
        let id = user_id.to_string();
        let response = self
            .client
            .get(GetParts::IndexId(&self.summaries_alias, &id))
            .send()
            .await?;
        // 404 with `"found": false` is a user with nothing counted yet; a
        // 404 without it (no such index) stays an error.
        let status = response.status_code().as_u16();
        let body = response.text().await?;
        match serde_json::from_str::<GetResponse>(&body) {
            Ok(got) if status == 200 || (status == 404 && !got.found) => {
                Ok(got.source.filter(|_| got.found))
            }
            _ => Err(IndexError::Refused { status, body }),
        }
    }

    /// The `_source` of every hit of a search on `alias`.
    async fn search_sources<T: serde::de::DeserializeOwned>(
        &self,
        alias: &str,
        body: Value,
    ) -> Result<Vec<T>, IndexError> {
        let response = self
            .client
            .search(SearchParts::Index(&[alias]))
            .body(body)
            .send()
            .await?;
        let parsed: SearchResponse<T> = read_json(response, "search").await?;
        Ok(parsed.hits.hits.into_iter().map(|h| h.source).collect())
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
        let docs: Vec<OrderDocument> = self.search_sources(&self.alias, body).await?;
        Ok(docs
            .into_iter()
            .map(|doc| {
                let key = SortKey {
                    placed_at_millis: doc.placed_at.timestamp_millis(),
                    id: doc.id.to_string(),
                };
                (doc, key)
            })
            .collect())
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
struct SearchResponse<T> {
    hits: Hits<T>,
}

#[derive(Deserialize)]
struct Hits<T> {
    hits: Vec<Hit<T>>,
}

#[derive(Deserialize)]
struct Hit<T> {
    #[serde(rename = "_source")]
    source: T,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, error: Value) -> bool {
        is_document_refusal(status, Some(&error))
    }

    #[test]
    fn only_a_refusal_of_the_documents_own_fields_is_poison() {
        // As Elasticsearch 9 answers them (bulk items).
        assert!(refused(
            400,
            json!({ "type": "document_parsing_exception",
                    "reason": "[1:6] failed to parse field [skus.raw] of type [keyword]" })
        ));
        assert!(refused(
            400,
            json!({ "type": "strict_dynamic_mapping_exception",
                    "reason": "mapping set to strict, dynamic introduction of [zzz] within [_doc] is not allowed" })
        ));
        assert!(refused(
            400,
            json!({ "type": "mapper_parsing_exception", "reason": "failed to parse" })
        ));
        assert!(refused(
            400,
            json!({ "type": "illegal_argument_exception",
                    "reason": "Document contains at least one immense term in field=\"skus.raw\"" })
        ));

        assert!(!refused(
            400,
            json!({ "type": "index_closed_exception", "reason": "closed" })
        ));
        assert!(!refused(
            403,
            json!({ "type": "cluster_block_exception",
                    "reason": "index [x] blocked by: [FORBIDDEN/8/index write (api)];" })
        ));
        assert!(!refused(
            429,
            json!({ "type": "cluster_block_exception",
                    "reason": "index [x] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark];" })
        ));
        assert!(!refused(
            404,
            json!({ "type": "index_not_found_exception",
                    "reason": "no such index [x] and [require_alias] request flag is [true] and [x] is not an alias" })
        ));
        assert!(!refused(
            503,
            json!({ "type": "unavailable_shards_exception", "reason": "primary shard is not active" })
        ));
        assert!(!refused(
            403,
            json!({ "type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized" })
        ));
        assert!(!refused(
            400,
            json!({ "type": "illegal_argument_exception",
                    "reason": "no write index is defined for alias [x]" })
        ));
        // Unknown: not known to be about the document, so not poison.
        assert!(!refused(
            400,
            json!({ "type": "something_new_exception", "reason": "?" })
        ));
        assert!(!is_document_refusal(400, None));
    }
}
