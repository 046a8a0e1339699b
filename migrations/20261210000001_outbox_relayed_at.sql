-- A distributed bus (BUS=nats) takes an event from the relay before any
-- projector has made it searchable. `relayed_at` records that the bus has it
-- (the relay's PubAck), so the relay does not claim it again; `published_at`
-- keeps meaning what every reader of the outbox relies on — searchable, its
-- notice recorded — and is set by the projector. The in-process bus sets
-- only `published_at` (taken and projected are one step there).
ALTER TABLE outbox ADD COLUMN relayed_at timestamptz;
DROP INDEX outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (id)
    WHERE published_at IS NULL AND relayed_at IS NULL AND NOT parked;

-- `sightline outbox retry` counts here how often an event was put back in the
-- relay's way: a distributed bus deduplicates on the message id, so a retried
-- event is published under a new one (`<outbox id>.<relay_attempt>`), or the
-- stream would take it for the duplicate of its first publish.
ALTER TABLE outbox ADD COLUMN relay_attempt integer NOT NULL DEFAULT 0;
