-- No statement can use customers_attrs_f: a jsonb_path_ops GIN index serves only @>, @? and @@ on
-- attrs_f itself, and rules read attributes by extraction (attrs_f -> 'name', through the sw_*
-- functions). Yet every customer write whose attributes changed added an entry per attribute, and
-- the inserting batch paid for flushing GIN's pending list (measured: save_states of ~60
-- customers 13 ms on average, 260 ms when a flush fell on it).
DROP INDEX IF EXISTS customers_attrs_f;
