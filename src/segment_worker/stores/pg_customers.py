"""Customer state I/O: load states with their memberships, upsert states, keep ``customer_times``.

Every function takes an asyncpg connection on which ``init_connection`` set the jsonb codec
(``stores.postgres.create_pool`` does it) and makes one round trip per call, whatever the size of
the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ..config import VersionsFormat
from ..state import CustomerKey, CustomerRecord, CustomerState, intern_segment
from ..timeutil import Version, try_date, try_datetime


def json_default(value: Any) -> Any:
    """orjson's ``default`` for the jsonb codec (``stores.postgres``): sets as sorted arrays."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

# SQL type of every customers column that mirrors a CustomerState field (names are 1:1).
COLUMN_TYPES: dict[str, str] = {
    "workspace_id": "text",
    "customer_id": "text",
    "partition": "integer",
    "deleted": "boolean",
    "phone": "text",
    "name": "text",
    "email": "text",
    "language": "text",
    "country": "text",
    "platform": "text",
    "phone_f": "text",
    "name_f": "text",
    "email_f": "text",
    "language_f": "text",
    "country_f": "text",
    "platform_f": "text",
    "created_at": "timestamptz",
    "last_interaction_at": "timestamptz",
    "last_incoming_at": "timestamptz",
    "marketing_opt_out": "boolean",
    "tags": "text[]",
    "tag_labels": "jsonb",
    "attrs": "jsonb",
    "attrs_f": "jsonb",
    "versions": "jsonb",
    "first_seen_us": "bigint",
    "deleted_us": "bigint",
    "deleted_event_id": "text",
}
_FIELDS = tuple(f.name for f in dataclasses.fields(CustomerState))
if set(_FIELDS) != set(COLUMN_TYPES):  # pragma: no cover - guards a schema/dataclass drift at import
    raise RuntimeError(
        f"CustomerState fields and customers columns differ: {set(_FIELDS) ^ set(COLUMN_TYPES)}"
    )

_COLS = ", ".join(_FIELDS)
_RECORDSET = ", ".join(f"{c} {COLUMN_TYPES[c]}" for c in _FIELDS)
_VALUE_COLS = [c for c in _FIELDS if c not in ("workspace_id", "customer_id")]
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_COLS)
# Saving an unchanged state (a replayed batch) rewrites no row: no dead tuple, no index churn.
_OLD_ROW = ", ".join(f"t.{c}" for c in _VALUE_COLS)
_NEW_ROW = ", ".join(f"EXCLUDED.{c}" for c in _VALUE_COLS)
_CHANGED = f"({_OLD_ROW}) IS DISTINCT FROM ({_NEW_ROW})"

# Typed value and month*100+day of each declared date/datetime attribute of the given customers
# (a value of the wrong shape yields no row: it counts as missing, as in both evaluators).
_TIMES_OF = """
    SELECT s.workspace_id, d.name AS attr, s.customer_id, s.partition, v.value,
           (extract(month FROM v.value AT TIME ZONE 'UTC') * 100
            + extract(day FROM v.value AT TIME ZONE 'UTC'))::smallint AS month_day
    FROM {src} s
    JOIN attribute_defs d ON d.workspace_id = s.workspace_id AND d.type IN ('date', 'datetime')
    CROSS JOIN LATERAL (SELECT CASE d.type
        WHEN 'date' THEN sw_try_date(s.attrs -> d.name)::timestamp AT TIME ZONE 'UTC'
        ELSE sw_try_timestamptz(s.attrs -> d.name) END AS value) v
    WHERE v.value IS NOT NULL {extra}
"""

