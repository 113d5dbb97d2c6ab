"""The Kafka side of the outbox: send unsent ``transitions`` rows of owned partitions as CloudEvents,
in id order, and learn about other writers' commits through ``LISTEN sw_outbox``.

Delivery is recorded lazily: the highest id delivered per partition is remembered and moves that
partition's cursor (``mark_sent``) in the next transaction the worker opens anyway (its next
batch), or by ``flush_marks`` when idle. A crash in between re-sends them; duplicates carry the
same CloudEvent ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .. import faultpoints, tracing
from ..errors import StoreUnavailable
from ..events import render_segment_deleted, segment_deleted_key
from ..membership_events import RECORD_HEADERS, TransitionRenderer
from ..partitioning import partition_for
from ..stores import TransitionRow, pg_outbox
from ..stores.pg_redisops import Cursors
from ..stores.pgtimeouts import DEFAULT_TIMEOUTS
from ..stores.unit import OUTBOX_CHANNEL
from .latency import EndToEnd
from .metrics import WorkerMetrics
from .topics import TopicGuard

log = logging.getLogger(__name__)


def render_row(row: TransitionRow, renderer: TransitionRenderer | None = None) -> tuple[bytes, bytes]:
    """The Kafka (key, value) of an outbox row (``renderer``: one reused across rows is faster)."""
    if row.kind == "deleted":
        return (
            segment_deleted_key(row.workspace_id, row.segment_id),
            render_segment_deleted(row.workspace_id, row.segment_id, row.segment_name, row.at),
        )
    if row.customer_id is None or row.seq is None:
        raise ValueError(f"outbox row {row.id} ({row.kind}) has no customer or seq")
    value = (renderer or TransitionRenderer()).render(
        row.workspace_id, row.segment_id, row.segment_name, row.customer_id, row.seq, row.kind, row.cause,
        row.at,
    )
    return f"{row.workspace_id}:{row.customer_id}".encode(), value


class OutputLogLost(StoreUnavailable):
    """Deliveries that cannot be trusted: answered at offsets the output log had passed already
    (it was recreated), or settled while the topics were in doubt (``TopicGuard``)."""


@dataclass(frozen=True, slots=True)
class Written:
    """What a committed unit wrote to the outbox: its rows (id order; their Redis ops applied) and
    its partitions' cursors when it started (``stores.unit.Unit``)."""

    rows: Sequence[TransitionRow]
    cursors: Mapping[int, Cursors]


@dataclass(slots=True)
class _Queued:
    """A chunk of rows handed to the producer: its delivery futures and highest id per partition."""

    futures: list[Any]
    marks: dict[int, int]
    sent: int
    born: list[float]  # the causing input records' times of the rows we time (``latency``)


