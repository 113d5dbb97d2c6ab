-- A set-based membership change (rule change, import) queues its Redis writes as one redis_ops
-- row per (partition, SADD|SREM) carrying every member, instead of one row per member: 100k
-- single-member rows cost more to insert, fetch and delete than the Redis writes themselves.
-- A row has either member (one) or members (many); applying a row applies the op to each.
ALTER TABLE redis_ops ADD COLUMN members text[];