_SAVE_SQL = f"""
WITH src AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x({_RECORDSET})
),
up AS (
    INSERT INTO customers AS t ({_COLS}, updated_at)
    SELECT {_COLS}, now() FROM src
    ON CONFLICT (workspace_id, customer_id) DO UPDATE SET {_UPDATES}, updated_at = now()
    WHERE {_CHANGED}
),
-- The worker parsed the date/datetime-shaped attribute values already (timeutil, which agrees
-- with sw_try_date/sw_try_timestamptz); attribute_defs, read here under the partition locks,
-- decides which of them count. A regex parse per row in SQL cost ~10-150 µs.
newt AS MATERIALIZED (
    SELECT x.workspace_id, x.attr, x.customer_id, x.partition, v.value,
           (extract(month FROM v.value AT TIME ZONE 'UTC') * 100
            + extract(day FROM v.value AT TIME ZONE 'UTC'))::smallint AS month_day
    FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::timestamptz[], $8::text[])
         AS x(workspace_id, customer_id, attr, partition, type, value, raw)
    JOIN attribute_defs d ON d.workspace_id = x.workspace_id AND d.name = x.attr AND d.type = x.type
    -- raw: a value whose instant asyncpg cannot send (see time_values), read by SQL instead.
    CROSS JOIN LATERAL (SELECT COALESCE(x.value, CASE x.type
        WHEN 'date' THEN sw_try_date(to_jsonb(x.raw))::timestamp AT TIME ZONE 'UTC'
        ELSE sw_try_timestamptz(to_jsonb(x.raw)) END) AS value) v
),
del AS (
    DELETE FROM customer_times t USING unnest($9::text[], $10::text[]) AS s(workspace_id, customer_id)
    WHERE t.workspace_id = s.workspace_id AND t.customer_id = s.customer_id
      -- NOT IN over non-null columns runs as a hashed subplan; NOT EXISTS was planned as a
      -- nested-loop anti-join (newt is estimated at 2 rows), quadratic in the batch size.
      AND (t.workspace_id, t.attr, t.customer_id) NOT IN (SELECT workspace_id, attr, customer_id FROM newt)
),
ins AS (
    INSERT INTO customer_times AS t (workspace_id, attr, customer_id, partition, value, month_day)
    SELECT * FROM newt
    ON CONFLICT (workspace_id, attr, customer_id) DO UPDATE
    SET partition = EXCLUDED.partition, value = EXCLUDED.value, month_day = EXCLUDED.month_day
    WHERE (t.partition, t.value, t.month_day) IS DISTINCT FROM
          (EXCLUDED.partition, EXCLUDED.value, EXCLUDED.month_day)
)
SELECT count(*) FROM src
"""

_LOAD_STATES_SQL = f"""
SELECT {", ".join("c." + f for f in _FIELDS)}
FROM unnest($1::text[], $2::text[]) AS k(ws, cid)
JOIN customers c ON c.workspace_id = k.ws AND c.customer_id = k.cid
"""

# No joined_at: nothing in the worker reads it back (write_transitions sets it from transitions).
# One row per customer with its rows' segments and ``membership_code``s as two arrays: a customer
# has ~20 rows (members or not) in the bench, and a row each cost the worker a Record and
# PostgreSQL a DataRow (docs/PERFORMANCE.md, "Issue 17"). LATERAL: one index range per customer.
_LOAD_MEMBERSHIPS_SQL = """
SELECT k.ws, k.cid, m.segments, m.codes
FROM unnest($1::text[], $2::text[]) AS k(ws, cid)
CROSS JOIN LATERAL (
    SELECT array_agg(m.segment_id) AS segments, array_agg(m.seq * 2 + m.is_member::int) AS codes
    FROM memberships m WHERE m.workspace_id = k.ws AND m.customer_id = k.cid
) m
WHERE m.segments IS NOT NULL
"""


def _check_aware(states: Sequence[CustomerState]) -> None:
    for s in states:
        for v in (s.created_at, s.last_interaction_at, s.last_incoming_at):
            if v is not None and v.tzinfo is None:
                raise ValueError(f"customer {s.customer_id!r}: datetimes must be timezone-aware, got {v!r}")


