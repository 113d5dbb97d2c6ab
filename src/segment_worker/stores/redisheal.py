"""Self-healing Redis (CONTRACT §6): a Redis that lost data — restarted without persistence,
FLUSHALL, a failover to an empty replica — is noticed and rebuilt from PostgreSQL by the running
workers, with no operator.

How it is noticed: each workspace has a marker key ``sw:{<ws>}:marker`` (in the workspace's slot,
so a Redis Cluster shard that lost its data loses the markers of exactly the workspaces it held).
Every worker checks the markers of all workspaces on a timer (``check_and_heal``; one pipelined GET
per workspace). A marker that is not ``ok`` means the workspace's sets cannot be trusted.

How it is rebuilt: by one worker per workspace — the one that takes the workspace's PostgreSQL
advisory lock (``pg_try_advisory_lock``; the others skip it) — with ``reconcile``'s repair
(``rebuild_and_diff``: each key compared under every partition lock, so concurrent writers never
race it). The marker is set to ``rebuilding:<token>`` before and switched to ``ok`` after, only if
it still holds that token: a Redis that loses data again mid-rebuild keeps no ``ok`` marker and is
rebuilt again at the next check. A rebuilder that dies leaves ``rebuilding:…``: the next check
takes the lock and rebuilds. A first start against a Redis without markers rebuilds every
workspace once (cheap where nothing drifted: a comparison per key).

Not rebuilt: audiences (``sw:{<ws>}:aud:*``) are snapshots, not derived from current state.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from .keys import marker_key
from .reconcile import rebuild_and_diff
from .redis_client import RedisClient

log = logging.getLogger(__name__)

# First key of pg_try_advisory_lock(int, int) for "rebuilding workspace <hashtext(ws)>".
SW_HEAL_CLASS = 0x5348
MARKER_OK = b"ok"

_SET_IF_TOKEN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""

# Workspaces that may have Redis sets: declared ones, those with segments, and those with
# customers (distinct values by skip-scan of the primary key: a few probes per workspace).
_WORKSPACES_SQL = """
WITH RECURSIVE cw(v) AS (
    SELECT min(workspace_id) FROM customers
    UNION ALL
    SELECT (SELECT min(workspace_id) FROM customers WHERE workspace_id > v) FROM cw WHERE v IS NOT NULL
)
SELECT id FROM workspaces
UNION SELECT workspace_id FROM segments
UNION SELECT v FROM cw WHERE v IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class HealOutcome:
    """One check: workspaces whose marker was missing, those this process rebuilt, and the keys
    that drifted (what the rebuild repaired)."""

    lost: tuple[str, ...]
    rebuilt: tuple[str, ...]
    repaired_keys: int


async def workspaces(conn: asyncpg.Connection) -> list[str]:
    """Every workspace that may have Redis sets."""
    return sorted(r[0] for r in await conn.fetch(_WORKSPACES_SQL))


async def lost_workspaces(redis: RedisClient, candidates: Sequence[str]) -> list[str]:
    """Those of ``candidates`` whose marker is not ``ok`` (one pipelined GET each)."""
    if not candidates:
        return []
    pipe = redis.pipeline(transaction=False)
    for ws in candidates:
        pipe.get(marker_key(ws))
    values = await pipe.execute()
    return [ws for ws, v in zip(candidates, values, strict=True) if v != MARKER_OK]


async def rebuild_workspace(pool: asyncpg.Pool, redis: RedisClient, ws: str) -> int | None:
    """Rebuild ``ws``'s sets from PostgreSQL unless another process is doing it (None then);
    answers how many keys drifted."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", SW_HEAL_CLASS, ws):
            return None
        try:
            # Read again under the lock: another process may have finished a rebuild just now.
            if await redis.get(marker_key(ws)) == MARKER_OK:
                return 0
            token = f"rebuilding:{uuid.uuid4().hex}"
            await redis.set(marker_key(ws), token)
            report = await rebuild_and_diff(pool, redis, ws, repair=True)
            done = await redis.eval(_SET_IF_TOKEN, 1, marker_key(ws), token, MARKER_OK)
            if not done:
                log.warning("Redis lost data again while workspace %r was rebuilt; rebuilding it again", ws)
            return len(report.drift)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", SW_HEAL_CLASS, ws)


async def check_and_heal(
    pool: asyncpg.Pool, redis: RedisClient, on_rebuilt: Callable[[str], None] | None = None
) -> HealOutcome:
    """Find the workspaces whose marker is gone and rebuild those no other process is rebuilding
    (``on_rebuilt(ws)`` after each that had lost data: a first start's check of a Redis that is
    whole sets the markers without counting)."""
    async with pool.acquire() as conn:
        known = await workspaces(conn)
    lost = await lost_workspaces(redis, known)
    rebuilt: list[str] = []
    repaired = 0
    for ws in lost:
        drifted = await rebuild_workspace(pool, redis, ws)
        if drifted is None:
            continue
        rebuilt.append(ws)
        repaired += drifted
        if drifted:
            if on_rebuilt is not None:
                on_rebuilt(ws)
            log.warning("Redis had lost data of workspace %r: %d keys rebuilt from PostgreSQL", ws, drifted)
    return HealOutcome(tuple(lost), tuple(rebuilt), repaired)
