//! The orders application service: the one write flow that the JSON API and
//! the no-JS forms both call. Placing and cancelling each take one write from
//! the user's limit, commit through `place_order` / `cancel_order`, and
//! answer with the consistency token that lets the user's next read include
//! the write.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use super::place_order::{self, Placed};
use super::store::StoredOrder;
use super::validation::{self, PlaceOrderRequest};
use super::write_limit::WriteLimiter;
use super::{InTransaction, WriteError, cancel_order};
use crate::auth::CurrentUser;
use crate::consistency::ConsistencyToken;

/// What placing and cancelling need: the write database, the work start-up
/// adds to each write's transaction, and the per-user write limit.
pub struct Orders {
    db: PgPool,
    in_transaction: Option<Arc<dyn InTransaction>>,
    limit: WriteLimiter,
}

/// One write taken from a user's limit, spent by [`Orders::place_in_turn`]
/// (only [`Orders::take_turn`] makes one, so no write skips the limit).
pub struct WriteTurn(());

/// A write done: the order as it is now, and the token covering it.
pub struct Written {
    pub order: StoredOrder,
    /// True when this call committed the order; false for a faithful retry
    /// of one already placed, or a cancel of a cancelled order.
    pub created: bool,
    /// Every write of this user up to and including this one.
    pub token: ConsistencyToken,
}

impl Orders {
    pub fn new(
        db: PgPool,
        in_transaction: Option<Arc<dyn InTransaction>>,
        limit: WriteLimiter,
    ) -> Self {
        Self {
            db,
            in_transaction,
            limit,
        }
    }

    /// Places an order: one write from the user's limit (taken first, so a
    /// refused request is not even validated), every rule checked, then the
    /// order and its event committed together. The same id with the same
    /// content again is the order as it is now, not a second order.
    pub async fn place(
        &self,
        user: &CurrentUser,
        request: PlaceOrderRequest,
    ) -> Result<Written, WriteError> {
        let turn = self.take_turn(user)?;
        self.place_in_turn(turn, user, request).await
    }

    /// Takes one write from the user's limit ahead of placing, for a caller
    /// that checks its own input first (the form): a request refused there
    /// has still cost its sender a write, as on the JSON path.
    pub fn take_turn(&self, user: &CurrentUser) -> Result<WriteTurn, WriteError> {
        self.limit.check(user.id)?;
        Ok(WriteTurn(()))
    }

    /// Places an order with a write already taken by [`Orders::take_turn`].
    pub async fn place_in_turn(
        &self,
        _turn: WriteTurn,
        user: &CurrentUser,
        request: PlaceOrderRequest,
    ) -> Result<Written, WriteError> {
        let order = validation::validate(request)?;
        let placed =
            place_order::place_order(&self.db, self.in_transaction.as_deref(), user, order).await?;
        let (order, created) = match placed {
            Placed::Created(order) => (order, true),
            Placed::AlreadyPlaced(order) => (order, false),
        };
        // The token covers the order's own position.
        let token = ConsistencyToken {
            write_seq: order.user_write_seq,
        };
        Ok(Written {
            order,
            created,
            token,
        })
    }

    /// Cancels the user's order (one write from the limit); cancelling twice
    /// changes nothing. Another user's order is [`WriteError::NotFound`].
    pub async fn cancel(&self, user: &CurrentUser, id: Uuid) -> Result<Written, WriteError> {
        self.limit.check(user.id)?;
        let cancellation =
            cancel_order::cancel_order(&self.db, self.in_transaction.as_deref(), user, id).await?;
        Ok(Written {
            order: cancellation.order,
            created: false,
            token: ConsistencyToken {
                write_seq: cancellation.write_seq,
            },
        })
    }
}
