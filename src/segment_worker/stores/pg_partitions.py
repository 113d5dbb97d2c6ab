"""Partition ownership (epochs for fencing, cache generations, tick positions), consumer offsets
and known topic sizes — the bookkeeping a worker keeps in PostgreSQL next to its data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg


async def claim_partitions(conn: asyncpg.Connection, partitions: Sequence[int], owner: str) -> dict[int, int]:
    """Take ownership of ``partitions`` for ``owner``: bump each epoch and answer the new ones.

    A unit fenced with an older epoch then fails (``FencedError``); one already past its epoch
    check holds the row lock, so this waits until that unit commits — after a claim returns, no
    older owner can still commit.
    """
    rows = await conn.fetch(
        """
        INSERT INTO partitions AS t (partition, epoch, owner)
        SELECT p, 1, $2 FROM unnest($1::int[]) AS p ORDER BY p
        ON CONFLICT (partition) DO UPDATE SET epoch = t.epoch + 1, owner = EXCLUDED.owner
        RETURNING partition, epoch
        """,
        sorted(set(partitions)),
        owner,
    )
    return {r["partition"]: r["epoch"] for r in rows}


async def check_epochs(conn: asyncpg.Connection, epochs: Mapping[int, int]) -> tuple[bool, dict[int, int]]:
    """Inside a batch transaction: are ``epochs`` (partition → epoch) still current?

    Locks the rows FOR SHARE until commit so a concurrent ``claim_partitions`` waits for this
    transaction. Answers (ok, generation of each partition); a partition never claimed is not ok.
    """
    found = await current_epochs(conn, list(epochs), for_share=True)
    ok = all(found[p][0] == e for p, e in epochs.items())
    return ok, {p: gen for p, (_, gen) in found.items()}


async def current_epochs(
    conn: asyncpg.Connection, partitions: Sequence[int], *, for_share: bool = False
) -> dict[int, tuple[int | None, int]]:
    """(epoch, generation) of each partition; epoch None and generation 0 for one without a row."""
    rows = await conn.fetch(
        "SELECT partition, epoch, generation FROM partitions WHERE partition = ANY($1::int[])"
        " ORDER BY partition" + (" FOR SHARE" if for_share else ""),
        sorted(set(partitions)),
    )
    out: dict[int, tuple[int | None, int]] = dict.fromkeys(partitions, (None, 0))
    out.update({r["partition"]: (r["epoch"], r["generation"]) for r in rows})
    return out


async def bump_generation(conn: asyncpg.Connection, partitions: Sequence[int]) -> dict[int, int]:
    """Tell the owners of ``partitions`` that someone else wrote there (they drop their caches).
    Answers the new generations."""
    rows = await conn.fetch(
        """
        INSERT INTO partitions AS t (partition, generation)
        SELECT p, 1 FROM unnest($1::int[]) AS p ORDER BY p
        ON CONFLICT (partition) DO UPDATE SET generation = t.generation + 1
        RETURNING partition, generation
        """,
        sorted(set(partitions)),
    )
    return {r["partition"]: r["generation"] for r in rows}


async def load_offsets(
    conn: asyncpg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """The stored next offset of each partition that has one (positions to seek to on assignment)."""
    valid, _ = await load_positions(conn, group, topic, partitions)
    return valid


async def load_positions(
    conn: asyncpg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """(valid, void): the stored next offsets of the topic's current incarnation, and those stored
    for an earlier incarnation of the log (a broker that lost its data; migration 010)."""
    rows = await conn.fetch(
        "SELECT o.partition, o.next_offset, o.incarnation = COALESCE(t.incarnation, 0) AS current"
        " FROM consumer_offsets o LEFT JOIN kafka_topics t ON t.topic = o.topic"
        " WHERE o.group_id = $1 AND o.topic = $2 AND o.partition = ANY($3::int[])",
        group,
        topic,
        list(partitions),
    )
    valid = {r["partition"]: r["next_offset"] for r in rows if r["current"]}
    void = {r["partition"]: r["next_offset"] for r in rows if not r["current"]}
    return valid, void


async def save_offsets(
    conn: asyncpg.Connection,
    group: str,
    topic: str,
    offsets: Mapping[int, int],
    fingerprints: Mapping[int, tuple[int, int]] | None = None,
) -> None:
    """Store the next offset to consume per partition (in the batch transaction), with the
    fingerprint (timestamp, hash) of the record just before it where known (migration 011)."""
    if not offsets:
        return
    prints = fingerprints or {}
    await conn.execute(
        """
        INSERT INTO consumer_offsets AS o
            (group_id, topic, partition, next_offset, incarnation, last_timestamp, last_hash)
        SELECT $1, $2, p, n, COALESCE((SELECT incarnation FROM kafka_topics WHERE topic = $2), 0), ts, h
        FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::bigint[]) AS x(p, n, ts, h)
        ON CONFLICT (group_id, topic, partition)
        DO UPDATE SET next_offset = EXCLUDED.next_offset, incarnation = EXCLUDED.incarnation,
            last_timestamp = EXCLUDED.last_timestamp, last_hash = EXCLUDED.last_hash
        """,
        group,
        topic,
        list(offsets),
        list(offsets.values()),
        [prints[p][0] if p in prints else None for p in offsets],
        [prints[p][1] if p in prints else None for p in offsets],
    )


async def load_fingerprints(
    conn: asyncpg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """The fingerprint (timestamp, hash) of the record before each stored position that has one."""
    rows = await conn.fetch(
        "SELECT partition, last_timestamp, last_hash FROM consumer_offsets"
        " WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])"
        " AND last_timestamp IS NOT NULL AND last_hash IS NOT NULL",
        group,
        topic,
        list(partitions),
    )
    return {r["partition"]: (r["last_timestamp"], r["last_hash"]) for r in rows}


async def set_ticked_at(conn: asyncpg.Connection, partitions: Sequence[int], at: datetime) -> None:
    """Record that time-relative rules of ``partitions`` were checked up to ``at``."""
    await conn.execute(
        """
        INSERT INTO partitions AS t (partition, ticked_at)
        SELECT p, $2 FROM unnest($1::int[]) AS p ORDER BY p
        ON CONFLICT (partition) DO UPDATE SET ticked_at = EXCLUDED.ticked_at
        """,
        sorted(set(partitions)),
        at,
    )


async def get_ticked_at(conn: asyncpg.Connection, partitions: Sequence[int]) -> dict[int, datetime | None]:
    """When each partition's time-relative rules were last checked (None: never)."""
    rows = await conn.fetch(
        "SELECT partition, ticked_at FROM partitions WHERE partition = ANY($1::int[])", list(partitions)
    )
    out: dict[int, datetime | None] = dict.fromkeys(partitions)
    out.update({r["partition"]: r["ticked_at"] for r in rows})
    return out


