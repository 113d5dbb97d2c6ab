-- Redis writes of worker batches come from the transitions themselves instead of one redis_ops row
-- per transition (inserted, read back and deleted in every batch: ~15% of PostgreSQL's time per
-- churn event in the bench, docs/PERFORMANCE.md). A unit applies the ops of the transitions it
-- wrote from memory after commit; a per-partition cursor says up to which transitions id Redis
-- has them. What a failure after commit left behind is every transition past the cursor, read
-- back by the next unit of the partition or by replay. redis_ops keeps what has no transition of
-- its own (opt-out changes, a deleted segment's DEL, a set-based diff's one row per partition).
--
-- Both kinds are replayed in one commit order, so redis_ops takes its ids from the transitions
-- sequence (a partition's rows are committed in id order: every writer holds its lock).

-- No writer may commit between the seeds below and the new defaults.
LOCK TABLE transitions, redis_ops IN ACCESS EXCLUSIVE MODE;

-- One row per partition, updated after every unit: fillfactor keeps those updates HOT.
CREATE TABLE redis_cursors (
    partition  integer PRIMARY KEY,
    applied_id bigint NOT NULL  -- Redis has the ops of every transitions row of this partition with id <= applied_id
) WITH (fillfactor = 50);

-- Pending redis_ops rows (a unit whose Redis step failed) move behind every transition, in their
-- order, so that their ops stay after the history they mirror.
UPDATE redis_ops r SET id = n.new_id
FROM (SELECT o.id, nextval('transitions_id_seq') AS new_id FROM (SELECT id FROM redis_ops ORDER BY id) o) n
WHERE r.id = n.id;
ALTER TABLE redis_ops ALTER COLUMN id SET DEFAULT nextval('transitions_id_seq');
DROP SEQUENCE redis_ops_id_seq;

-- Seed: until now every transition's op had a redis_ops row of its own, so a partition without
-- pending rows has all of its history in Redis. One with pending rows keeps them, and its cursor
-- starts at what its outbox delivered (Kafka output never went ahead of Redis): the transitions
-- after it are replayed once more with those rows — the same ops in the same order.
INSERT INTO redis_cursors (partition, applied_id)
SELECT t.partition,
       CASE WHEN EXISTS (SELECT 1 FROM redis_ops r WHERE r.partition = t.partition)
            THEN COALESCE((SELECT c.sent_id FROM outbox_cursors c WHERE c.partition = t.partition), 0)
            ELSE t.max_id END
FROM (SELECT partition, max(id) AS max_id FROM transitions GROUP BY partition) t;