class OutboxSender:
    """Sends outbox rows with one producer; remembers what was delivered until it is marked."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        metrics: WorkerMetrics,
        *,
        batch_rows: int = 5000,
        latency: EndToEnd | None = None,
        guard: TopicGuard | None = None,
    ) -> None:
        self._producer = producer
        self._guard = guard or TopicGuard()
        self._topic = topic
        self._metrics = metrics
        self._batch_rows = batch_rows
        self._latency = latency
        self._unmarked: dict[int, int] = {}
        # Partition → highest id this sender has delivered there (marked or not): every row of
        # the partition up to it was delivered, in order (drains and ``send_written`` alike).
        self._delivered: dict[int, int] = {}
        # Partitions of a send that failed (or is under way): until a drain has covered them, a
        # batch's rows wait for a drain of every owned partition, which sends what the failure
        # left first — as promptly as when every batch drained.
        self._retry: set[int] = set()
        self._renderer = TransitionRenderer()

    @property
    def has_unmarked(self) -> bool:
        return bool(self._unmarked)

    async def mark_in(self, conn: asyncpg.Connection) -> None:
        """Mark the delivered rows sent, in the caller's transaction (the lazy path)."""
        if self._unmarked:
            marks, self._unmarked = self._unmarked, {}
            await pg_outbox.mark_sent(conn, marks)

    async def flush_marks(self, pool: asyncpg.Pool) -> None:
        """Mark the delivered rows sent now (when no batch transaction is coming)."""
        if self._unmarked:
            async with pool.acquire() as conn:
                await self.mark_in(conn)

    def forget(self, partitions: Collection[int]) -> None:
        """Partitions given up (revoked or claimed by another worker): their unsent rows are the
        next owner's, which sends them on assignment — a failed send there no longer holds this
        sender's batches to draining (no drain of the owned partitions would ever cover them)."""
        self._retry.difference_update(partitions)

    async def send_written(self, written: Written) -> bool:
        """Send a committed unit's outbox rows from memory — read back they cost PostgreSQL a
        fetch and the worker a decode per row (docs/PERFORMANCE.md, "Issue 17") — when nothing
        older of their partitions can be unsent: each partition's last transition before the unit
        was delivered (the outbox cursor then, or this sender since). Answers False, sending
        nothing, when that is not known — rows of another writer or of a failed unit in between,
        an earlier send failed, the topics are being checked: the caller drains instead, which
        reads them all back in order. Raises what sending raises (the rows stay unsent)."""
        if self._retry or not self._guard.verified:
            return False
        for p, c in written.cursors.items():
            if c.last > max(c.sent, self._delivered.get(p, 0)):
                return False
        if not written.rows:
            return True
        parts = sorted(written.cursors)
        self._retry.update(parts)  # until delivered
        with tracing.send_span(self._topic, parts, len(written.rows)):
            chunk = await self._queue(written.rows)
        await self._settle(chunk)
        self._retry.difference_update(parts)
        return True

    async def drain(self, pool: asyncpg.Pool, partitions: Collection[int]) -> int:
        """Send every unsent row of ``partitions`` in id order; wait for delivery. Answers the count.

        Marks from earlier sends are flushed first: ``fetch_unsent`` must not see them again.
        A backlog goes out in chunks, each read while the previous one is rendered and delivered
        (past the ids already queued): the producer queues each output partition's batches in
        order, so every key's events keep their order. Delivery is recorded chunk by chunk, in
        order, so a failure never records a later chunk without the earlier ones.
        """
        if not partitions:
            return 0
        if not self._guard.verified:
            # The broker may have lost the topic: sent now, rows could be acknowledged and dropped
            # (``topics``). They stay unsent; the topics task has them sent once it is checked.
            log.debug("outbox of %s held: the Kafka topics are being checked", sorted(partitions))
            return 0
        parts = sorted(partitions)
        limit = self._batch_rows
        total = 0
        self._retry.update(parts)  # until every chunk is delivered
        async with pool.acquire() as conn:
            await self.mark_in(conn)
            rows = await pg_outbox.fetch_unsent(conn, parts, limit)
            after: dict[int, int] = {}  # the highest id queued per partition
            pending: list[_Queued] = []  # handed to the producer, delivery not yet recorded
            ahead: asyncio.Future[list[TransitionRow]] | None = None
            try:
                while rows:
                    for row in rows:  # id order: a partition's last row has its highest id
                        after[row.partition] = row.id
                    # Read on while this chunk is rendered and sent (a short answer is no sign of
                    # the end: see fetch_unsent).
                    nxt = pg_outbox.fetch_unsent(conn, parts, limit, after=dict(after))
                    ahead = asyncio.ensure_future(nxt)
                    with tracing.send_span(self._topic, sorted(after), len(rows)):
                        pending.append(await self._queue(rows))
                    if len(pending) > 1:
                        await self._settle(pending.pop(0))
                    total += len(rows)
                    rows = await ahead
                    ahead = None
                while pending:
                    await self._settle(pending.pop(0))
                self._retry.difference_update(parts)
            finally:
                for chunk in pending:  # failed or cancelled: collect their outcome, unawaited
                    asyncio.gather(*chunk.futures, return_exceptions=True)
                if ahead is not None:  # the connection goes back to the pool only once it answered
                    await asyncio.wait([ahead])
                    if not ahead.cancelled():
                        ahead.exception()  # retrieved: the error raised already is the one to report
        return total

    async def _queue(self, rows: Sequence[TransitionRow]) -> _Queued:
        """Render ``rows`` and hand them to the producer in order. Records are packed into one
        record batch per output partition (about 3× cheaper than one ``send`` each); a partition's
        batches are queued in order and aiokafka keeps one batch in flight per partition, so each
        key's events arrive in order."""
        producer, topic, renderer = self._producer, self._topic, self._renderer
        count = len(await producer.partitions_for(topic))
        builders: dict[int, Any] = {}
        futures = []
        marks: dict[int, int] = {}
        sent = 0
        born: list[float] = []
        latency = self._latency

        async def ship(builder: Any, p: int) -> None:
            # Closed, a batch goes out at once instead of after linger_ms: the caller waits for its
            # delivery next, and nothing more will be added to it.
            builder.close()
            futures.append(await producer.send_batch(builder, topic, partition=p))

        for row in rows:
            marks[row.partition] = row.id  # rows come in id order
            try:
                key, value = render_row(row, renderer)
            except ValueError:
                # A malformed row can never be sent; skipping it keeps the rest of the outbox moving.
                log.exception("outbox row %d cannot be rendered; marking it sent without sending", row.id)
                continue
            sent += 1
            if latency is not None and (ts := latency.take(row.partition, row.segment_id, row.customer_id,
                                                            row.seq)) is not None:
                born.append(ts)
            p = partition_for(key, count)  # the producer's default partitioner, by key
            builder = builders.get(p)
            if builder is None:
                builder = builders[p] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=RECORD_HEADERS) is not None:
                continue
            if builder.record_count():  # full: queue it, start the next one
                await ship(builder, p)
                builder = builders[p] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None, headers=RECORD_HEADERS) is not None:
                    continue
            futures.append(
                await producer.send(topic, value=value, key=key, partition=p, headers=RECORD_HEADERS)
            )  # larger than a batch
        for p, builder in builders.items():
            if builder.record_count():
                await ship(builder, p)
        return _Queued(futures, marks, sent, born)

    async def _settle(self, chunk: _Queued) -> None:
        """Wait until ``chunk`` is delivered, then remember it for marking."""
        results = await asyncio.gather(*chunk.futures)
        # Suspected meanwhile (a broken connection: aiokafka re-sent on a new one, perhaps to a
        # broker that lost the topic and acknowledges into nothing), or an offset that went back.
        if not self._guard.verified or not self._guard.delivered(results):
            raise OutputLogLost(
                "deliveries to the output topic cannot be trusted (a broken broker connection, or an"
                " offset that went back: a broker that lost its data); their rows are sent again once"
                " the topics are checked", context={"topic": self._topic},
            )
        faultpoints.reach("after_kafka_send")
        for p, max_id in chunk.marks.items():
            self._unmarked[p] = max(self._unmarked.get(p, 0), max_id)
            self._delivered[p] = max(self._delivered.get(p, 0), max_id)
        self._metrics.outbox_sent.inc(chunk.sent)
        if self._latency is not None:
            self._latency.delivered(chunk.born)


