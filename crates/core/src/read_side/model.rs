//! The one thing query handlers read from: [`ReadModel`], which is either
//! the Elasticsearch store or the same-database shape (`READ_STORE`). The
//! handlers call it the same way in both modes and get the same answers.

use uuid::Uuid;

use super::document::{OrderDocument, SummaryDocument};
use super::index::{IndexError, ReadStore, SearchPage, SortKey};
use super::postgres::PgReadModel;

/// A failure to read the read model, from either store.
#[derive(thiserror::Error, Debug)]
pub enum ReadError {
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The same-database shape could not be read (PostgreSQL down, …).
    #[error("Failed to read the same-database read model: {0}")]
    Database(#[from] sqlx::Error),
}

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
    ) -> Result<SearchPage, ReadError> {
        match self {
            ReadModel::Elasticsearch(store) => Ok(store.search(user_id, q, limit, after).await?),
            ReadModel::Postgres(model) => Ok(model.search(user_id, q, limit, after).await?),
        }
    }

    /// One order of one user, if the read model shows it.
    pub async fn find(&self, user_id: Uuid, id: Uuid) -> Result<Option<OrderDocument>, ReadError> {
        match self {
            ReadModel::Elasticsearch(store) => Ok(store.find(user_id, id).await?),
            ReadModel::Postgres(model) => Ok(model.find(user_id, id).await?),
        }
    }

    /// One user's counters, if anything is counted yet.
    pub async fn summary(&self, user_id: Uuid) -> Result<Option<SummaryDocument>, ReadError> {
        match self {
            ReadModel::Elasticsearch(store) => Ok(store.summary(user_id).await?),
            ReadModel::Postgres(model) => Ok(model.summary(user_id).await?),
        }
    }
}