def read_versions(stored: Any) -> dict[str, Version]:
    """``customers.versions`` in either stored format (migration 014): the map ``{key: [micros,
    event_id]}`` or the groups ``[[micros, event_id, key, ...], ...]`` (a key in two groups keeps
    the greater version).

    One Version tuple per event, not per key: the writes of one event (an upsert's fields, an
    attributes_set's attributes) share it, as they do after apply_event. Most of a cached
    record's bytes were these tuples and their event-id strings."""
    versions: dict[str, Version] = {}
    if type(stored) is list:
        for g in stored:
            v: Version = (g[0], g[1])
            for k in g[2:]:
                old = versions.get(k)
                if old is None or old < v:
                    versions[k] = v
        return versions
    by_event: dict[str, Version] = {}
    for k, (us, eid) in stored.items():
        got = by_event.get(eid)
        if got is None or got[0] != us:
            got = by_event[eid] = (us, eid)
        versions[k] = got
    return versions


def grouped_versions(versions: Mapping[str, Version]) -> list[list[Any]]:
    """``versions`` in the grouped format (``read_versions``): one ``[micros, event_id, key, ...]``
    per version."""
    groups: dict[Version, list[Any]] = {}
    for k, v in versions.items():
        g = groups.get(v)
        if g is None:
            groups[v] = [v[0], v[1], k]
        else:
            g.append(k)
    return list(groups.values())


def _row_to_state(r: Sequence[Any]) -> CustomerState:
    s = CustomerState(*r)  # the SELECT lists the columns in field order
    s.tags = set(s.tags)
    s.versions = read_versions(s.versions)
    # Folded copies equal to the original (numbers, booleans, lower-case text) share its object.
    attrs, folded = s.attrs, s.attrs_f
    for k, fv in folded.items():
        v = attrs.get(k)
        if v == fv and type(v) is type(fv):
            folded[k] = v
    for name in ("phone", "name", "email", "language", "country", "platform"):
        v = getattr(s, name)
        if v is not None and v == getattr(s, name + "_f"):
            setattr(s, name + "_f", v)
    return s


async def load_records(
    conn: asyncpg.Connection, keys: Sequence[CustomerKey]
) -> dict[CustomerKey, CustomerRecord]:
    """State and ALL membership rows (members or not: ``seq`` continues) of each key.

    Every requested key is in the answer; ``state`` is None for a customer never seen.
    """
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    ws = [k[0] for k in unique]
    cid = [k[1] for k in unique]
    states = await conn.fetch(_LOAD_STATES_SQL, ws, cid)
    memberships = await conn.fetch(_LOAD_MEMBERSHIPS_SQL, ws, cid)
    return records_from_rows(unique, states, memberships)


def records_from_rows(
    keys: Sequence[CustomerKey], states: Sequence[Sequence[Any]], memberships: Sequence[Sequence[Any]]
) -> dict[CustomerKey, CustomerRecord]:
    """Records of ``keys`` from the rows of ``_LOAD_STATES_SQL`` and ``_LOAD_MEMBERSHIPS_SQL``
    (workspace, customer, segment ids, ``membership_code``s)."""
    out: dict[CustomerKey, CustomerRecord] = {k: CustomerRecord(state=None) for k in keys}
    for r in states:
        out[(r[0], r[1])].state = _row_to_state(r)
    for ws, cid, segments, codes in memberships:
        into = out[(ws, cid)].codes
        for seg, code in zip(segments, codes, strict=True):
            into[intern_segment(seg)] = code  # = membership_code(is_member, seq), computed in SQL
    return out


async def save_states(
    conn: asyncpg.Connection,
    states: Sequence[CustomerState],
    *,
    times_of: Collection[CustomerKey] | None = None,
    versions_format: VersionsFormat = "map",
) -> int:
    """Upsert every column of each state and resync its rows of ``customer_times``.

    ``customer_times`` gets one row per attribute declared ``date``/``datetime`` in
    ``attribute_defs`` whose value is valid; rows of unset or invalid values are deleted. When an
    attribute is declared or its type changes, call ``refresh_customer_times`` for the customers
    saved before. ``times_of``: resync only these customers (those whose date or datetime
    attributes changed since their rows were last synced; None: all). If a key appears twice, the
    last state wins. ``versions_format``: the format of ``versions`` (``read_versions``). Answers
    the number of rows saved.
    """
    if not states:
        return 0
    last = list({(s.workspace_id, s.customer_id): s for s in states}.values())
    _check_aware(last)
    # Resyncing a customer costs a delete and an upsert per date value (~19 µs per event at 100k
    # customers in the bench, docs/PERFORMANCE.md): only for those whose dates may have changed.
    timed = last if times_of is None else [s for s in last if (s.workspace_id, s.customer_id) in times_of]
    # The jsonb codec serialises the dataclasses as they are (fields = columns; sets as arrays).
    document: Any = last if versions_format == "map" else _grouped_document(last)
    keys = [s.workspace_id for s in timed], [s.customer_id for s in timed]
    n: int = await conn.fetchval(_SAVE_SQL, document, *time_values(timed), *keys)
    return n


