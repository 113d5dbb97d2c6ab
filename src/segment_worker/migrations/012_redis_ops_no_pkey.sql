-- redis_ops is a queue: rows are read and deleted by (partition, id) (redis_ops_partition) and
-- never looked up by id alone, so its primary key index was one more btree insertion per queued
-- op (~1.9 per churn event) that no statement read (pg_stat_statements and pg_stat_user_indexes
-- in the bench: 189k insertions, 0 scans). The ids stay unique: they come from the sequence.
ALTER TABLE redis_ops DROP CONSTRAINT redis_ops_pkey;
