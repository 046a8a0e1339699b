-- The notice log without a global lock (issue #25). Notices used to be
-- numbered under one advisory lock held through commit, so `seq` order was
-- commit order and a hub could read "everything after seq N". Recordings
-- now run concurrently (each user's stream is still serialised by a lock on
-- that user), so a notice with a lower `seq` may commit after one with a
-- higher. Each notice keeps the id of the transaction that recorded it: a
-- hub reads what became visible between two snapshots
-- (`pg_visible_in_snapshot`), which follows commit order exactly, and never
-- misses a notice whose transaction commits late.
--
-- Existing rows take this migration's transaction id: committed, so visible
-- to every later snapshot, as they were.
ALTER TABLE notices ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- A hub's read starts at the oldest transaction its last snapshot saw running.
CREATE INDEX notices_xid_idx ON notices (xid);
