-- Sightline's write database: users and sessions, the order aggregate, the
-- outbox (which doubles as the event log) and the durable notice log.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    -- Bumped in every order transaction of this user. The row lock serialises
    -- one user's writes, so their positions commit in order: that is what makes
    -- a consistency token ("everything of mine up to N") sound even when other
    -- users' transactions commit out of order.
    write_seq     bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    -- Only a hash of the token is kept, so a leaked table grants no sessions.
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE orders (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id),
    user_write_seq bigint NOT NULL,
    note           text,
    total_cents    bigint NOT NULL,
    version        integer NOT NULL DEFAULT 1,
    placed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX orders_user_write_seq_idx ON orders (user_id, user_write_seq);

CREATE TABLE order_items (
    order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position         integer NOT NULL,
    sku              text NOT NULL,
    quantity         integer NOT NULL,
    unit_price_cents bigint NOT NULL,
    PRIMARY KEY (order_id, position)
);

-- Written in the same transaction as the state change; the relay is the only
-- reader. Rows are kept after publishing: the outbox is also the event log.
CREATE TABLE outbox (
    id                bigserial PRIMARY KEY,
    event_id          uuid NOT NULL UNIQUE,
    event_type        text NOT NULL,
    schema_version    integer NOT NULL,
    aggregate_id      uuid NOT NULL,
    aggregate_version integer NOT NULL,
    user_id           uuid NOT NULL,
    payload           jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    published_at      timestamptz
);
-- Keeps the relay's claim query cheap however long the history grows.
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_aggregate_idx ON outbox (aggregate_id, aggregate_version);

-- One row per order version that search can see. `seq` is the SSE cursor:
-- writers take an advisory lock before inserting, so seq order is commit order
-- and a reader that has seen seq N has seen everything below it.
CREATE TABLE notices (
    seq           bigserial PRIMARY KEY,
    user_id       uuid NOT NULL,
    order_id      uuid NOT NULL,
    order_version integer NOT NULL,
    visible_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, order_version)
);
CREATE INDEX notices_user_seq_idx ON notices (user_id, seq);
