"""The unit of work of every membership writer (worker batch, ticker, API): the commit order,
written once, here.

    async with partition_unit(pool, redis, [3, 7], fence={3: e3, 7: e7}) as u:
        await pg.save_states(u.conn, states)
        await u.write_transitions(transitions)   # their Redis ops are applied from memory

The commit order (``partition_unit`` runs steps 1–5; the owning worker runs 6–7):

1. Lock: ``sw_lock_partitions`` takes the session advisory locks of the partitions touched, in
   ascending order, on the unit's own connection (one writer per partition at a time).
2. Open the transaction; fenced units check their epochs (a zombie worker stops here with
   ``FencedError``); other writers bump the partitions' generation so workers drop their caches.
   Read each partition's cursors (``pg_redisops.Cursors``): transitions between the Redis cursor
   and the last one were committed by a unit whose Redis step failed; the outbox cursor tells the
   owning worker whether step 6 may send this unit's rows from memory.
3. The caller's writes (states, memberships, counts, transitions = outbox and Redis ops, the
   ``redis_ops`` rows of what has no transition, offsets, DLQ copies delivered before the offsets
   past them).
4. Commit in PostgreSQL — the truth; everything after this is derived and can be redone.
5. Redis, still under the locks so a partition's ops reach Redis in commit order: what earlier
   units left pending (read back), the ``redis_ops`` rows and this unit's transitions (from
   memory), merged in id order, fenced by the partitions' epochs (``redis_fenced``: a zombie that
   read them before it froze cannot undo the new owner's writes). Then move the Redis cursors past
   the partitions' last transitions, delete the rows applied, ``NOTIFY sw_outbox``; unlock.
6. Kafka output: the owning worker sends the outbox rows past the partition's outbox cursor and
   not past its Redis cursor (``worker.outbox``), so the topic is never ahead of Redis — a batch's
   own rows from memory (``Unit.rows``) when every older row of its partitions was delivered,
   else read back. Sent rows are marked in the next transaction.
7. Consumer offsets to Kafka, best effort (``worker.loop``): PostgreSQL holds the positions the
   worker seeks to on assignment.

Every Redis op is committed with the data it mirrors — as a transition past its partition's Redis
cursor or as a ``redis_ops`` row — so a Redis outage or a crash after commit loses none of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from redis.exceptions import RedisError

from .. import faultpoints
from ..state import Transition
from . import RedisOp, TransitionRow
from . import postgres as pg
from .errors import FencedError, LockTimeoutError, RedisApplyError
from .pg_memberships import UNIT_CONNECTIONS
from .pgtimeouts import DEFAULT_TIMEOUTS
from .redis_client import RedisClient
from .redis_fenced import apply_ops_fenced

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
    # Step 2: each partition's cursors when the unit started (Redis, last transition, outbox).
    cursors: dict[int, pg.Cursors] = field(default_factory=dict)
    # Step 2: partition → last transitions id, where it is past the Redis cursor (left pending).
    pending_upto: dict[int, int] = field(default_factory=dict)
    # The Redis ops of the transitions this unit wrote, applied from memory in step 5.
    ops: list[RedisOp] = field(default_factory=list)
    # The outbox rows of those transitions (their ids from the ops): the owning worker sends them
    # from memory after the unit when nothing older is unsent (``worker.outbox.send_written``).
    rows: list[TransitionRow] = field(default_factory=list)

    async def write_transitions(self, transitions: Sequence[Transition]) -> None:
        """``pg.write_transitions`` in this unit; their Redis ops are applied from memory."""
        ops = await pg.write_transitions(self.conn, transitions, unit=True)
        self.ops.extend(ops)
        self.rows.extend(
            TransitionRow(
                o.id, t.partition, t.workspace_id, t.segment_id, t.segment_name, t.customer_id, t.seq, t.kind,
                t.cause, t.at,
            )
            for t, o in zip(transitions, ops, strict=True)
        )


async def _lock(conn: asyncpg.Connection, parts: tuple[int, ...], lock_timeout: float | None) -> None:
    try:
        await conn.execute(
            "SELECT sw_lock_partitions($1, $2::int[])", SW_LOCK_CLASS, list(parts), timeout=lock_timeout
        )
    except (TimeoutError, asyncpg.exceptions.LockNotAvailableError) as exc:
        # The client-side ``lock_timeout`` or the session's (``pgtimeouts``): transient either way.
        raise LockTimeoutError(parts, lock_timeout or DEFAULT_TIMEOUTS.lock) from exc


async def _unlock(conn: asyncpg.Connection, parts: tuple[int, ...]) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock($1, p) FROM unnest($2::int[]) AS p", SW_LOCK_CLASS, list(parts)
    )


async def apply_pending_ops(
    conn: asyncpg.Connection,
    redis: RedisClient,
    partitions: Sequence[int],
    *,
    own: Sequence[RedisOp] = (),
    pending_upto: Mapping[int, int] | None = None,
    fence: Mapping[int, int] | None = None,
) -> int:
    """Apply every pending Redis op of ``partitions`` in commit order, then move their Redis
    cursors, delete the ``redis_ops`` rows applied and wake the outbox senders (``NOTIFY
    sw_outbox``). The caller holds the partitions' locks (``locked_partitions``).

    Without ``pending_upto`` every transition past the cursors is read back (replay). A unit
    passes the ops of the transitions it wrote (``own``) and, as ``pending_upto``, the last
    transition of each partition that was past its cursor when it started: only those are read.
    Writes are fenced by the partitions' epochs — ``fence`` (checked in the unit's transaction) or
    the current ones (``redis_fenced``: ``FencedError`` when a newer owner wrote since). Answers how
    many ops were applied."""
    if pending_upto is None:
        ops = await pg.fetch_redis_ops(conn, partitions)
    else:
        # Partitions with nothing pending read only their redis_ops rows (bound 0).
        bound = {p: pending_upto.get(p, 0) for p in partitions}
        ops = await pg.fetch_redis_ops(conn, partitions, upto=bound)
    rows_applied = pg.max_ids(ops)  # before ``own`` joins: only rows read here are deleted
    if own:
        ops = sorted([*ops, *own], key=_by_id) if ops else list(own)
    if not ops:
        # Nothing written and nothing left: every transition without an op of its own (a
        # segment's ``deleted`` row, a diff's rows) came with a redis_ops row, so none is past a
        # cursor either.
        return 0
    epochs = dict(fence or {})
    missing = sorted({o.partition for o in ops} - set(epochs))
    if missing:
        # The epochs now, read under the partitions' locks: Redis refuses them if a newer owner
        # has written the same workspace since (a zombie that read them before it froze).
        found = await pg.current_epochs(conn, missing)
        epochs.update({p: e or 0 for p, (e, _) in found.items()})
    try:
        await apply_ops_fenced(redis, ops, epochs)
    except (RedisError, OSError) as exc:
        raise RedisApplyError(partitions, exc) from exc
    await pg.settle_redis_ops(conn, partitions, rows_applied, OUTBOX_CHANNEL)
    return len(ops)


def _by_id(op: RedisOp) -> int:
    return op.id


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
    redis: RedisClient,
    partitions: Sequence[int],
    *,
    fence: Mapping[int, int] | None = None,
    bump_generation: bool = False,
    lock_timeout: float | None = None,
) -> AsyncIterator[Unit]:
    """One unit of work over ``partitions``: steps 1–5 of the commit order (module docstring).

    ``fence`` (partition → epoch from ``claim_partitions``): raise ``FencedError`` unless still
    current. ``bump_generation``: for writers other than the owning worker, so the owner drops
    its caches. On an exception in the body nothing is committed and nothing reaches Redis. If
    Redis fails after the commit, ``RedisApplyError`` is raised; the ops stay pending and the next
    unit on these partitions (or ``replay_redis_ops``) applies them.
    """
    parts = tuple(sorted(set(partitions)))
    if fence is not None and not set(fence) <= set(parts):
        raise ValueError(f"fence names partitions {sorted(set(fence) - set(parts))} the unit does not lock")
    async with locked_partitions(pool, parts, lock_timeout=lock_timeout) as conn:  # 1. lock
        tx = conn.transaction()  # 2. transaction, epochs, generations
        await tx.start()
        UNIT_CONNECTIONS.add(id(conn))
        try:
            unit = Unit(conn, parts)
            if fence is not None:
                ok, unit.generations = await pg.check_epochs(conn, fence)
                if not ok:
                    now = await pg.current_epochs(conn, list(fence))
                    raise FencedError(fence, {p: e for p, (e, _) in now.items()})
            if bump_generation:
                unit.generations.update(await pg.bump_generation(conn, parts))
            unit.cursors = await pg.cursors(conn, parts)
            unit.pending_upto = {p: c.last for p, c in unit.cursors.items() if c.last > c.applied}
            yield unit  # 3. the caller's writes
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection cannot roll back: it is gone
                await tx.rollback()
            raise
        finally:
            UNIT_CONNECTIONS.discard(id(conn))
        faultpoints.reach("before_pg_commit")
        await tx.commit()  # 4. PostgreSQL
        faultpoints.reach("after_pg_commit")
        unit.applied_ops = await apply_pending_ops(  # 5. Redis, then unlock
            conn, redis, parts, own=unit.ops, pending_upto=unit.pending_upto, fence=fence
        )
        faultpoints.reach("after_redis")


async def replay_redis_ops(
    pool: asyncpg.Pool, redis: RedisClient, partitions: Sequence[int], *, lock_timeout: float | None = None
) -> int:
    """Apply Redis ops left pending by a failure after commit (call on worker start/assignment
    and after a ``RedisApplyError``). Answers how many ops were applied."""
    async with locked_partitions(pool, partitions, lock_timeout=lock_timeout) as conn:
        return await apply_pending_ops(conn, redis, partitions)
