"""Partition ownership of a worker: the rebalance callbacks, claiming (epochs), positioning
(stored offsets, pending Redis ops, unsent outbox) and giving partitions up.

``Ownership`` changes the worker's ``PartitionState`` (``partitions.py``) and keeps the consumer's
pauses, the record cache and the gauges in step with it. Every change happens under the worker's
lock, which is never held across ``getmany`` (aiokafka issue 335): a revocation waits for the
batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from ..config import Settings
from ..stores import postgres as pg
from ..stores.errors import LockTimeoutError
from ..stores.fencing import claim_fencing_out, end_stale_holders
from ..stores.pgtimeouts import CLAIM_LOCK_TIMEOUT
from ..stores.redis_client import RedisClient
from ..stores.unit import SW_LOCK_CLASS, replay_redis_ops
from .latency import EndToEnd
from .metrics import WorkerMetrics
from .outbox import OutboxSender
from .partitions import PartitionState
from .positions import seek_stored
from .record_cache import RecordCache
from .topics import TopicGuard

log = logging.getLogger(__name__)


def topic_partitions(topic: str, partitions: Iterable[int]) -> list[TopicPartition]:
    """``topic``'s ``TopicPartition`` of each of ``partitions``, in order."""
    return [TopicPartition(topic, p) for p in sorted(partitions)]


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands aiokafka's callbacks to ``Ownership``."""

    def __init__(self, ownership: Ownership) -> None:
        self._ownership = ownership

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._ownership.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._ownership.on_assigned(assigned)


@dataclass(slots=True)
class Ownership:
    """How a worker takes, positions and loses input partitions (made by ``Worker.start``)."""

    settings: Settings
    metrics: WorkerMetrics
    owner: str
    state: PartitionState
    lock: asyncio.Lock
    consumer: Any
    pool: asyncpg.Pool
    redis: RedisClient
    records: RecordCache
    outbox: OutboxSender
    latency: EndToEnd  # forgets what it remembered for the partitions given up
    # Sends the outbox of those of the partitions still owned (``Worker.send_outbox``).
    send_outbox: Callable[[Iterable[int]], Awaitable[None]]
    on_assigned_done: Callable[[], None]  # newly owned partitions are ticked at once
    retry_backoff_seconds: float
    topics: TopicGuard  # suspected when an input log went back: the broker lost its data

    def tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        """The input topic's ``TopicPartition`` of each of ``partitions``, in order."""
        return topic_partitions(self.settings.topic_events, partitions)

    def rewind(self, partitions: set[int]) -> None:
        """Re-read ``partitions`` from their stored offsets before consuming them again."""
        if partitions:
            self.state.rewound(partitions)
            with contextlib.suppress(Exception):
                self.consumer.pause(*self.tps(partitions))

    def lose(self, partitions: set[int]) -> None:
        """Stop working on partitions another worker claimed, and rejoin the group so the
        assignment is settled again (normally the coordinator has begun that already)."""
        self._forget(partitions)
        with contextlib.suppress(Exception):
            self.consumer.pause(*self.tps(partitions))
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "request_rejoin"):
            coordinator.request_rejoin()

    def _forget(self, partitions: set[int]) -> None:
        self.state.lost(partitions)
        self.records.drop(partitions)
        self.metrics.forget_lag(partitions)
        self.latency.forget(partitions)
        self.outbox.forget(partitions)
        self.metrics.set_owned(self.owner, len(self.state.owned))

    async def recover(self) -> None:
        """Position the owned partitions that are not ready (the batch loop, before a fetch)."""
        async with self.lock:
            self.state.keep_only_owned()
            parts = self.state.unready()
            if not parts:
                return
            try:
                await self._position(parts)
                return
            except Exception as exc:
                log.warning("cannot position partitions %s yet (%s); retrying", sorted(parts), exc)
                self.metrics.errors.labels("assign").inc()
        await asyncio.sleep(self.retry_backoff_seconds)

    async def _position(self, parts: set[int]) -> None:
        """Apply pending Redis ops, seek to the stored offsets, send the unsent outbox, resume."""
        # Counted before the seek: the partitions are paused until it is done, so no fetch can
        # answer records of theirs between this count and the seek.
        self.state.moving(parts)
        s = self.settings
        await self._replay_fencing_out(sorted(parts))
        async with self.pool.acquire() as conn:
            offsets, void = await pg.load_positions(conn, s.consumer_group, s.topic_events, sorted(parts))
            prints = await pg.load_fingerprints(conn, s.consumer_group, s.topic_events, sorted(parts))
        for p, stored in sorted(void.items()):
            log.warning(
                "stored position %d of %s[%d] belongs to a log the broker lost (the topic was"
                " recreated); continuing from the log start", stored, s.topic_events, p,
            )
        tps = self.tps(parts)
        if lost := await seek_stored(self.consumer, s, tps, offsets, prints):
            first = min(lost, key=lambda tp: tp.partition)
            self.topics.suspect(f"the input log {first.topic}[{first.partition}] went back")
        self.records.drop(parts)
        self.state.positioned(parts)
        self.consumer.resume(*tps)
        await self.send_outbox(parts)

    async def _replay_fencing_out(self, parts: list[int]) -> None:
        """Apply pending Redis ops under the partitions' locks; a stale owner frozen while holding
        them (e.g. between its commit and its Redis writes) is ended after ``CLAIM_LOCK_TIMEOUT``."""
        try:
            await replay_redis_ops(self.pool, self.redis, parts, lock_timeout=CLAIM_LOCK_TIMEOUT)
            return
        except LockTimeoutError:
            async with self.pool.acquire() as conn:
                await end_stale_holders(conn, SW_LOCK_CLASS, parts, self.settings.consumer_group, self.owner)
        await replay_redis_ops(self.pool, self.redis, parts, lock_timeout=CLAIM_LOCK_TIMEOUT)

    async def on_revoked(self, revoked: Any) -> None:
        """aiokafka: the group takes ``revoked`` away (after the batch in flight)."""
        async with self.lock:
            parts = {tp.partition for tp in revoked if tp.topic == self.settings.topic_events}
            log.info("partitions revoked: %s", sorted(parts))
            self._forget(parts)
            with contextlib.suppress(Exception):
                await self.outbox.flush_marks(self.pool)

    async def on_assigned(self, assigned: Any) -> None:
        """aiokafka: the group gave us ``assigned``: claim (epoch bump), then position them."""
        async with self.lock:
            parts = {tp.partition for tp in assigned if tp.topic == self.settings.topic_events}
            log.info("partitions assigned: %s", sorted(parts))
            if not parts:
                return
            # Paused until positioned: a failure below must not let the fetcher start anywhere else.
            self.consumer.pause(*self.tps(parts))
            self.state.assigned(parts)
            try:
                # A frozen previous owner's transaction holds the rows: it is ended after a short
                # wait (``stores.fencing``) instead of blocking this claim for ever.
                self.state.claimed(await claim_fencing_out(
                    self.pool, SW_LOCK_CLASS, sorted(parts), self.owner, self.settings.consumer_group
                ))
            except Exception as exc:
                # Without an epoch nothing may be written: give the partitions up and rejoin later.
                log.error("claiming partitions %s failed (%s); rejoining", sorted(parts), exc)
                self.metrics.errors.labels("assign").inc()
                self.lose(parts)
                return
            self.metrics.set_owned(self.owner, len(self.state.owned))
            try:
                await self._position(parts)
            except Exception as exc:
                log.warning(
                    "positioning partitions %s failed (%s); retrying from the loop", sorted(parts), exc
                )
                self.metrics.errors.labels("assign").inc()
        self.on_assigned_done()