async def record_topic(conn: asyncpg.Connection, topic: str, partitions: int) -> None:
    """Remember how many partitions ``topic`` has (the input topic's count decides ownership)."""
    await conn.execute(
        "INSERT INTO kafka_topics (topic, partitions) VALUES ($1, $2)"
        " ON CONFLICT (topic) DO UPDATE SET partitions = EXCLUDED.partitions",
        topic,
        partitions,
    )


async def new_incarnation(conn: asyncpg.Connection, topic: str) -> int | None:
    """``topic`` was (re)created: positions stored for it so far belong to a log the broker lost
    and are void from now on. Answers the new incarnation, or None when no position was stored
    (a topic created for the first time: nothing to void). Call after ``record_topic``."""
    n: int | None = await conn.fetchval(
        "UPDATE kafka_topics SET incarnation = incarnation + 1"
        " WHERE topic = $1 AND EXISTS (SELECT 1 FROM consumer_offsets WHERE topic = $1)"
        " RETURNING incarnation",
        topic,
    )
    return n


async def input_partitions(conn: asyncpg.Connection, topic: str) -> int | None:
    """The recorded partition count of ``topic``, or None when it was never recorded."""
    n: int | None = await conn.fetchval("SELECT partitions FROM kafka_topics WHERE topic = $1", topic)
    return n


async def known_partitions(conn: asyncpg.Connection) -> list[int]:
    """Every partition number something may be written under: claimed or recorded ones, those of
    customers and of pending Redis ops. A writer touching "all partitions" locks these."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE customer_partitions(v) AS (  -- distinct values by index skip-scan
            SELECT min(partition) FROM customers
            UNION ALL
            SELECT (SELECT min(partition) FROM customers WHERE partition > v) FROM customer_partitions
            WHERE v IS NOT NULL
        )
        SELECT partition FROM partitions
        UNION SELECT generate_series(0, (SELECT max(partitions) FROM kafka_topics) - 1)
        UNION SELECT v FROM customer_partitions
        UNION SELECT DISTINCT partition FROM redis_ops
        ORDER BY 1
        """
    )
    return [r[0] for r in rows if r[0] is not None]
