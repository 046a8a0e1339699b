-- Orders have a lifecycle (placed → cancelled) and a currency.
ALTER TABLE orders
    ADD COLUMN status       text NOT NULL DEFAULT 'placed',
    ADD COLUMN currency     text NOT NULL DEFAULT 'USD',
    ADD COLUMN cancelled_at timestamptz;

-- Parked events are out of the relay's way until `sightline outbox retry`.
ALTER TABLE outbox ADD COLUMN parked boolean NOT NULL DEFAULT false;
DROP INDEX outbox_unpublished_idx;
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL AND NOT parked;

CREATE TABLE dead_letters (
    outbox_id bigint PRIMARY KEY REFERENCES outbox (id),
    error     text NOT NULL,
    attempts  integer NOT NULL DEFAULT 1,
    parked_at timestamptz NOT NULL DEFAULT now()
);

-- A notice says an order version became visible, or that it could not be
-- projected (its event was dead-lettered). One of each kind per version.
ALTER TABLE notices
    ADD COLUMN kind   text NOT NULL DEFAULT 'order-visible',
    ADD COLUMN status text NOT NULL DEFAULT 'placed',
    ADD COLUMN error  text;
ALTER TABLE notices DROP CONSTRAINT notices_order_id_order_version_key;
ALTER TABLE notices ADD CONSTRAINT notices_order_version_kind_key UNIQUE (order_id, order_version, kind);

-- The projector's own state for the counter-style read model: the inbox
-- remembers every event already counted (so redelivery counts nothing twice),
-- and the summaries are the counters it writes to the read store.
CREATE TABLE projector_inbox (
    event_id   uuid PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_summaries (
    user_id          uuid PRIMARY KEY,
    -- Bumped on every change; the read store takes it as an external version.
    revision         bigint NOT NULL,
    orders_placed    bigint NOT NULL DEFAULT 0,
    orders_cancelled bigint NOT NULL DEFAULT 0,
    -- {"USD": 1234, ...}: cents of orders placed and not cancelled.
    spent_cents      jsonb NOT NULL DEFAULT '{}',
    last_order_at    timestamptz
);
