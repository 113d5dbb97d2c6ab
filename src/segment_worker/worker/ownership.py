"""Partition ownership of a worker: the rebalance callbacks, claiming (epochs), positioning
(stored offsets, pending Redis ops, unsent outbox) and giving partitions up.

A partition is *owned* once claimed (``owned``: partition → epoch) and *ready* once positioned;
until then it is paused (``_unready``). Every state change happens under the worker's lock, which
is never held across ``getmany`` (aiokafka issue 335): a revocation waits for the batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from ..config import Settings
from ..stores import postgres as pg
from ..stores.redis_client import RedisClient
from ..stores.unit import replay_redis_ops
from .metrics import WorkerMetrics
from .outbox import OutboxSender
from .positions import seek_stored
from .record_cache import RecordCache

if TYPE_CHECKING:
    from .loop import WorkerOptions

log = logging.getLogger(__name__)


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands aiokafka's callbacks to the worker."""

    def __init__(self, owner: PartitionOwnership) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._owner._on_assigned(assigned)


class PartitionOwnership:
    """Mixin of ``Worker``: which input partitions it owns and how it takes and loses them."""

    settings: Settings
    metrics: WorkerMetrics
    owner: str
    options: WorkerOptions
    owned: dict[int, int]
    _unready: set[int]
    _lock: asyncio.Lock
    _to_commit: dict[int, int]
    _consumer: Any
    _pool: asyncpg.Pool | None
    _redis: RedisClient | None
    _records: RecordCache
    _outbox: OutboxSender
    # Partition → times rewound or positioned: records fetched before a move are stale
    # (``fetching.usable``). Set by ``__init__`` of the worker.
    _moves: dict[int, int]

    def tick_now(self) -> None:
        raise NotImplementedError

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.settings.topic_events, p) for p in sorted(partitions)]

    def _rewind(self, partitions: set[int]) -> None:
        """Re-read ``partitions`` from their stored offsets before consuming them again."""
        for p in partitions:
            self._moves[p] = self._moves.get(p, 0) + 1
        if partitions:
            self._unready |= partitions
            with contextlib.suppress(Exception):
                self._consumer.pause(*self._tps(partitions))

    def _lose(self, partitions: set[int]) -> None:
        """Stop working on partitions another worker claimed, and rejoin the group so the
        assignment is settled again (normally the coordinator has begun that already)."""
        for p in partitions:
            self.owned.pop(p, None)
        self._unready -= partitions
        self._records.drop(partitions)
        self.metrics.forget_lag(partitions)
        self.metrics.set_owned(self.owner, len(self.owned))
        with contextlib.suppress(Exception):
            self._consumer.pause(*self._tps(partitions))
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "request_rejoin"):
            coordinator.request_rejoin()

    async def _recover(self) -> None:
        async with self._lock:
            parts = self._unready & set(self.owned)
            self._unready &= set(self.owned)
            if not parts:
                return
            try:
                await self._position(parts)
                return
            except Exception as exc:
                log.warning("cannot position partitions %s yet (%s); retrying", sorted(parts), exc)
                self.metrics.errors.labels("assign").inc()
        await asyncio.sleep(self.options.retry_backoff_seconds)

    async def _position(self, parts: set[int]) -> None:
        """Apply pending Redis ops, seek to the stored offsets, send the unsent outbox, resume."""
        assert self._pool is not None and self._redis is not None
        # Counted before the seek: the partitions are paused until it is done, so no fetch can
        # answer records of theirs between this count and the seek.
        for p in parts:
            self._moves[p] = self._moves.get(p, 0) + 1
        s = self.settings
        await replay_redis_ops(self._pool, self._redis, sorted(parts))
        async with self._pool.acquire() as conn:
            offsets = await pg.load_offsets(conn, s.consumer_group, s.topic_events, sorted(parts))
        tps = self._tps(parts)
        await seek_stored(self._consumer, s.kafka_bootstrap, tps, offsets)
        for tp in tps:
            self._to_commit.pop(tp.partition, None)
        self._records.drop(parts)
        self._unready -= parts
        self._consumer.resume(*tps)
        await self._send_outbox(parts)

    async def _send_outbox(self, partitions: Iterable[int]) -> None:
        assert self._pool is not None
        try:
            await self._outbox.drain(self._pool, set(partitions) & set(self.owned))
        except Exception as exc:
            # The rows stay unsent; the next batch, tick or notification sends them in order.
            log.warning("sending the outbox failed: %s", exc)
            self.metrics.errors.labels("outbox").inc()

    async def _on_revoked(self, revoked: Any) -> None:
        async with self._lock:
            parts = {tp.partition for tp in revoked if tp.topic == self.settings.topic_events}
            log.info("partitions revoked: %s", sorted(parts))
            for p in parts:
                self.owned.pop(p, None)
            self._unready -= parts
            self._records.drop(parts)
            self.metrics.forget_lag(parts)
            self.metrics.set_owned(self.owner, len(self.owned))
            assert self._pool is not None
            with contextlib.suppress(Exception):
                await self._outbox.flush_marks(self._pool)

    async def _on_assigned(self, assigned: Any) -> None:
        async with self._lock:
            parts = {tp.partition for tp in assigned if tp.topic == self.settings.topic_events}
            log.info("partitions assigned: %s", sorted(parts))
            if not parts:
                return
            # Paused until positioned: a failure below must not let the fetcher start anywhere else.
            self._consumer.pause(*self._tps(parts))
            self._unready |= parts
            assert self._pool is not None
            try:
                async with self._pool.acquire() as conn:
                    self.owned.update(await pg.claim_partitions(conn, sorted(parts), self.owner))
            except Exception as exc:
                # Without an epoch nothing may be written: give the partitions up and rejoin later.
                log.error("claiming partitions %s failed (%s); rejoining", sorted(parts), exc)
                self.metrics.errors.labels("assign").inc()
                self._lose(parts)
                return
            self.metrics.set_owned(self.owner, len(self.owned))
            try:
                await self._position(parts)
            except Exception as exc:
                log.warning(
                    "positioning partitions %s failed (%s); retrying from the loop", sorted(parts), exc
                )
                self.metrics.errors.labels("assign").inc()
        self.tick_now()
