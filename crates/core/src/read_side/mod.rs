//! The read side: every query of orders is answered by the read model
//! ([`model::ReadModel`]: Elasticsearch, or with `READ_STORE=postgres` the
//! same-database shape in [`postgres`]), except the explicit
//! read-your-writes paths. The HTTP handlers that ask it are `web::api::orders`.

pub mod document;
pub mod index;
pub mod model;
pub mod postgres;
pub mod read_your_writes;

use sqlx::PgPool;
use uuid::Uuid;

use crate::consistency::ConsistencyToken;
use crate::order::OrderView;
use index::SortKey;
use model::{ReadError, ReadModel};
use read_your_writes::MergedPage;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// One page of a user's orders from the read model, newest first, after
/// `after` and matching `q`; with a consistency token, merged with the
/// user's writes up to it that search does not show yet. Shared by the JSON
/// API and the HTML page.
pub async fn orders_page(
    db: &PgPool,
    read_model: &ReadModel,
    user_id: Uuid,
    q: Option<&str>,
    limit: usize,
    after: Option<&SortKey>,
    token: Option<ConsistencyToken>,
) -> Result<MergedPage, ReadError> {
    // Pending first, then the read model: see `pending_orders`. The page
    // needs at most `limit + 1` of them (the extra one tells whether more follow).
    let pending = match token {
        Some(token) => {
            read_your_writes::pending_orders(db, user_id, token, after, q, limit + 1).await?
        }
        None => vec![],
    };
    let page = read_model.search(user_id, q, limit, after).await?;
    let found: Vec<OrderView> = page.orders.into_iter().map(|d| d.into_view()).collect();
    Ok(read_your_writes::merge_into_page(
        found,
        page.next.is_some(),
        pending,
        limit,
    ))
}
