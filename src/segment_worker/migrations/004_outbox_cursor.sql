-- Outbox delivery as a cursor per partition instead of a flag on every history row.
--
-- Flagging sent rows (UPDATE transitions SET sent = true) rewrote each row once more (non-HOT:
-- the flag was in the partial index predicate), left dead tuples behind and made the partial
-- index of unsent rows a scan of dead entries: fetch_unsent cost grew with history. A partition's
-- rows are committed in id order (every writer of a partition inserts under its advisory lock and
-- commits before unlocking), so "delivered up to id N" describes the sent rows exactly.

-- No writer or sender may commit between the seed below and the column drop.
LOCK TABLE transitions IN ACCESS EXCLUSIVE MODE;

-- One row per partition, updated after every send: fillfactor keeps those updates HOT.
CREATE TABLE outbox_cursors (
    partition integer PRIMARY KEY,
    sent_id   bigint NOT NULL  -- every transitions row of this partition with id <= sent_id was delivered
) WITH (fillfactor = 50);

-- Seed: below a partition's first unsent row everything was delivered; a partition with no unsent
-- row is delivered up to its last row. Sent rows above an unsent one (not expected: rows were
-- marked in id order) would be sent again: a duplicate with the same CloudEvent id, never a loss.
INSERT INTO outbox_cursors (partition, sent_id)
SELECT partition, COALESCE(min(id) FILTER (WHERE NOT sent) - 1, max(id))
FROM transitions
GROUP BY partition;

DROP INDEX transitions_unsent;
ALTER TABLE transitions DROP COLUMN sent;
-- fetch_unsent reads each partition from its cursor through this index.
CREATE INDEX transitions_partition_id ON transitions (partition, id);
