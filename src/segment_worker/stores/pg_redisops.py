"""Pending Redis ops (migration 013): the transitions past their partition's Redis cursor, and the
``redis_ops`` rows of what has no transition (opt-out changes, a segment's DEL, a set-based diff's
one row per partition and kind), merged in id order — one sequence numbers both, and a partition's
rows are committed in id order (every writer holds its lock).

The unit of work (``stores.unit``) reads the cursors when it starts, applies what it wrote from
memory after commit (plus anything pending from before, read here), then ``settle_redis_ops``
moves the cursors past everything and deletes the applied rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import asyncpg

from . import OpKind, RedisOp
from .keys import segment_key

# Per partition: the Redis cursor, the last transitions id (one index probe) and the outbox
# cursor (0 without a row).
_POSITIONS_SQL = """
SELECT p.partition, COALESCE(c.applied_id, 0),
       COALESCE((SELECT max(t.id) FROM transitions t WHERE t.partition = p.partition), 0),
       COALESCE(o.sent_id, 0)
FROM unnest($1::int[]) AS p(partition)
LEFT JOIN redis_cursors c ON c.partition = p.partition
LEFT JOIN outbox_cursors o ON o.partition = p.partition
"""

# Transitions past each cursor (up to a bound, for a unit that applies its own from memory) and
# every redis_ops row, in id order. Each partition's range is read in a LATERAL subquery through
# the (partition, id) index (its ORDER BY keeps the planner from flattening it into a join, which
# may scan all history: see pg_outbox's count_unsent). ``deleted`` transitions have no op: their
# segment's DEL is a row.
_PENDING_SQL = f"""
WITH b AS MATERIALIZED (
    SELECT u.partition, COALESCE(c.applied_id, 0) AS after, u.upto
    FROM unnest($1::int[], $2::bigint[]) AS u(partition, upto)
    LEFT JOIN redis_cursors c ON c.partition = u.partition
)
SELECT t.id, t.partition,
       CASE WHEN t.kind = 'entered' THEN {int(OpKind.SADD)} ELSE {int(OpKind.SREM)} END AS op,
       NULL::text AS key, t.workspace_id, t.segment_id, t.customer_id AS member, NULL::text[] AS members
FROM b CROSS JOIN LATERAL (
    SELECT t.id, t.partition, t.kind, t.workspace_id, t.segment_id, t.customer_id FROM transitions t
    WHERE (t.partition, t.id) > (b.partition, b.after) AND (t.partition, t.id) <= (b.partition, b.upto)
    ORDER BY t.partition, t.id
) t
WHERE t.kind <> 'deleted' AND b.upto > b.after
UNION ALL
SELECT r.id, r.partition, r.op, r.key, NULL, NULL, r.member, r.members
FROM redis_ops r WHERE r.partition = ANY($1::int[])
ORDER BY 1
"""

# After the ops are in Redis, under the partitions' locks: every transition of each partition is
# applied (the unit's own and all before), so its cursor moves to its last id; the rows applied go.
_SETTLE_SQL = """
WITH d AS (
    DELETE FROM redis_ops r USING unnest($2::int[], $3::bigint[]) AS m(p, max_id)
    WHERE r.partition = m.p AND r.id <= m.max_id
),
c AS (
    INSERT INTO redis_cursors AS c (partition, applied_id)
    SELECT p, m FROM (
        SELECT p, (SELECT max(t.id) FROM transitions t WHERE t.partition = p) AS m FROM unnest($1::int[]) AS p
    ) x
    WHERE m IS NOT NULL
    ORDER BY p
    ON CONFLICT (partition) DO UPDATE SET applied_id = EXCLUDED.applied_id
    WHERE c.applied_id < EXCLUDED.applied_id
    RETURNING partition
)
SELECT pg_notify($4, string_agg(partition::text, ',' ORDER BY partition)) FROM c HAVING count(*) > 0
"""

_INF = 9223372036854775807


class Cursors(NamedTuple):
    """Where a partition's transitions stand, read under its lock when a unit starts."""

    applied: int  # the Redis cursor: transitions up to it have their ops in Redis
    last: int  # the last transitions id (0: none yet)
    sent: int  # the outbox cursor: transitions up to it were delivered to Kafka (marked)


async def cursors(conn: asyncpg.Connection, partitions: Sequence[int]) -> dict[int, Cursors]:
    """The ``Cursors`` of each partition: transitions between ``applied`` and ``last`` are
    committed without their ops in Redis (a unit whose Redis step failed); those past ``sent`` are
    not marked delivered. Read under the locks."""
    rows = await conn.fetch(_POSITIONS_SQL, sorted(set(partitions)))
    return {r[0]: Cursors(r[1], r[2], r[3]) for r in rows}


async def fetch_redis_ops(
    conn: asyncpg.Connection, partitions: Sequence[int], *, upto: Mapping[int, int] | None = None
) -> list[RedisOp]:
    """Pending Redis ops of ``partitions`` in id (= commit) order: the transitions past each
    partition's cursor (up to ``upto[p]`` when given: a unit's own come from memory) and the
    ``redis_ops`` rows; a row carrying many members (migration 005) gives one op per member, all
    with the row's id."""
    parts = sorted(set(partitions))
    if not parts:
        return []
    bounds = [(upto or {}).get(p, _INF) for p in parts]
    rows = await conn.fetch(_PENDING_SQL, parts, bounds)
    kinds = {k.value: k for k in OpKind}
    out: list[RedisOp] = []
    for id_, p, op, key, ws, seg, member, members in rows:
        if key is None:  # a transition
            out.append(RedisOp(p, kinds[op], segment_key(ws, seg), member, id_))
        elif members is None:
            out.append(RedisOp(p, kinds[op], key, member, id_))
        else:
            out.extend(RedisOp(p, kinds[op], key, m, id_) for m in members)
    return out


async def settle_redis_ops(
    conn: asyncpg.Connection, partitions: Sequence[int], rows_applied: Mapping[int, int], channel: str
) -> None:
    """After every pending op of ``partitions`` reached Redis (the caller holds their locks): move
    their cursors past their last transition, delete the ``redis_ops`` rows applied (id ≤
    ``rows_applied[p]``) and, when a cursor moved, wake the outbox senders (``NOTIFY channel``)."""
    await conn.execute(
        _SETTLE_SQL,
        sorted(set(partitions)),
        list(rows_applied),
        list(rows_applied.values()),
        channel,
    )

