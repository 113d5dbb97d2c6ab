"""One batch of input records through the commit order (DESIGN.md "Commit order").

records → parse (bad → DLQ) → key check (wrong → re-published) → one ``partition_unit`` over the
batch's partitions, fenced by their epochs: catalogues (revalidated), customer records (cached),
``engine.process`` at the clock's now, states, transitions, opt-outs, offsets; DLQ copies and
re-keyed records are delivered before that commit. The caller then sends the outbox and commits
offsets to Kafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.asyncio import Redis

from .. import faultpoints
from ..engine import process
from ..events import AnyInputEvent, EventError, parse_event
from ..partitioning import partition_for
from ..state import CustomerKey
from ..stores import OptOutChange
from ..stores import postgres as pg
from ..stores.unit import partition_unit
from .catalog_cache import CatalogCache
from .clock import Clock
from .deadletter import DeadLetter, Rekeyed, SourceRecord, publish_dead_letters, publish_rekeyed
from .metrics import WorkerMetrics
from .record_cache import RecordCache

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SortedRecords:
    """A batch's records sorted by what happens to them."""

    events: list[AnyInputEvent] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)  # the consumer records, parallel to events
    dead: list[DeadLetter] = field(default_factory=list)
    rekeyed: list[Rekeyed] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    records: int = 0  # consumer records sorted (all kinds)

    @classmethod
    def merge(cls, parts: Iterable[SortedRecords]) -> SortedRecords:
        """One batch of several sorted record lists (e.g. one per input partition)."""
        out = cls()
        for s in parts:
            out.events += s.events
            out.sources += s.sources
            out.dead += s.dead
            out.rekeyed += s.rekeyed
            out.next_offsets.update(s.next_offsets)
            out.records += s.records
        return out


def sort_records(records: Iterable[Any], partitions: int) -> SortedRecords:
    """Parse and key-check records (aiokafka ``ConsumerRecord``s of one topic, per-partition order).

    A record is applied here only if its key is ``"<ws>:<customer_id>"`` of its payload and it sits
    in that key's partition (``partitions`` = the input topic's count): one customer, one writer.
    """
    out = SortedRecords()
    for r in records:
        out.records += 1
        out.next_offsets[r.partition] = r.offset + 1
        try:
            ev = parse_event(r.value)
        except EventError as exc:
            out.dead.append(DeadLetter(SourceRecord.of(r), exc.reason))
            continue
        key = f"{ev.workspace_id}:{ev.customer_id}".encode()
        if r.key != key or partition_for(key, partitions) != r.partition:
            out.rekeyed.append(Rekeyed(SourceRecord.of(r), key))
            continue
        out.events.append(ev)
        out.sources.append(r)
    return out


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a committed batch did (for metrics, logs and tests)."""

    records: int
    applied: int
    dead: int
    rekeyed: int
    transitions: int
    partitions: tuple[int, ...]
    seconds: float


class BatchProcessor:
    """Runs batches for one worker; owns the record cache and the catalogue cache."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: Redis,
        producer: Any,
        clock: Clock,
        metrics: WorkerMetrics,
        group: str,
        topic: str,
        dlq_topic: str,
        catalogs: CatalogCache,
        records: RecordCache,
        before_commit: Callable[[asyncpg.Connection], Any] | None = None,
        on_connection: Callable[[int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._producer = producer
        self._clock = clock
        self._metrics = metrics
        self._group = group
        self._topic = topic
        self._dlq_topic = dlq_topic
        self.catalogs = catalogs
        self.records = records
        self._before_commit = before_commit
        self._on_connection = on_connection

    async def run(
        self, records: Sequence[Any] | SortedRecords, epochs: Mapping[int, int], partitions: int
    ) -> BatchOutcome:
        """Process ``records`` (all of partitions in ``epochs``; consumer records, or already
        ``sort_records``-ed with the same ``partitions``) in one fenced unit of work.

        Raises ``FencedError`` when another worker claimed one of the partitions (nothing is
        written), and any store/Kafka error as it comes; on any error the record cache is dropped
        (the engine changed cached records in place) and the caller re-reads from the stored offsets.
        """
        t0 = time.perf_counter()
        s = records if isinstance(records, SortedRecords) else sort_records(records, partitions)
        parts = sorted(s.next_offsets)
        fence = {p: epochs[p] for p in parts}
        try:
            transitions, rejected = await self._commit(s, fence, partitions)
        except BaseException:
            self.records.drop()
            raise
        seconds = time.perf_counter() - t0
        m = self._metrics
        m.batch_size.observe(s.records)
        m.batch_duration.observe(seconds)
        applied = len(s.events) - rejected
        m.events_processed.labels("applied").inc(applied)
        m.events_processed.labels("dead_lettered").inc(len(s.dead))
        m.events_processed.labels("rekeyed").inc(len(s.rekeyed))
        m.dlq_records.inc(len(s.dead))
        m.rekeyed_records.inc(len(s.rekeyed))
        return BatchOutcome(
            s.records, applied, len(s.dead), len(s.rekeyed), transitions, tuple(parts), seconds
        )

    async def _commit(self, s: SortedRecords, fence: Mapping[int, int], partitions: int) -> tuple[int, int]:
        keys: dict[CustomerKey, int] = {}
        for ev, src in zip(s.events, s.sources, strict=True):
            keys[(ev.workspace_id, ev.customer_id)] = src.partition
        async with partition_unit(self._pool, self._redis, list(fence), fence=fence) as u:
            if self._on_connection is not None:
                self._on_connection(u.conn.get_server_pid())
            self.records.check_generations(u.generations)
            if self._before_commit is not None:
                await self._before_commit(u.conn)
            views = await self.catalogs.views(u.conn, {k[0] for k in keys})
            recs = await self.records.get(u.conn, keys)
            result = process(s.events, recs, views, self._clock.now(), partitions=partitions)
            for index, reason in result.rejected:
                s.dead.append(DeadLetter(SourceRecord.of(s.sources[index]), reason))
            states = [st for k in result.changed if (st := recs[k].state) is not None]
            optouts = [OptOutChange(ws, cid, keys[(ws, cid)], flag) for ws, cid, flag in result.optouts]
            await pg.save_states(u.conn, states)
            await pg.write_transitions(u.conn, result.transitions)
            await pg.write_optout(u.conn, optouts)
            await pg.save_offsets(u.conn, self._group, self._topic, s.next_offsets)
            faultpoints.reach("batch_written")  # test-only (the fault suite): no-op unless armed
            # Records not applied here are delivered before the offsets past them commit, so a
            # crash re-publishes them instead of losing them.
            if s.dead:
                await publish_dead_letters(self._producer, self._dlq_topic, s.dead)
            if s.rekeyed:
                await publish_rekeyed(self._producer, self._topic, s.rekeyed)
        for t in result.transitions:
            self._metrics.transitions.labels(t.kind, t.cause.get("kind", "event")).inc()
        return len(result.transitions), len(result.rejected)
