-- One owner per table: each table is written only by the module named as its
-- owner; a module listed as a reader reads it inside a statement of its own
-- (a join or subquery that must see both tables at one instant) and never
-- writes it. The rule lives here, on the tables themselves (`\dt+` shows it),
-- because the migrations that made them cannot be edited: sqlx refuses a
-- migration whose checksum changed. tests/api/table_owners.rs reads these
-- comments and checks every SQL statement in crates/ and src/ against them.
-- Format: `owner=<path> [readers=<path>,<path>] [also writes=<path>:<column>]`.

COMMENT ON TABLE users IS
  'owner=crates/core/src/auth/ readers=crates/core/src/write_side/store.rs also writes=crates/core/src/write_side/:write_seq';
-- users.write_seq is the write side's: bumping it takes the user's row lock,
-- which orders one user's writes and gives each its position (the
-- consistency token). Moving it to a table of its own would add a row per
-- user for nothing; the account columns stay auth's alone.

COMMENT ON TABLE sessions IS 'owner=crates/core/src/auth/session.rs';

COMMENT ON TABLE orders IS
  'owner=crates/core/src/write_side/ readers=crates/core/src/read_side/read_your_writes.rs';
-- read_your_writes is the one read path allowed into the write database: it
-- compares an order's version with the outbox in one statement.

COMMENT ON TABLE order_items IS 'owner=crates/core/src/write_side/';

COMMENT ON TABLE outbox IS
  'owner=crates/core/src/outbox/ readers=crates/core/src/visibility/notice_log/,crates/core/src/read_side/read_your_writes.rs,crates/core/src/projector/summaries.rs';
-- notice_log: a notice's commit time is its event's created_at, read as the
-- notice is recorded; read_your_writes: whether a write's event is still
-- pending; summaries: which inbox rows can never be delivered again.

COMMENT ON TABLE dead_letters IS 'owner=crates/core/src/outbox/';

COMMENT ON TABLE notices IS
  'owner=crates/core/src/visibility/ readers=crates/core/src/write_side/store.rs,crates/core/src/outbox/mod.rs';
-- store: whether an order's current version is visible yet (read-your-writes);
-- outbox: on the NATS path an event is published once its notice exists.

COMMENT ON TABLE notice_streams IS 'owner=crates/core/src/visibility/';

COMMENT ON TABLE projector_inbox IS 'owner=crates/core/src/projector/summaries.rs';

COMMENT ON TABLE user_summaries IS
  'owner=crates/core/src/projector/summaries.rs readers=crates/core/src/read_side/postgres/';
-- With READ_STORE=postgres the summaries are the read model's counters.

COMMENT ON TABLE rebuilds IS 'owner=crates/core/src/rebuild_log.rs';

COMMENT ON TABLE order_search IS 'owner=crates/core/src/read_side/postgres/';
-- Kept by a trigger on orders and order_items (20261228000001); read through
-- the order_list view.

COMMENT ON VIEW order_list IS 'owner=crates/core/src/read_side/postgres/';
