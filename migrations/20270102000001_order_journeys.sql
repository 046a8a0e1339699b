-- Every order version's journey (issue #27): when each stage of the pipeline
-- took it, recorded on the rows the pipeline already writes, in the
-- statements it already runs, so recording costs no round trip of its own.
--
-- On the outbox row (its owner writes them: the marking statements take the
-- times the relay and the projector saw):
--   created_at     committed: the write transaction's outbox insert (set by
--                  `outbox::append` to clock_timestamp(), the last write of
--                  the transaction, so it is the commit's time within a few
--                  hundred microseconds)
--   claimed_at     claimed by the relay
--   handed_at      handed to the bus: the publish acknowledgement (PubAck)
--                  with NATS; the hand-over to the projector in process
--   delivered_at   delivered to a projector (with NATS: taken from the
--                  stream; in process: the same instant as handed_at)
--   indexed_at     the bulk request that wrote it returned
--   searchable_at  the refresh that made it searchable returned
--   retried_at, retry_reason  the first failure that sent it back for
--                  another attempt, and the latest failure's kind
--   journey_pruned the stage times above went with the notice log's
--                  retention (`sightline prune`): no journey is shown
-- Each is written once (the first attempt that reached the stage): a
-- redelivery of what search already shows does not move them.
--
-- On the notice (the notice log's owner writes them): visible_at is the
-- notice being recorded; sent_at / sent_via / sent_by the first time a client
-- was sent it (an event stream or a poll) and which instance sent it, written
-- in batches by each instance (`visibility::deliveries`).
ALTER TABLE outbox
    ADD COLUMN claimed_at     timestamptz,
    ADD COLUMN handed_at      timestamptz,
    ADD COLUMN delivered_at   timestamptz,
    ADD COLUMN indexed_at     timestamptz,
    ADD COLUMN searchable_at  timestamptz,
    ADD COLUMN retried_at     timestamptz,
    ADD COLUMN retry_reason   text,
    ADD COLUMN journey_pruned boolean NOT NULL DEFAULT false;

ALTER TABLE notices
    ADD COLUMN sent_at  timestamptz,
    ADD COLUMN sent_via text,
    ADD COLUMN sent_by  text;

-- The journey reader (crates/core/src/journey.rs) reads the three tables in
-- one statement, so a journey is one instant's truth.
COMMENT ON TABLE outbox IS
  'owner=crates/core/src/outbox/ readers=crates/core/src/visibility/notice_log/,crates/core/src/read_side/read_your_writes.rs,crates/core/src/projector/summaries.rs,crates/core/src/journey.rs';
COMMENT ON TABLE dead_letters IS 'owner=crates/core/src/outbox/ readers=crates/core/src/journey.rs';
COMMENT ON TABLE notices IS
  'owner=crates/core/src/visibility/ readers=crates/core/src/write_side/store.rs,crates/core/src/outbox/mod.rs,crates/core/src/journey.rs';
