//! The one thing query handlers read from: [`ReadModel`], a handle on
//! whichever store `READ_STORE` chose — the Elasticsearch index
//! ([`SearchIndex`](super::index::SearchIndex)) or the same-database shape
//! ([`PgReadModel`](super::postgres::PgReadModel)). Each query is declared
//! once, in [`ReadQueries`], and written once per store; the handlers call it
//! the same way in both modes and get the same answers.

use std::ops::Deref;
use std::sync::Arc;

use futures::future::BoxFuture;
use uuid::Uuid;

use super::document::{OrderDocument, SummaryDocument};
use super::index::{IndexError, SearchPage, SortKey};

/// A failure to read the read model, from either store.
#[derive(thiserror::Error, Debug)]
pub enum ReadError {
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The same-database shape could not be read (PostgreSQL down, …).
    #[error("Failed to read the same-database read model: {0}")]
    Database(#[from] sqlx::Error),
}

/// The queries every read model answers.
pub trait ReadQueries: Send + Sync + 'static {
    /// A page of one user's orders, newest first (placed_at, then id),
    /// after `after`, optionally searched: every word of `q` begins a word
    /// of the skus or the note.
    fn search<'a>(
        &'a self,
        user_id: Uuid,
        q: Option<&'a str>,
        limit: usize,
        after: Option<&'a SortKey>,
    ) -> BoxFuture<'a, Result<SearchPage, ReadError>>;

    /// One order of one user, if search can find it.
    fn find(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> BoxFuture<'_, Result<Option<OrderDocument>, ReadError>>;

    /// One user's counters, if anything is counted yet.
    fn summary(&self, user_id: Uuid) -> BoxFuture<'_, Result<Option<SummaryDocument>, ReadError>>;
}

/// The read model the handlers share: cheap to clone, and every query of
/// [`ReadQueries`] is called on it directly (`read_model.search(…)`).
#[derive(Clone)]
pub struct ReadModel(Arc<dyn ReadQueries>);

impl ReadModel {
    pub fn new(store: impl ReadQueries) -> Self {
        Self(Arc::new(store))
    }
}

impl Deref for ReadModel {
    type Target = dyn ReadQueries;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
