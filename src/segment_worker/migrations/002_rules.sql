-- Typed reads of attribute values for compiled rules (segment_worker.rules.sql).
--
-- Each function returns NULL exactly where the Python evaluator (rules.predicate, timeutil) sees a
-- missing value, so the two evaluators agree. They are plain SQL (inlined by the planner, no
-- per-row subtransaction), and CASE guards every cast so no input can raise an error.
--
-- 001's sw_try_timestamptz relied on PostgreSQL's timestamptz input, which differs from Python's
-- datetime.fromisoformat: it accepts hour 24 ("…T24:00:00Z") and rejects offsets of 16 hours or
-- more, which Python accepts up to ±23:59 (minutes up to 99 as long as the total stays under
-- 24 hours). 001's sw_num raised "out of range" on numbers beyond a double (e.g. 1e400), failing
-- the whole query. Both are replaced here.

-- 'YYYY-MM-DD' of a real calendar day, years 0001–9999 (Python's date range), else NULL.
CREATE FUNCTION sw_date_text(s text) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        CASE WHEN substr(s, 1, 4) <> '0000'
              AND substr(s, 6, 2)::int BETWEEN 1 AND 12
              AND substr(s, 9, 2)::int BETWEEN 1 AND
                  CASE substr(s, 6, 2)::int
                      WHEN 2 THEN
                          CASE WHEN substr(s, 1, 4)::int % 4 = 0
                                AND (substr(s, 1, 4)::int % 100 <> 0 OR substr(s, 1, 4)::int % 400 = 0)
                               THEN 29 ELSE 28 END
                      WHEN 4 THEN 30 WHEN 6 THEN 30 WHEN 9 THEN 30 WHEN 11 THEN 30
                      ELSE 31 END
        THEN s::date END
    END
$$;

CREATE OR REPLACE FUNCTION sw_try_date(v jsonb) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sw_date_text(CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END)
$$;

-- An RFC 3339 string as timeutil.try_datetime reads it: the DATETIME_RE layout, then Python's
-- limits: a real date, hour <= 23, minute <= 59, an offset of at most 23:59.
CREATE FUNCTION sw_timestamptz_text(s text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]{1,6})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$' THEN
        CASE WHEN sw_date_text(substr(s, 1, 10)) IS NOT NULL
              AND substr(s, 12, 2)::int <= 23
              AND substr(s, 15, 2)::int <= 59
              AND (right(s, 1) IN ('Z', 'z')
                   OR substr(s, length(s) - 4, 2)::int * 60 + right(s, 2)::int < 1440)
        THEN ((substr(s, 1, 10) || ' '
              || substr(s, 12, length(s) - 11 - CASE WHEN right(s, 1) IN ('Z', 'z') THEN 1 ELSE 6 END)
             )::timestamp
             - CASE WHEN right(s, 1) IN ('Z', 'z') THEN interval '0'
                    ELSE make_interval(mins => (CASE substr(s, length(s) - 5, 1) WHEN '-' THEN -1 ELSE 1 END)
                                              * (substr(s, length(s) - 4, 2)::int * 60 + right(s, 2)::int))
               END)
             AT TIME ZONE 'UTC'
        END
    END
$$;

CREATE OR REPLACE FUNCTION sw_try_timestamptz(v jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sw_timestamptz_text(CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END)
$$;

-- Numbers a double cannot hold: like Python's json.loads, an underflow reads as 0 and an overflow
-- (inf, or an int too large for a float) as missing. Only reached for magnitudes near the limits.
CREATE FUNCTION sw_num_extreme(n numeric) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN n::text::double precision;
EXCEPTION WHEN numeric_value_out_of_range THEN
    RETURN CASE WHEN abs(n) < 1 THEN 0 END;
END $$;

-- A JSON number as float8, NULL for anything else (booleans are not numbers) or a non-finite one.
CREATE OR REPLACE FUNCTION sw_num(v jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN
        CASE WHEN abs(v::numeric) BETWEEN 1e-300 AND 1e300 OR v::numeric = 0
             THEN (v #>> '{}')::double precision
             ELSE sw_num_extreme(v::numeric) END
    END
$$;

-- A text/select attribute value: a JSON string, NULL for anything else.
CREATE FUNCTION sw_str(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END
$$;

-- A multi_select attribute value: a JSON array of strings, NULL for anything else.
CREATE FUNCTION sw_str_array(v jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'array'
                 AND NOT jsonb_path_exists(v, 'strict $[*] ? (@.type() != "string")')
           THEN ARRAY(SELECT jsonb_array_elements_text(v)) END
$$;

-- Local wall time of instant v from a zone table built by Python (rules.timectx.zone_table):
-- the offset is offs[1 + number of trans <= v]; from cycle_start on, offsets repeat every 400
-- Gregorian years (146097 days), so v is first moved back into the table's cycle. PostgreSQL's
-- own time zone data is not used: its tzdata release may differ from Python's.
CREATE FUNCTION sw_local_time(v timestamptz, trans timestamptz[], offs integer[], cycle_start timestamptz)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (v AT TIME ZONE 'UTC') + make_interval(secs => offs[1 + width_bucket(
        CASE WHEN v >= cycle_start
             THEN v - floor(extract(epoch FROM v - cycle_start) / 12622780800) * interval '146097 days'
             ELSE v END,
        trans)])
$$;
