-- customers.versions comes in two formats: the map written so far, {"<key>": [micros, event_id]},
-- and the grouped one, [[micros, event_id, "<key>", ...], ...] (one group per event: ~4 events
-- against ~23 keys per customer in the bench, so about a third of the bytes PostgreSQL parses on
-- every save — docs/PERFORMANCE.md, "versions grouped by event"). Workers read both from now on
-- and write the one SEGMENT_WORKER_VERSIONS_FORMAT names (the map by default: older workers
-- cannot read groups). SQL that changes versions goes through this function, which keeps the
-- row's format.
--
-- sw_versions_merge(v, add): v with every key of `add` (a map) set to its version in `add`.
-- A key of `add` leaves the group that held it (a group left without keys goes), and `add`'s
-- entries join as one group per version.
CREATE FUNCTION sw_versions_merge(v jsonb, add jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN jsonb_typeof(v) = 'array' THEN
    COALESCE((
        SELECT jsonb_agg(g.kept ORDER BY g.o)
        FROM (
            SELECT y.o, jsonb_build_array(y.g -> 0, y.g -> 1) || COALESCE((
                SELECT jsonb_agg(x.e ORDER BY x.i) FROM jsonb_array_elements(y.g) WITH ORDINALITY AS x(e, i)
                WHERE x.i > 2 AND NOT add ? (x.e #>> '{}')), '[]'::jsonb) AS kept
            FROM jsonb_array_elements(v) WITH ORDINALITY AS y(g, o)
        ) g
        WHERE jsonb_array_length(g.kept) > 2), '[]'::jsonb)
    || COALESCE((
        SELECT jsonb_agg(a.ver || a.keys ORDER BY a.ver)
        FROM (SELECT e.value AS ver, jsonb_agg(e.key ORDER BY e.key) AS keys FROM jsonb_each(add) e GROUP BY e.value) a
    ), '[]'::jsonb)
ELSE v || add END
$$;