def _grouped_document(states: Sequence[CustomerState]) -> orjson.Fragment:
    """The states as ``_SAVE_SQL``'s document, ``versions`` grouped: each state's map is swapped for
    its groups while orjson serialises the dataclasses in C (rather than building a dict of every
    field per state), then put back — nothing else runs meanwhile. A Fragment passes through the
    codec as it is."""
    maps = [s.versions for s in states]
    try:
        for s in states:
            s.versions = grouped_versions(s.versions)  # type: ignore[assignment]
        return orjson.Fragment(orjson.dumps(states, default=json_default))
    finally:
        for s, m in zip(states, maps, strict=True):
            s.versions = m


_INFINITE = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def time_values(states: Sequence[CustomerState]) -> tuple[list[Any], ...]:
    """``_SAVE_SQL``'s typed-attribute columns: every attribute value of ``states`` that is a valid
    date or datetime (``timeutil.try_date``/``try_datetime``, as ``sw_try_date``/``sw_try_timestamptz``
    read them), whatever its declared type; the statement keeps those ``attribute_defs`` declares."""
    ws: list[str] = []
    cid: list[str] = []
    attr: list[str] = []
    part: list[int] = []
    kind: list[str] = []
    value: list[datetime | None] = []
    raw: list[str | None] = []
    for s in states:
        for name, v in s.attrs.items():
            if not isinstance(v, str) or not "0" <= v[:1] <= "9":  # both forms start with a digit
                continue
            instant: datetime | None
            if len(v) == 10:  # a valid date has exactly 10 characters, a valid datetime more
                d = try_date(v)
                if d is None:
                    continue
                kind.append("date")
                instant = datetime(d.year, d.month, d.day, tzinfo=UTC)
            else:
                dt = try_datetime(v)
                if dt is None:
                    continue
                kind.append("datetime")
                try:
                    instant = dt.astimezone(UTC)
                except OverflowError:  # "0001-01-01T00:00:00+01:00" is in year 0 in UTC
                    instant = None
            # asyncpg sends datetime.min/max as -infinity/infinity: leave those to SQL as well.
            if instant is None or instant in _INFINITE:
                value.append(None)
                raw.append(v)
            else:
                value.append(instant)
                raw.append(None)
            ws.append(s.workspace_id)
            cid.append(s.customer_id)
            attr.append(name)
            part.append(s.partition)
    return ws, cid, attr, part, kind, value, raw


async def refresh_customer_times(
    conn: asyncpg.Connection, workspace_id: str, attrs: Sequence[str] | None = None
) -> int:
    """Rebuild ``customer_times`` of a workspace (only of ``attrs`` when given) from ``customers``
    and ``attribute_defs``: call it after an attribute is declared or retyped, in the same
    transaction. Answers the number of rows now present for those attributes."""
    names = list(attrs) if attrs is not None else None
    async with conn.transaction():
        # Two statements: a DELETE and an INSERT of the same rows in one statement would race.
        await conn.execute(
            "DELETE FROM customer_times WHERE workspace_id = $1 AND ($2::text[] IS NULL OR attr = ANY($2))",
            workspace_id,
            names,
        )
        status: str = await conn.execute(
            "INSERT INTO customer_times (workspace_id, attr, customer_id, partition, value, month_day)"
            + _TIMES_OF.format(
                src="(SELECT * FROM customers WHERE workspace_id = $1)",
                extra="AND ($2::text[] IS NULL OR d.name = ANY($2))",
            ),
            workspace_id,
            names,
        )
    return int(status.rsplit(" ", 1)[1])
