"""The Kafka outbox (``transitions`` with ``sent = false``) and the pending Redis ops."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from . import OpKind, RedisOp, TransitionRow

_FETCH_UNSENT_SQL = """
SELECT t.id, t.partition, t.workspace_id, t.segment_id, t.segment_name, t.customer_id, t.seq, t.kind,
       t.cause, t.at
FROM transitions t
WHERE NOT t.sent AND t.partition = ANY($1::int[])
  AND NOT EXISTS (SELECT 1 FROM redis_ops r WHERE r.partition = t.partition)
ORDER BY t.id
LIMIT $2
"""


async def fetch_unsent(
    conn: asyncpg.Connection, partitions: Sequence[int], limit: int
) -> list[TransitionRow]:
    """Outbox rows of ``partitions`` not yet sent, in id order (= commit order per partition).

    A partition with Redis ops still pending yields nothing: Kafka output follows Redis (commit
    order), so a consumer of an enter event finds the member in the Redis set.
    """
    rows = await conn.fetch(_FETCH_UNSENT_SQL, list(partitions), limit)
    return [TransitionRow(**dict(r.items())) for r in rows]


async def mark_sent(conn: asyncpg.Connection, max_id_per_partition: Mapping[int, int]) -> int:
    """Mark outbox rows of each partition with id ≤ its max as sent; answers how many changed."""
    if not max_id_per_partition:
        return 0
    status: str = await conn.execute(
        """
        UPDATE transitions t SET sent = true
        FROM unnest($1::int[], $2::bigint[]) AS m(p, max_id)
        WHERE NOT t.sent AND t.partition = m.p AND t.id <= m.max_id
        """,
        list(max_id_per_partition),
        list(max_id_per_partition.values()),
    )
    return int(status.rsplit(" ", 1)[1])


async def fetch_redis_ops(conn: asyncpg.Connection, partitions: Sequence[int]) -> list[RedisOp]:
    """Pending Redis ops of ``partitions`` in id (= commit) order."""
    rows = await conn.fetch(
        "SELECT partition, op, key, member, id FROM redis_ops WHERE partition = ANY($1::int[]) ORDER BY id",
        list(partitions),
    )
    kinds = {k.value: k for k in OpKind}
    return [RedisOp(p, kinds[op], key, member, id_) for p, op, key, member, id_ in rows]


async def delete_redis_ops(conn: asyncpg.Connection, max_id_per_partition: Mapping[int, int]) -> int:
    """Forget applied Redis ops: those of each partition with id ≤ its max. Answers the count."""
    if not max_id_per_partition:
        return 0
    status: str = await conn.execute(
        """
        DELETE FROM redis_ops r USING unnest($1::int[], $2::bigint[]) AS m(p, max_id)
        WHERE r.partition = m.p AND r.id <= m.max_id
        """,
        list(max_id_per_partition),
        list(max_id_per_partition.values()),
    )
    return int(status.rsplit(" ", 1)[1])


def max_ids(ops: Sequence[RedisOp] | Sequence[TransitionRow]) -> dict[int, int]:
    """Highest id per partition of ``ops`` (what ``delete_redis_ops``/``mark_sent`` take)."""
    out: dict[int, int] = {}
    for o in ops:
        if o.id > out.get(o.partition, -1):
            out[o.partition] = o.id
    return out
