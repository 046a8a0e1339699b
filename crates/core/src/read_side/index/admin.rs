//! Index management, for start-up (the aliases and their mappings), the
//! projector's repair of a deleted alias, and `sightline rebuild` (bare
//! indices, counts, the atomic alias swap, deletion).

use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsAliasParts, IndicesGetAliasParts, IndicesRefreshParts,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{IndexError, SearchIndex, check, read_json, summary_mappings};

impl SearchIndex {
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
}
