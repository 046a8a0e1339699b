//! The one thing query handlers read from: [`ReadModel`], which is either
//! the Elasticsearch store or the same-database shape (`READ_STORE`). The
//! handlers call it the same way in both modes and get the same answers.

use uuid::Uuid;

use super::document::{OrderDocument, SummaryDocument};
use super::index::{IndexError, ReadStore, SearchPage, SortKey};
use super::postgres::PgReadModel;

#[derive(Clone)]
pub enum ReadModel {
    /// A separate read store, fed by the relay and projector.
    Elasticsearch(ReadStore),
    /// A read shape over the write database: visible at commit.
    Postgres(PgReadModel),
}

impl ReadModel {
    /// A page of one user's orders, newest first, optionally searched.
    pub async fn search(
        &self,
        user_id: Uuid,
        q: Option<&str>,
        limit: usize,
        after: Option<&SortKey>,
    ) -> Result<SearchPage, IndexError> {
        match self {
            ReadModel::Elasticsearch(store) => store.search(user_id, q, limit, after).await,
            ReadModel::Postgres(model) => model.search(user_id, q, limit, after).await,
        }
    }

    /// One order of one user, if the read model shows it.
    pub async fn find(&self, user_id: Uuid, id: Uuid) -> Result<Option<OrderDocument>, IndexError> {
        match self {
            ReadModel::Elasticsearch(store) => store.find(user_id, id).await,
            ReadModel::Postgres(model) => model.find(user_id, id).await,
        }
    }

    /// One user's counters, if anything is counted yet.
    pub async fn summary(&self, user_id: Uuid) -> Result<Option<SummaryDocument>, IndexError> {
        match self {
            ReadModel::Elasticsearch(store) => store.summary(user_id).await,
            ReadModel::Postgres(model) => model.summary(user_id).await,
        }
    }
}
