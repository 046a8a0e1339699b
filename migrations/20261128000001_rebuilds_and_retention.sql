-- `sightline rebuild` replays the outbox (the event log) into a fresh index
-- and swaps the alias; this table is what lets an interrupted rebuild resume
-- into the same indices instead of starting over.
CREATE TABLE rebuilds (
    id                       bigserial PRIMARY KEY,
    -- The indices being built (not behind any alias until the swap).
    orders_index             text NOT NULL,
    summaries_index          text NOT NULL,
    started_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Every event up to this id has been replayed, except in the gaps: id
    -- ranges below it that were missing when it read past them (a
    -- transaction still open, rolled back, or pruned). Each gap is kept with
    -- the snapshot xmax read after it was seen; once every transaction below
    -- that has ended, nothing more can appear in it, and it is dropped.
    last_outbox_id           bigint NOT NULL DEFAULT 0,
    gap_starts               bigint[] NOT NULL DEFAULT '{}',
    gap_ends                 bigint[] NOT NULL DEFAULT '{}',
    gap_xmaxes               bigint[] NOT NULL DEFAULT '{}',
    replayed                 bigint NOT NULL DEFAULT 0,
    -- What the aliases pointed at when the swap happened.
    previous_orders_index    text,
    previous_summaries_index text,
    finished_at              timestamptz,
    -- 'swapped' or 'abandoned' once finished.
    outcome                  text
);
-- At most one rebuild in progress: a second `rebuild` resumes it.
CREATE UNIQUE INDEX rebuilds_one_unfinished_idx ON rebuilds ((true)) WHERE finished_at IS NULL;

-- Serves `outbox prune` (`published_at < cutoff`) and the rebuild's search
-- for summaries changed while it copied them (`published_at >= copy start`).
-- Publishing already could not be a HOT update (`outbox_pending_idx`'s
-- predicate reads published_at), so this adds one index entry per publish.
CREATE INDEX outbox_published_at_idx ON outbox (published_at);
