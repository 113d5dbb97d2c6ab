-- A broker that lost its data (the embedded Tansu keeps its log in memory only) comes back with
-- empty topics whose offsets restart at 0: a position stored for the old log means nothing in the
-- new one, and once the new log grows past it, seeking there would skip records. The worker that
-- finds the input topic missing recreates it and bumps its incarnation; positions stored under
-- another incarnation are void (the partition is read from the log start; replays are no-ops).
ALTER TABLE kafka_topics ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;
ALTER TABLE consumer_offsets ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;
