"""The unit of work of every membership writer (worker batch, ticker, API): the commit order in
one place.

    async with partition_unit(pool, redis, [3, 7], fence={3: e3, 7: e7}) as u:
        await pg.save_states(u.conn, states)
        await pg.write_transitions(u.conn, transitions)   # queues redis_ops rows too

Locks → transaction (epoch check, caller's writes, generation bump) → commit → Redis → unlock.
Redis ops are "recorded" by writing ``redis_ops`` rows (the ``pg`` write functions do it), so they
commit atomically with the data and survive a Redis outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .. import faultpoints
from ..state import CustomerKey, CustomerRecord
from . import Batch, TransitionRow
from . import postgres as pg
from .errors import FencedError, LockTimeoutError, RedisApplyError
from .redis import apply_ops, read_set

# First key of pg_advisory_lock(int, int): partition locks are (SW_LOCK_CLASS, partition).
SW_LOCK_CLASS = 0x5357
OUTBOX_CHANNEL = "sw_outbox"


@dataclass(slots=True)
class Unit:
    """An open unit of work: write on ``conn`` (inside its transaction)."""

    conn: asyncpg.Connection
    partitions: tuple[int, ...]
    # Cache generation per partition, read with the epoch check (fenced units) or after a bump.
    generations: dict[int, int] = field(default_factory=dict)
    # Set after a successful exit: Redis ops applied (this unit's and any left by earlier ones).
    applied_ops: int = 0


async def _lock(conn: asyncpg.Connection, parts: tuple[int, ...], lock_timeout: float | None) -> None:
    try:
        await conn.execute(
            "SELECT sw_lock_partitions($1, $2::int[])", SW_LOCK_CLASS, list(parts), timeout=lock_timeout
        )
    except TimeoutError as exc:
        raise LockTimeoutError(parts, lock_timeout or 0) from exc


async def _unlock(conn: asyncpg.Connection, parts: tuple[int, ...]) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock($1, p) FROM unnest($2::int[]) AS p", SW_LOCK_CLASS, list(parts)
    )


async def apply_pending_ops(conn: asyncpg.Connection, redis: Redis, partitions: Sequence[int]) -> int:
    """Apply every pending Redis op of ``partitions`` in commit order — leftovers of earlier units
    first — delete them, then wake the outbox senders (``NOTIFY sw_outbox``). The caller holds
    the partitions' locks (``locked_partitions``). Answers how many ops were applied."""
    ops = await pg.fetch_redis_ops(conn, partitions)
    if not ops:
        return 0
    try:
        await apply_ops(redis, ops)
    except (RedisError, OSError) as exc:
        raise RedisApplyError(partitions, exc) from exc
    applied = pg.max_ids(ops)
    await pg.delete_redis_ops(conn, applied)
    await conn.execute("SELECT pg_notify($1, $2)", OUTBOX_CHANNEL, ",".join(map(str, sorted(applied))))
    return len(ops)


