"""The Kafka outbox: ``transitions`` rows past their partition's ``outbox_cursors.sent_id`` and not
past its ``redis_cursors.applied_id`` (Kafka output follows Redis)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from . import RedisOp, TransitionRow

# Per partition: where its unsent rows start (after its cursor, or the caller's ``after`` if
# higher) and end (its Redis cursor: rows whose ops are not in Redis yet wait), its next $4 ids
# through the (partition, id) index, then the first $2 ids of all of them. The row comparisons
# are on purpose: only that index can serve them. With ``partition = … AND id > …`` the planner
# may walk the primary key filtering by partition (it is in heap order), reading every other
# partition's backlog — as it did on a table not yet vacuumed. Whole rows are read only for the
# ids chosen.
_FETCH_UNSENT_SQL = """
WITH s AS MATERIALIZED (
    SELECT p.partition, GREATEST(p.after, COALESCE(c.sent_id, 0)) AS from_id, r.applied_id AS to_id
    FROM unnest($1::int[], $3::bigint[]) AS p(partition, after)
    LEFT JOIN outbox_cursors c ON c.partition = p.partition
    JOIN redis_cursors r ON r.partition = p.partition
),
ids AS MATERIALIZED (
    SELECT i.id FROM s CROSS JOIN LATERAL (
        SELECT t.id FROM transitions t
        WHERE (t.partition, t.id) > (s.partition, s.from_id)
          AND (t.partition, t.id) <= (s.partition, s.to_id)
        ORDER BY t.partition, t.id
        LIMIT $4
    ) i
    ORDER BY i.id
    LIMIT $2
)
SELECT t.id, t.partition, t.workspace_id, t.segment_id, t.segment_name, t.customer_id, t.seq, t.kind,
       t.cause, t.at
FROM transitions t
WHERE t.id = ANY(ARRAY(SELECT id FROM ids))
ORDER BY t.id
"""


async def fetch_unsent(
    conn: asyncpg.Connection,
    partitions: Sequence[int],
    limit: int,
    *,
    after: Mapping[int, int] | None = None,
) -> list[TransitionRow]:
    """Up to ``limit`` outbox rows of ``partitions`` not yet sent, in id order; each partition's
    rows are its oldest unsent ones (id order = commit order per partition).

    Fewer than ``limit`` rows does not mean that nothing is left: a partition contributes at most
    ``2 × limit / len(partitions)`` rows, so that the rows read stay near ``limit`` whatever the
    number of partitions (reading ``limit`` per partition to pick the first ``limit`` of all made
    a big backlog cost 12× its size). Callers read until an empty answer.

    A partition yields only rows up to its Redis cursor: Kafka output follows Redis (commit
    order), so a consumer of an enter event finds the member in the Redis set. ``after``
    (partition → id) skips rows up to that id as well: rows already handed to the producer but
    not yet marked (a sender reading ahead).
    """
    parts = sorted(set(partitions))
    if not parts or limit < 1:
        return []
    starts = [after.get(p, 0) for p in parts] if after else [0] * len(parts)
    per_partition = min(limit, -(-2 * limit // len(parts)))
    rows = await conn.fetch(_FETCH_UNSENT_SQL, parts, limit, starts, per_partition)
    return [TransitionRow(*r) for r in rows]


async def mark_sent(conn: asyncpg.Connection, max_id_per_partition: Mapping[int, int]) -> int:
    """Record that every outbox row of each partition with id ≤ its max was delivered (the
    partition's cursor only moves forward). Answers how many cursors moved."""
    if not max_id_per_partition:
        return 0
    marks = sorted(max_id_per_partition.items())  # one lock order for concurrent markers
    status: str = await conn.execute(
        """
        INSERT INTO outbox_cursors AS c (partition, sent_id)
        SELECT * FROM unnest($1::int[], $2::bigint[]) ORDER BY 1
        ON CONFLICT (partition) DO UPDATE SET sent_id = EXCLUDED.sent_id
        WHERE c.sent_id < EXCLUDED.sent_id
        """,
        [p for p, _ in marks],
        [i for _, i in marks],
    )
    return int(status.rsplit(" ", 1)[1])


async def count_unsent(conn: asyncpg.Connection, partitions: Sequence[int]) -> int:
    """Outbox rows of ``partitions`` past their cursor (the backlog gauge; pending Redis ops or not)."""
    # Counted per partition in a LATERAL subquery, so each count is a range scan of the
    # (partition, id) index from the cursor: written as a join, the planner ran it as a sequential
    # scan of all history filtered by partition (114 ms per call at 150k transitions in the bench,
    # growing with the table; the gauge runs every few seconds).
    n: int = await conn.fetchval(
        """
        SELECT COALESCE(sum(u.n), 0)::bigint
        FROM unnest($1::int[]) AS p(partition)
        LEFT JOIN outbox_cursors c ON c.partition = p.partition
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM transitions t
            WHERE (t.partition, t.id) > (p.partition, COALESCE(c.sent_id, 0))
              AND (t.partition, t.id) <= (p.partition, 9223372036854775807)
        ) u
        """,
        sorted(set(partitions)),
    )
    return n


async def oldest_unsent(conn: asyncpg.Connection, partitions: Sequence[int]) -> datetime | None:
    """The transition time (``at``) of the oldest outbox row of ``partitions`` past their cursor,
    or None when all are sent. One index probe per partition: its first row past the cursor."""
    at: datetime | None = await conn.fetchval(
        """
        SELECT min(f.at)
        FROM unnest($1::int[]) AS p(partition)
        LEFT JOIN outbox_cursors c ON c.partition = p.partition
        CROSS JOIN LATERAL (
            SELECT t.at FROM transitions t
            WHERE (t.partition, t.id) > (p.partition, COALESCE(c.sent_id, 0))
              AND (t.partition, t.id) <= (p.partition, 9223372036854775807)
            ORDER BY t.partition, t.id
            LIMIT 1
        ) f
        """,
        sorted(set(partitions)),
    )
    return at


def max_ids(ops: Sequence[RedisOp] | Sequence[TransitionRow]) -> dict[int, int]:
    """Highest id per partition of ``ops`` (what ``settle_redis_ops``/``mark_sent`` take)."""
    out: dict[int, int] = {}
    for o in ops:
        if o.id > out.get(o.partition, -1):
            out[o.partition] = o.id
    return out
