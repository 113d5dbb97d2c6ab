"""What a worker watches besides its batches: partitions that stopped progressing (``/healthz``)
and a Redis that lost data (rebuilt from PostgreSQL, ``stores.redisheal``).

Both run as background tasks of ``Worker`` outside its lock — a batch hanging on a store holds
the lock, and that is exactly when the watchdog must still see the partitions stand still.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import asyncpg

from ..config import Settings
from ..stores import postgres as pg
from ..stores.redis_client import RedisClient
from ..stores.redisheal import check_and_heal
from .metrics import WorkerMetrics
from .ownership import topic_partitions
from .partitions import PartitionState

log = logging.getLogger(__name__)


async def committed_lag(
    consumer: Any, pool: asyncpg.Pool, settings: Settings, owned: Iterable[int]
) -> dict[int, int]:
    """Records between each owned partition's position stored in PostgreSQL and its log end (the
    larger of ``end_offsets`` and the fetch high watermark; see ``positions``). Not the consumer's
    position: a batch that keeps failing has fetched ahead and is rewound again and again."""
    assigned = consumer.assignment()
    tps = [tp for tp in topic_partitions(settings.topic_events, owned) if tp in assigned]
    if not tps:
        return {}
    ends = await consumer.end_offsets(tps)
    async with pool.acquire() as conn:
        stored = await pg.load_offsets(
            conn, settings.consumer_group, settings.topic_events, [tp.partition for tp in tps]
        )
    out: dict[int, int] = {}
    for tp in tps:
        end = max(ends[tp], consumer.highwater(tp) or 0)
        out[tp.partition] = max(0, end - stored.get(tp.partition, 0))
    return out


class Watchdog:
    """Finds the owned partitions that are stuck: lag when last measured, and no progress (a
    batch committed, or no lag) for longer than ``bound`` seconds. ``Worker`` calls ``check``
    every ``WorkerOptions.watch_seconds``; ``/healthz`` fails while any is stuck."""

    def __init__(
        self, consumer: Any, pool: asyncpg.Pool, settings: Settings, state: PartitionState, bound: float
    ) -> None:
        self._consumer = consumer
        self._pool = pool
        self._settings = settings
        self._state = state
        self._bound = bound
        self._last: tuple[int, ...] = ()

    async def check(self) -> tuple[int, ...]:
        """Measure the lag, answer the stuck partitions (logged when the set changes)."""
        try:
            lags = await committed_lag(self._consumer, self._pool, self._settings, self._state.owned)
            self._state.observed(lags)
        except Exception as exc:  # the last measurement stands: time without progress keeps counting
            log.debug("measuring the lag failed: %s", exc)
        stuck = tuple(sorted(self._state.stuck(time.monotonic(), self._bound)))
        if stuck and stuck != self._last:
            log.error(
                "partitions %s have lag and made no progress for over %.0f s; /healthz fails",
                list(stuck), self._bound,
            )
        self._last = stuck
        return stuck


async def heal_redis(pool: asyncpg.Pool, redis: RedisClient, metrics: WorkerMetrics) -> None:
    """One Redis check: rebuild the workspaces whose marker is gone (``stores.redisheal``; one
    worker per workspace, the others skip it); ``segment_worker_redis_rebuilds`` counts them."""
    outcome = await check_and_heal(pool, redis, on_rebuilt=lambda _ws: metrics.redis_rebuilds.inc())
    if outcome.rebuilt:
        log.info("Redis sets of %d workspaces rebuilt from PostgreSQL (%d keys had drifted)",
                 len(outcome.rebuilt), outcome.repaired_keys)