@asynccontextmanager
async def locked_partitions(
    pool: asyncpg.Pool, partitions: Sequence[int], *, lock_timeout: float | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection holding the session locks of ``partitions`` (taken in ascending order,
    released on exit). ``LockTimeoutError`` when not obtained within ``lock_timeout`` seconds."""
    parts = tuple(sorted(set(partitions)))
    async with pool.acquire() as conn:
        try:
            await _lock(conn, parts, lock_timeout)
            yield conn
        except BaseException:
            # The connection is this unit's alone: release every session lock it holds, including
            # those a timed-out lock call took before giving up. (asyncpg's reset on release to
            # the pool does the same; a broken connection has lost its locks anyway.)
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock_all()")
            raise
        await _unlock(conn, parts)


@asynccontextmanager
async def partition_unit(
    pool: asyncpg.Pool,
    redis: Redis,
    partitions: Sequence[int],
    *,
    fence: Mapping[int, int] | None = None,
    bump_generation: bool = False,
    lock_timeout: float | None = None,
) -> AsyncIterator[Unit]:
    """One unit of work over ``partitions`` (see the module docstring).

    ``fence`` (partition → epoch from ``claim_partitions``): raise ``FencedError`` unless still
    current. ``bump_generation``: for writers other than the owning worker, so the owner drops
    its caches. On an exception in the body nothing is committed and nothing reaches Redis. If
    Redis fails after the commit, ``RedisApplyError`` is raised; the ops stay pending and the next
    unit on these partitions (or ``replay_redis_ops``) applies them.
    """
    parts = tuple(sorted(set(partitions)))
    if fence is not None and not set(fence) <= set(parts):
        raise ValueError(f"fence names partitions {sorted(set(fence) - set(parts))} the unit does not lock")
    async with locked_partitions(pool, parts, lock_timeout=lock_timeout) as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            unit = Unit(conn, parts)
            if fence is not None:
                ok, unit.generations = await pg.check_epochs(conn, fence)
                if not ok:
                    now = await pg.current_epochs(conn, list(fence))
                    raise FencedError(fence, {p: e for p, (e, _) in now.items()})
            if bump_generation:
                unit.generations.update(await pg.bump_generation(conn, parts))
            yield unit
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection cannot roll back: it is gone
                await tx.rollback()
            raise
        faultpoints.reach("before_pg_commit")
        await tx.commit()
        faultpoints.reach("after_pg_commit")
        # Commit order: PostgreSQL (committed above), then Redis (here, still under the partition
        # locks so the ops of a partition reach Redis in commit order), then Kafka (the owning
        # worker sends the outbox; fetch_unsent holds a partition back while it has pending ops),
        # then consumer offsets to Kafka (best effort: PostgreSQL holds the positions).
        unit.applied_ops = await apply_pending_ops(conn, redis, parts)
        faultpoints.reach("after_redis")


async def replay_redis_ops(pool: asyncpg.Pool, redis: Redis, partitions: Sequence[int]) -> int:
    """Apply Redis ops left pending by a failure after commit (call on worker start/assignment
    and after a ``RedisApplyError``). Answers how many ops were applied."""
    async with locked_partitions(pool, partitions) as conn:
        return await apply_pending_ops(conn, redis, partitions)


class PgRedisStore:
    """``SegmentStore`` over PostgreSQL and Redis: each ``commit`` is one ``partition_unit``."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self._pool = pool
        self._redis = redis

    async def claim_partitions(self, partitions: Sequence[int], owner: str) -> dict[int, int]:
        """See ``SegmentStore.claim_partitions``."""
        async with self._pool.acquire() as conn:
            return await pg.claim_partitions(conn, partitions, owner)

    async def load_records(self, keys: Sequence[CustomerKey]) -> dict[CustomerKey, CustomerRecord]:
        """See ``SegmentStore.load_records``."""
        async with self._pool.acquire() as conn:
            return await pg.load_records(conn, keys)

    async def commit(self, batch: Batch, *, fence: Mapping[int, int] | None = None) -> None:
        """See ``SegmentStore.commit``."""
        batch.check_partitions()
        async with partition_unit(self._pool, self._redis, batch.partitions, fence=fence) as u:
            await pg.save_states(u.conn, batch.states)
            await pg.write_transitions(u.conn, batch.transitions)
            await pg.write_optout(u.conn, batch.optouts)

    async def fetch_unsent(self, partitions: Sequence[int], limit: int) -> list[TransitionRow]:
        """See ``SegmentStore.fetch_unsent``."""
        async with self._pool.acquire() as conn:
            return await pg.fetch_unsent(conn, partitions, limit)

    async def mark_sent(self, max_id_per_partition: Mapping[int, int]) -> None:
        """See ``SegmentStore.mark_sent``."""
        async with self._pool.acquire() as conn:
            await pg.mark_sent(conn, max_id_per_partition)

    async def member_count(self, segment_id: UUID) -> int:
        """See ``SegmentStore.member_count``."""
        async with self._pool.acquire() as conn:
            return (await pg.segment_member_counts(conn, [segment_id]))[segment_id]

    async def redis_members(self, key: str) -> set[str]:
        """See ``SegmentStore.redis_members``."""
        return await read_set(self._redis, key)
