-- segment-worker schema v1. PostgreSQL 15–18: no PG 18-only functions.

CREATE TABLE workspaces (
    id              text PRIMARY KEY,
    timezone        text NOT NULL DEFAULT 'UTC',
    default_region  text,
    -- bumped on any change of segments, attributes or timezone: workers reload the catalogue
    catalog_version bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attribute_defs (
    workspace_id text NOT NULL REFERENCES workspaces(id),
    name         text NOT NULL,
    type         text NOT NULL,
    options      jsonb,                -- array of strings for select/multi_select; NULL = open
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

-- One row per customer ever seen; a deleted customer stays as a tombstone (deleted = true,
-- every field cleared) so older events stay ignored and seq numbers continue.
CREATE TABLE customers (
    workspace_id        text NOT NULL,
    customer_id         text NOT NULL,
    partition           integer NOT NULL,           -- owning partition of the input topic
    deleted             boolean NOT NULL DEFAULT false,
    phone               text,
    name                text,
    email               text,
    language            text,
    country             text,
    platform            text,
    -- folded copies (NFC + casefold, computed in Python) that every comparison reads
    phone_f             text,
    name_f              text,
    email_f             text,
    language_f          text,
    country_f           text,
    platform_f          text,
    created_at          timestamptz,
    last_interaction_at timestamptz,
    last_incoming_at    timestamptz,
    marketing_opt_out   boolean NOT NULL DEFAULT false,
    tags                text[] NOT NULL DEFAULT '{}',   -- folded
    tag_labels          jsonb NOT NULL DEFAULT '{}',    -- folded -> display spelling
    attrs               jsonb NOT NULL DEFAULT '{}',    -- values as written
    attrs_f             jsonb NOT NULL DEFAULT '{}',    -- strings folded (arrays element-wise)
    versions            jsonb NOT NULL DEFAULT '{}',    -- "f:x"/"a:x"/"t:x" -> [micros, event_id]
    first_seen_us       bigint,                         -- earliest occurred_at since the tombstone
    deleted_us          bigint,                         -- tombstone version
    deleted_event_id    text,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, customer_id)
);
CREATE INDEX customers_partition ON customers (partition);
CREATE INDEX customers_tags ON customers USING gin (tags);
CREATE INDEX customers_attrs_f ON customers USING gin (attrs_f jsonb_path_ops);
CREATE INDEX customers_created_at ON customers (workspace_id, created_at);
CREATE INDEX customers_last_interaction_at ON customers (workspace_id, last_interaction_at);
CREATE INDEX customers_last_incoming_at ON customers (workspace_id, last_incoming_at);
CREATE INDEX customers_name_f ON customers (workspace_id, name_f text_pattern_ops);
CREATE INDEX customers_phone_f ON customers (workspace_id, phone_f text_pattern_ops);
CREATE INDEX customers_country_f ON customers (workspace_id, country_f);
CREATE INDEX customers_language_f ON customers (workspace_id, language_f);

-- Date/datetime attribute values, typed, for the ticker's range scans (maintained by writers).
CREATE TABLE customer_times (
    workspace_id text NOT NULL,
    attr         text NOT NULL,
    customer_id  text NOT NULL,
    partition    integer NOT NULL,
    value        timestamptz NOT NULL,      -- datetime: the instant; date: that day 00:00 UTC
    month_day    smallint NOT NULL,         -- month*100 + day (date: of the value; datetime: UTC)
    PRIMARY KEY (workspace_id, attr, customer_id)
);
CREATE INDEX customer_times_value ON customer_times (workspace_id, attr, value);

CREATE TABLE segments (
    id           uuid PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces(id),
    name         text NOT NULL,
    name_folded  text NOT NULL,
    description  text,
    type         text NOT NULL CHECK (type IN ('static', 'dynamic')),
    rules        jsonb,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (workspace_id, name_folded)
);
CREATE INDEX segments_ws_created ON segments (workspace_id, created_at DESC, id DESC);

-- Per-partition member counts: a batch updates only its own partitions' rows (no contention).
CREATE TABLE segment_counts (
    segment_id uuid NOT NULL,
    partition  integer NOT NULL,
    count      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (segment_id, partition)
);

-- Rows stay after an exit (is_member = false) so seq never restarts for the pair.
CREATE TABLE memberships (
    segment_id   uuid NOT NULL,
    customer_id  text NOT NULL,
    workspace_id text NOT NULL,
    partition    integer NOT NULL,
    is_member    boolean NOT NULL,
    seq          integer NOT NULL,
    joined_at    timestamptz,
    PRIMARY KEY (segment_id, customer_id)
);
CREATE INDEX memberships_customer ON memberships (workspace_id, customer_id);
CREATE INDEX memberships_members ON memberships (segment_id, joined_at DESC, customer_id DESC) WHERE is_member;

CREATE VIEW segment_memberships AS
    SELECT workspace_id, segment_id, customer_id, joined_at
    FROM memberships WHERE is_member;

-- Every enter/exit/deleted transition: the customer's history and the Kafka outbox (sent = false).
CREATE TABLE transitions (
    id            bigserial PRIMARY KEY,
    partition     integer NOT NULL,
    workspace_id  text NOT NULL,
    segment_id    uuid NOT NULL,
    segment_name  text NOT NULL,
    customer_id   text,                 -- NULL for segment.deleted
    seq           integer,
    kind          text NOT NULL CHECK (kind IN ('entered', 'exited', 'deleted')),
    cause         jsonb NOT NULL,
    at            timestamptz NOT NULL,
    sent          boolean NOT NULL DEFAULT false
);
CREATE INDEX transitions_customer ON transitions (workspace_id, customer_id, id DESC);
CREATE INDEX transitions_unsent ON transitions (partition, id) WHERE NOT sent;

-- Redis writes committed with PostgreSQL, applied after commit, deleted once applied.
CREATE TABLE redis_ops (
    id        bigserial PRIMARY KEY,
    partition integer NOT NULL,
    op        smallint NOT NULL,        -- 1 SADD, 2 SREM, 3 DEL
    key       text NOT NULL,
    member    text
);
CREATE INDEX redis_ops_partition ON redis_ops (partition, id);

-- Ownership epochs (fencing), cache generations and tick positions of input partitions.
CREATE TABLE partitions (
    partition  integer PRIMARY KEY,
    epoch      bigint NOT NULL DEFAULT 0,
    owner      text,
    generation bigint NOT NULL DEFAULT 0,
    ticked_at  timestamptz
);

CREATE TABLE consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE kafka_topics (
    topic      text PRIMARY KEY,
    partitions integer NOT NULL
);

CREATE TABLE api_tokens (
    token_hash   text PRIMARY KEY,
    workspace_id text NOT NULL,          -- '*' = every workspace
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audiences (
    id           uuid PRIMARY KEY,
    workspace_id text NOT NULL,
    segment_ids  uuid[] NOT NULL,
    exclude_opted_out boolean NOT NULL,
    count        bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- Strict, never-failing casts used by compiled rules; they accept exactly what
-- segment_worker.timeutil.try_date / try_datetime accept (same regexes).
CREATE FUNCTION sw_try_date(v jsonb) RETURNS date
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE s text;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'string' THEN RETURN NULL; END IF;
    s := v #>> '{}';
    IF s !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' OR substr(s, 1, 4) = '0000' THEN RETURN NULL; END IF;
    RETURN s::date;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE FUNCTION sw_try_timestamptz(v jsonb) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE s text;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'string' THEN RETURN NULL; END IF;
    s := v #>> '{}';
    IF s !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})$'
       OR substr(s, 1, 4) = '0000' THEN
        RETURN NULL;
    END IF;
    RETURN s::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

-- A JSON number as float8, NULL for anything else (booleans are not numbers).
CREATE FUNCTION sw_num(v jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN (v #>> '{}')::double precision END
$$;
