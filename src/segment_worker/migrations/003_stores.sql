-- Stores: partition locks in one round trip, and per-customer access to customer_times.

-- Session advisory locks (class, partition) taken one by one in ascending order, so two units
-- locking overlapping sets can never deadlock. A unit of work calls it on its own connection.
CREATE FUNCTION sw_lock_partitions(lock_class integer, parts integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE p integer;
BEGIN
    FOR p IN SELECT DISTINCT x FROM unnest(parts) AS x ORDER BY 1 LOOP
        PERFORM pg_advisory_lock(lock_class, p);
    END LOOP;
END $$;

-- save_states resyncs a customer's date/datetime rows: look them up by customer, not by attribute.
CREATE INDEX customer_times_customer ON customer_times (workspace_id, customer_id);
