-- Per-user stream cursors.
--
-- The SSE id used to be the global `seq`: it leaked every other user's
-- activity (the gap between two of your notices is everyone's order volume)
-- and a cursor from another database or a restored backup looked valid. Now
-- every notice also gets
--   user_seq — its position in its user's stream (1, 2, 3, … in commit order),
--   chain    — a short hash over the user's whole stream up to it:
--              left(sha256(<previous chain> ':' order_id ':' version ':' kind), 8 hex),
--              starting from '0'.
-- The client's cursor is `<user_seq>-<chain>`: it names one exact history, so
-- a log that diverged from it (a restore, a reset sequence, another database)
-- cannot vouch for it and answers `reset` instead of replaying a part.
-- The global `seq` stays, internal: the hubs' catch-up order.
ALTER TABLE notices
    ADD COLUMN user_seq bigint,
    ADD COLUMN chain    text;

WITH RECURSIVE numbered AS (
    SELECT seq, user_id, order_id, order_version, kind,
           row_number() OVER (PARTITION BY user_id ORDER BY seq) AS user_seq
    FROM notices
), chained AS (
    SELECT n.seq, n.user_id, n.user_seq,
           left(encode(sha256(convert_to(
               '0:' || n.order_id::text || ':' || n.order_version::text || ':' || n.kind,
               'UTF8')), 'hex'), 8) AS chain
    FROM numbered n WHERE n.user_seq = 1
    UNION ALL
    SELECT n.seq, n.user_id, n.user_seq,
           left(encode(sha256(convert_to(
               c.chain || ':' || n.order_id::text || ':' || n.order_version::text || ':' || n.kind,
               'UTF8')), 'hex'), 8)
    FROM chained c
    JOIN numbered n ON n.user_id = c.user_id AND n.user_seq = c.user_seq + 1
)
UPDATE notices SET user_seq = chained.user_seq, chain = chained.chain
FROM chained WHERE notices.seq = chained.seq;

ALTER TABLE notices
    ALTER COLUMN user_seq SET NOT NULL,
    ALTER COLUMN chain    SET NOT NULL;
-- Serves replay (a user's notices after a position) and cursor checks.
CREATE UNIQUE INDEX notices_user_position_idx ON notices (user_id, user_seq);
DROP INDEX notices_user_seq_idx;
-- Serves pruning by age.
CREATE INDEX notices_visible_at_idx ON notices (visible_at);

-- One row per user with notices: the head of their stream (what the next
-- notice continues from, also once the notices themselves are pruned) and how
-- far it has been pruned. A cursor below `pruned_seq` would need notices that
-- are gone: it gets `reset`; one at or above it replays completely.
CREATE TABLE notice_streams (
    user_id      uuid PRIMARY KEY,
    last_seq     bigint NOT NULL,
    last_chain   text NOT NULL,
    pruned_seq   bigint NOT NULL DEFAULT 0,
    pruned_chain text NOT NULL DEFAULT '0'
);
INSERT INTO notice_streams (user_id, last_seq, last_chain)
SELECT DISTINCT ON (user_id) user_id, user_seq, chain
FROM notices ORDER BY user_id, user_seq DESC;

-- Serves pruning of expired sessions.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
