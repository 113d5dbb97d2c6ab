-- A log can go back while no worker watches it (the input topic deleted and recreated, or a broker
-- that lost its log, while every worker was frozen or down): no worker saw the topic missing, so no
-- incarnation was bumped (010), and once the new log grows past a stored position, seeking there
-- skips every record before it. Each position now keeps a fingerprint of the record just before it
-- (offset next_offset - 1): its Kafka timestamp (ms) and a 64-bit BLAKE2b of key and value. On
-- assignment the worker fetches that record; missing or different, it reads from the log start.
-- NULL (rows written before this migration): positioned as before.
ALTER TABLE consumer_offsets ADD COLUMN last_timestamp bigint, ADD COLUMN last_hash bigint;
