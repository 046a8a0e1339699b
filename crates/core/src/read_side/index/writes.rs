//! Writes for the projector: a projected batch in one versioned bulk request,
//! each document's outcome (applied, already applied, refused for what it
//! is, or a passing failure), and the refresh that makes orders searchable.

use anyhow::Context;
use elasticsearch::BulkParts;
use elasticsearch::http::request::JsonBody;
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::params::Refresh;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::RefreshMode;
use crate::read_side::document::{OrderDocument, SummaryDocument};

use super::{IndexError, SearchIndex, check, read_json};

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

impl SearchIndex {
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

use crate::metric_catalogue::Metric;

/// The metrics this module records (described at start-up: see
/// `metric_catalogue`).
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    Metric::seconds("sightline_es_bulk_seconds", "Elasticsearch bulk request latency."),
];

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
