"""Fencing a stale partition owner out of PostgreSQL, so that no worker can block another.

A worker frozen inside a unit of work (SIGSTOP, a paused VM, a hung event loop) keeps its session
advisory locks on its partitions and, inside the batch transaction, the ``FOR SHARE`` row lock of
``check_epochs``. The group gives its partitions to another worker once its session times out;
that worker's claim (an UPDATE of the same rows) and its replay of pending Redis ops (the same
advisory locks) would wait for ever. So the new owner waits ``CLAIM_LOCK_TIMEOUT`` only, then ends
the backends of *other workers of the same consumer group* that still hold those partitions'
advisory locks (``pg_terminate_backend``): their transaction rolls back, their locks go, and their
process — if it ever wakes — finds its connection gone and its epoch stale. The session timeout
``idle_in_transaction_session_timeout`` is the backstop when that cannot be done (another role
without ``pg_signal_backend``).

Workers are recognised by their connections' ``application_name``: ``sw-worker <group tag> <owner>``
(``worker_application_name``), so an API process, ``reconcile`` or a person's psql session holding
the same locks is never ended — they are bounded by their own timeouts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import asyncpg

from .pg_partitions import claim_partitions
from .pgtimeouts import CLAIM_LOCK_TIMEOUT

log = logging.getLogger(__name__)

_APP_PREFIX = "sw-worker"


def group_tag(group: str) -> str:
    """A short fixed-width tag of a consumer group (application names hold 63 bytes)."""
    return hashlib.sha1(group.encode()).hexdigest()[:8]


def worker_application_name(group: str, owner: str) -> str:
    """``application_name`` of a worker's PostgreSQL connections (what ``end_stale_holders`` looks
    for); PostgreSQL keeps 63 bytes, so a long owner name is cut (the pid and suffix stay unique
    enough to read; matching uses the whole stored name)."""
    return f"{_APP_PREFIX} {group_tag(group)} {owner}"[:63]


_HOLDERS_SQL = """
SELECT DISTINCT a.pid, a.application_name, l.objid::bigint AS partition
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = $1::oid AND l.objid = ANY($2::oid[])
  AND a.pid <> pg_backend_pid()
  AND a.application_name LIKE $3 AND a.application_name <> $4
ORDER BY a.pid
"""


async def end_stale_holders(
    conn: asyncpg.Connection, lock_class: int, partitions: Sequence[int], group: str, owner: str
) -> list[int]:
    """End the backends of other workers of ``group`` holding the advisory lock of any of
    ``partitions`` (class ``lock_class``). Called by the worker the group assigned them to, after
    waiting ``CLAIM_LOCK_TIMEOUT`` for them: a live owner would have let go (its revocation waits
    for its batch in flight). Answers the pids ended."""
    rows = await conn.fetch(
        _HOLDERS_SQL,
        lock_class,
        sorted(set(partitions)),
        f"{_APP_PREFIX} {group_tag(group)} %",
        worker_application_name(group, owner),
    )
    ended: list[int] = []
    for pid, app, partition in rows:
        try:
            done = await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        except asyncpg.PostgresError as exc:  # no pg_signal_backend: the idle timeout ends it
            log.warning("cannot end stale owner %r (backend %d) of partition %d: %s",
                        app, pid, partition, exc)
            continue
        if done and pid not in ended:
            ended.append(pid)
            log.warning(
                "ended backend %d of stale owner %r: it held partition %d past %.0f s after the group "
                "moved it (a frozen worker); its transaction is rolled back",
                pid, app, partition, CLAIM_LOCK_TIMEOUT,
            )
    return ended


async def claim_fencing_out(
    pool: asyncpg.Pool,
    lock_class: int,
    partitions: Sequence[int],
    owner: str,
    group: str,
    *,
    wait: float = CLAIM_LOCK_TIMEOUT,
    attempts: int = 3,
) -> dict[int, int]:
    """``claim_partitions`` waiting at most ``wait`` seconds for the rows; when a stale owner's
    transaction holds them, end it (``end_stale_holders``) and claim again. Answers the epochs;
    raises the last ``LockNotAvailableError`` when still blocked after ``attempts``."""
    parts = sorted(set(partitions))
    for attempt in range(1, attempts + 1):
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(wait * 1000)}")
                    return await claim_partitions(conn, parts, owner)
            except asyncpg.exceptions.LockNotAvailableError:
                if attempt == attempts:
                    raise
                log.warning("claiming partitions %s waited %.0f s for a lock; fencing out stale owners",
                            parts, wait)
                await end_stale_holders(conn, lock_class, parts, group, owner)
    raise AssertionError("unreachable")  # pragma: no cover