class OutboxListener:
    """``LISTEN sw_outbox`` on a dedicated connection: wakes the sender when another process (an
    API call) commits transitions of a partition. Notifications from our own connections
    (``ignore_pid``) are dropped; the sender ran already for those."""

    def __init__(self, dsn: str, *, application_name: str = "segment-worker listen") -> None:
        self._dsn = dsn
        self.application_name = application_name
        self._conn: asyncpg.Connection | None = None
        self._own_pids: set[int] = set()
        self._pending: set[int] = set()
        self.event = asyncio.Event()

    def ignore_pid(self, pid: int) -> None:
        """Notifications sent by backend ``pid`` (one of the worker's own connections) are ignored."""
        self._own_pids.add(pid)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> None:
        """(Re)open the LISTEN connection; failures are logged, polling covers the gap."""
        if self.connected:
            return
        try:
            conn = await asyncpg.connect(
                self._dsn, server_settings=DEFAULT_TIMEOUTS.server_settings(self.application_name)
            )
            await conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN %s failed (%s); the outbox is polled each tick instead", OUTBOX_CHANNEL, exc)
            return
        self._conn = conn

    def _on_notify(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid in self._own_pids:
            return
        for part in payload.split(","):
            with contextlib.suppress(ValueError):
                self._pending.add(int(part))
        self.event.set()

    def take(self) -> set[int]:
        """The partitions notified since the last call (and clear the wake-up event)."""
        self.event.clear()
        pending, self._pending = self._pending, set()
        return pending

    async def close(self) -> None:
        """Stop listening."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


async def backlog(pool: asyncpg.Pool, partitions: Collection[int]) -> tuple[int, datetime | None]:
    """Unsent outbox rows of ``partitions`` and the time of the oldest (the ``outbox_backlog`` and
    ``outbox_oldest_unsent_seconds`` gauges)."""
    if not partitions:
        return 0, None
    async with pool.acquire() as conn:
        parts = sorted(partitions)
        return await pg_outbox.count_unsent(conn, parts), await pg_outbox.oldest_unsent(conn, parts)
