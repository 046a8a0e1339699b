//! Reads for the query handlers: a user's orders newest first (search and
//! cursor pages), one order, and a user's summary by id in real time.

use elasticsearch::{GetParts, SearchParts};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use futures::future::BoxFuture;

use crate::read_side::document::{OrderDocument, SummaryDocument};
use crate::read_side::model::{ReadError, ReadQueries};

use super::{IndexError, SearchIndex, read_json};

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

impl ReadQueries for SearchIndex {
    /// One user's summary, if the read store has one. A real-time get by id:
    /// it sees the latest write without waiting for a refresh, so the
    /// projector only has to refresh the orders before a notice.
    fn summary(&self, user_id: Uuid) -> BoxFuture<'_, Result<Option<SummaryDocument>, ReadError>> {
        Box::pin(async move {
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
                .await
                .map_err(IndexError::from)?;
            // 404 with `"found": false` is a user with nothing counted yet; a
            // 404 without it (no such index) stays an error.
            let status = response.status_code().as_u16();
            let body = response.text().await.map_err(IndexError::from)?;
            match serde_json::from_str::<GetResponse>(&body) {
                Ok(got) if status == 200 || (status == 404 && !got.found) => {
                    Ok(got.source.filter(|_| got.found))
                }
                _ => Err(IndexError::Refused { status, body }.into()),
            }
        })
    }

    /// A page of one user's orders, newest first, optionally full-text
    /// filtered over skus and note.
    // What a user typed stays out of the logs: only its length.
    #[tracing::instrument(skip(self, q), fields(q_len = q.map_or(0, str::len)))]
    fn search<'a>(
        &'a self,
        user_id: Uuid,
        q: Option<&'a str>,
        limit: usize,
        after: Option<&'a SortKey>,
    ) -> BoxFuture<'a, Result<SearchPage, ReadError>> {
        Box::pin(async move {
            let mut must = vec![];
            // Search as people type: every word of `q` must begin a word of the
            // skus or the note ("wid" finds "WIDGET-42"). Each word is its own
            // `match_bool_prefix` (a prefix query over the analyzed term, never
            // a wildcard built from user input); the same rule as
            // `read_your_writes::matches_query`, which stands in for it.
            if let Some(q) = q {
                for word in crate::read_side::read_your_writes::query_words(q) {
                    must.push(json!({ "bool": {
                        "should": [
                            { "match_bool_prefix": { "skus": word } },
                            { "match_bool_prefix": { "note": word } }
                        ],
                        "minimum_should_match": 1
                    }}));
                }
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
        })
    }

    /// One order of one user, if search can see it. (GET-by-id is real-time
    /// and would see documents search cannot yet find; this is a search.)
    fn find(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> BoxFuture<'_, Result<Option<OrderDocument>, ReadError>> {
        Box::pin(async move {
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
        })
    }
}

impl SearchIndex {
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
