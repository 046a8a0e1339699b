//! Property test: whatever the delivery — duplicated, reordered, interrupted
//! by crashes between the projector's steps — the read models end up equal
//! to exactly-once, in-order delivery.
//!
//! The stores are fakes with Elasticsearch's external-version rule (a write
//! lands only with a higher version) and an in-memory inbox; the projection
//! logic under test is the real one: `to_document`, `fold_fresh`, `fold`.

use std::collections::{HashMap, HashSet};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::summaries::{fold, fold_fresh};
use super::to_document;
use crate::order::{Item, OrderStatus};
use crate::outbox::OutboxEvent;
use crate::outbox::events::{self, OrderEvent};
use crate::read_side::document::{OrderDocument, SummaryDocument};

/// Elasticsearch's `version_type=external`: the higher version wins.
#[derive(Debug, PartialEq)]
struct VersionedStore<T> {
    docs: HashMap<Uuid, (i64, T)>,
}

impl<T> Default for VersionedStore<T> {
    fn default() -> Self {
        Self {
            docs: HashMap::new(),
        }
    }
}

impl<T> VersionedStore<T> {
    fn write(&mut self, id: Uuid, version: i64, doc: T) {
        match self.docs.get(&id) {
            Some((current, _)) if *current >= version => {}
            _ => {
                self.docs.insert(id, (version, doc));
            }
        }
    }
}

/// The projector's state: the read store plus its PostgreSQL-side inbox and counters.
#[derive(Default)]
struct World {
    orders: VersionedStore<OrderDocument>,
    summaries: VersionedStore<SummaryDocument>,
    inbox: HashSet<Uuid>,
    counters: HashMap<Uuid, SummaryDocument>,
}

/// How far a delivery of a batch gets before the process dies.
#[derive(Clone, Copy, Debug)]
enum CrashAfter {
    Nothing,
    OrdersWritten,
    Counted,
    Completed,
}

impl World {
    /// The projector's steps for one batch, in its order, stopping at a crash.
    fn deliver(&mut self, batch: &[(OutboxEvent, OrderEvent)], crash: CrashAfter) {
        if matches!(crash, CrashAfter::Nothing) {
            return;
        }
        for (event, order_event) in batch {
            let doc = to_document(event, order_event);
            self.orders.write(doc.id, doc.version, doc);
        }
        if matches!(crash, CrashAfter::OrdersWritten) {
            return;
        }
        // Inbox and counters commit together.
        let fresh: HashSet<Uuid> = batch
            .iter()
            .map(|(e, _)| e.event_id)
            .filter(|id| self.inbox.insert(*id))
            .collect();
        let counted: Vec<_> = batch
            .iter()
            .map(|(e, o)| (e.event_id, e.user_id, o))
            .collect();
        fold_fresh(&mut self.counters, &fresh, &counted);
        if matches!(crash, CrashAfter::Counted) {
            return;
        }
        // Every touched user's summary is written, counted now or before.
        for (event, _) in batch {
            if let Some(summary) = self.counters.get(&event.user_id) {
                self.summaries
                    .write(summary.user_id, summary.revision, summary.clone());
            }
        }
    }
}

fn history(orders: &[(u8, bool, u8)]) -> Vec<(OutboxEvent, OrderEvent)> {
    let users = [Uuid::from_u128(1), Uuid::from_u128(2)];
    let mut out = Vec::new();
    for (n, (user, cancelled, quantity)) in orders.iter().enumerate() {
        let user_id = users[usize::from(*user % 2)];
        let placed = events::OrderPlacedV2 {
            order_id: Uuid::from_u128(1000 + n as u128),
            user_id,
            username: format!("user{}", user % 2),
            items: vec![Item {
                sku: format!("SKU-{n}"),
                quantity: i32::from(*quantity) + 1,
                unit_price_cents: 100,
            }],
            total_cents: (i64::from(*quantity) + 1) * 100,
            currency: if n % 3 == 0 { "EUR" } else { "USD" }.to_owned(),
            note: None,
            placed_at: Utc.timestamp_opt(1_800_000_000 + n as i64, 0).unwrap(),
        };
        let outbox = |id: usize, version: i32| OutboxEvent {
            id: id as i64 + 1,
            event_id: Uuid::new_v4(),
            event_type: "test".into(),
            schema_version: 0,
            aggregate_id: placed.order_id,
            aggregate_version: version,
            user_id,
            payload: serde_json::Value::Null,
            created_at: Utc::now(),
        };
        let placed_event = OrderEvent::Placed(placed.clone());
        out.push((outbox(out.len(), 1), placed_event));
        if *cancelled {
            let cancelled_event = OrderEvent::Cancelled(events::OrderCancelledV1 {
                order: placed.clone(),
                cancelled_at: placed.placed_at + chrono::Duration::seconds(5),
            });
            out.push((outbox(out.len(), 2), cancelled_event));
        }
    }
    out
}

fn crash_strategy() -> impl Strategy<Value = CrashAfter> {
    prop_oneof![
        Just(CrashAfter::Nothing),
        Just(CrashAfter::OrdersWritten),
        Just(CrashAfter::Counted),
        Just(CrashAfter::Completed),
        Just(CrashAfter::Completed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_delivery_ends_equal_to_exactly_once_in_order(
        orders in prop::collection::vec((0u8..2, any::<bool>(), 0u8..5), 1..8),
        deliveries in prop::collection::vec(
            (prop::collection::vec(any::<prop::sample::Index>(), 1..5), crash_strategy()),
            0..20,
        ),
    ) {
        let events = history(&orders);

        // The reference: every event once, in order, no crash.
        let mut expected = World::default();
        for event in &events {
            expected.deliver(std::slice::from_ref(event), CrashAfter::Completed);
        }

        // Random batches (duplicates, any order), random crashes...
        let mut world = World::default();
        for (picks, crash) in &deliveries {
            let batch: Vec<_> = picks.iter().map(|i| i.get(&events).clone()).collect();
            world.deliver(&batch, *crash);
        }
        // ...then at-least-once delivery finishes: everything unacknowledged
        // arrives again (here: all of it, in reverse, for good measure).
        let rest: Vec<_> = events.iter().rev().cloned().collect();
        world.deliver(&rest, CrashAfter::Completed);

        prop_assert_eq!(&world.orders, &expected.orders);
        prop_assert_eq!(&world.summaries, &expected.summaries);
    }
}

#[test]
fn the_reference_itself_counts_what_happened() {
    let events = history(&[(0, true, 1), (0, false, 0), (1, false, 4)]);
    let mut world = World::default();
    world.deliver(&events, CrashAfter::Completed);
    let alice = &world.summaries.docs[&Uuid::from_u128(1)].1;
    assert_eq!(alice.orders_placed, 2);
    assert_eq!(alice.orders_cancelled, 1);
    // Order 0 (EUR, 200) was cancelled; order 1 (USD, 100) stands.
    assert_eq!(alice.spent_cents.get("EUR"), Some(&0));
    assert_eq!(alice.spent_cents.get("USD"), Some(&100));
    let cancelled = &world.orders.docs[&Uuid::from_u128(1000)].1;
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(cancelled.version, 2);
    // Folding by hand agrees.
    let mut by_hand = SummaryDocument::default();
    for (_, e) in events
        .iter()
        .filter(|(e, _)| e.user_id == Uuid::from_u128(1))
    {
        fold(&mut by_hand, e);
    }
    assert_eq!(by_hand.orders_placed, alice.orders_placed);
}
