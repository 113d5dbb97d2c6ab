"""One batch of input records through the commit order (steps 1–5 in ``stores.unit``; 6–7 in ``loop``).

records → parse (bad → DLQ) → key check (wrong → re-published) → one ``partition_unit`` over the
batch's partitions, fenced by their epochs: catalogues (revalidated), customer records (cached),
``engine.process`` at the clock's now, states, transitions, opt-outs, offsets; DLQ copies and
re-keyed records are delivered before that commit. The caller then sends the outbox and commits
offsets to Kafka.

Poison isolation (``run_isolating``; DESIGN.md "Poison and limits"): a batch that fails with an
error one record can cause (``failures.classify``) is re-run split — per partition, then in halves
— each part its own unit of work committing its own offsets, down to single records; a record that
still fails alone is dead-lettered (reason label ``poison``) in the unit that moves its offset past
it, and everything else is applied. Transient errors and fencing propagate: the caller re-reads
the batch's partitions from the stored offsets (which include the parts already committed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .. import faultpoints, tracing
from ..config import VersionsFormat
from ..engine import process
from ..events import AnyInputEvent, EventError, parse_event
from ..limits import INSTANT_OUT_OF_RANGE
from ..partitioning import partition_for
from ..state import CustomerKey, Transition
from ..stores import OptOutChange
from ..stores import postgres as pg
from ..stores.redis_client import RedisClient
from ..stores.unit import partition_unit
from .catalog_cache import CatalogCache
from .clock import Clock
from .deadletter import DeadLetter, Rekeyed, SourceRecord, publish_dead_letters, publish_rekeyed
from .failures import classify
from .latency import EndToEnd
from .metrics import WorkerMetrics
from .outbox import Written
from .positions import record_fingerprint
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
    # Partition → fingerprint of the record at its next offset - 1 (stored with the offset: a log
    # that went back is found on assignment, positions.seek_stored).
    last: dict[int, tuple[int, int]] = field(default_factory=dict)
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
            out.last.update(s.last)
            out.records += s.records
        return out

    def part(self, partition: int, lo: int, hi: int) -> SortedRecords:
        """The records of ``partition`` with offsets in ``[lo, hi)`` (committing up to ``hi``)."""
        out = SortedRecords(next_offsets={partition: hi})

        def inside(src: Any) -> bool:
            return bool(src.partition == partition and lo <= src.offset < hi)

        for ev, src in zip(self.events, self.sources, strict=True):
            if inside(src):
                out.events.append(ev)
                out.sources.append(src)
        out.dead = [d for d in self.dead if inside(d.source)]
        out.rekeyed = [r for r in self.rekeyed if inside(r.source)]
        out.records = len(out.events) + len(out.dead) + len(out.rekeyed)
        others: list[DeadLetter | Rekeyed] = [*out.dead, *out.rekeyed]
        kept: list[Any] = [*out.sources, *(x.source for x in others)]
        for src in kept:
            if src.offset == hi - 1:
                out.last[partition] = record_fingerprint(src)
        return out

    def first_offset(self, partition: int) -> int:
        """The lowest offset of ``partition`` among these records."""
        offsets = [src.offset for src in self.sources if src.partition == partition]
        others: list[DeadLetter | Rekeyed] = [*self.dead, *self.rekeyed]
        offsets += [x.source.offset for x in others if x.source.partition == partition]
        return min(offsets, default=self.next_offsets[partition])


def sort_records(records: Iterable[Any], partitions: int) -> SortedRecords:
    """Parse and key-check records (aiokafka ``ConsumerRecord``s of one topic, per-partition order).

    A record is applied here only if its key is ``"<ws>:<customer_id>"`` of its payload and it sits
    in that key's partition (``partitions`` = the input topic's count): one customer, one writer.
    """
    out = SortedRecords()
    lasts: dict[int, Any] = {}
    for r in records:
        out.records += 1
        out.next_offsets[r.partition] = r.offset + 1
        lasts[r.partition] = r
        try:
            ev = parse_event(r.value)
        except EventError as exc:
            out.dead.append(DeadLetter(SourceRecord.of(r), exc.reason, exc.kind))
            continue
        key = f"{ev.workspace_id}:{ev.customer_id}".encode()
        if r.key != key or partition_for(key, partitions) != r.partition:
            out.rekeyed.append(Rekeyed(SourceRecord.of(r), key))
            continue
        out.events.append(ev)
        out.sources.append(r)
    out.last = {p: record_fingerprint(r) for p, r in lasts.items()}
    return out


def traced_events(s: SortedRecords) -> dict[str, tuple[str, str | None]]:
    """Event id → the W3C trace context (traceparent, tracestate) its record's headers carry.

    Records without headers (the usual case) cost one falsy check each: measured with the batch
    micro-benchmark in ``tests/worker/test_tracing_worker.py``."""
    out: dict[str, tuple[str, str | None]] = {}
    for ev, src in zip(s.events, s.sources, strict=True):
        if src.headers:
            found = tracing.traceparent_of(src.headers)
            if found is not None:
                out[ev.event_id] = found
    return out


def remember_trace_context(
    transitions: Iterable[Transition], traced: Mapping[str, tuple[str, str | None]]
) -> None:
    """Put the trace context of each transition's causing event into its ``cause`` (stored in
    ``transitions.cause``; the outbox renders it as the CloudEvent's ``traceparent``/``tracestate``).
    Causes are one dict per event, shared by its transitions."""
    for t in transitions:
        found = traced.get(t.cause.get("event_id", ""))
        if found is not None and "traceparent" not in t.cause:
            t.cause["traceparent"] = found[0]
            if found[1]:
                t.cause["tracestate"] = found[1]


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
    poison: int = 0  # records dead-lettered by isolation (also counted in ``dead``)
    units: int = 1  # units of work committed (more than one when the batch was isolated)
    # The unit's outbox rows, for the sender to send from memory (None: read them back).
    written: Written | None = None

    @classmethod
    def merge(cls, parts: Sequence[BatchOutcome], seconds: float) -> BatchOutcome:
        """One outcome of a batch committed in several parts (``run_isolating``)."""
        return cls(
            sum(o.records for o in parts),
            sum(o.applied for o in parts),
            sum(o.dead for o in parts),
            sum(o.rekeyed for o in parts),
            sum(o.transitions for o in parts),
            tuple(sorted({p for o in parts for p in o.partitions})),
            seconds,
            sum(o.poison for o in parts),
            sum(o.units for o in parts),
        )


class BatchProcessor:
    """Runs batches for one worker; owns the record cache and the catalogue cache."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: RedisClient,
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
        latency: EndToEnd | None = None,
        versions_format: VersionsFormat = "map",
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
        self._stage = "reading"  # what the unit in flight was doing (poison reasons say it)
        self._latency = latency
        self._versions_format: VersionsFormat = versions_format

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
        traced = traced_events(s)
        try:
            with tracing.batch_span(self._topic, parts, s.records, list(traced.values())):
                transitions, dead, written = await self._commit(s, fence, partitions, traced)
        except BaseException:
            self.records.drop()
            raise
        seconds = time.perf_counter() - t0
        if self._latency is not None:  # each consumer record once: parsed, dead on parsing, re-keyed
            others: list[DeadLetter | Rekeyed] = [*s.dead, *s.rekeyed]
            stamps = [r.timestamp for r in s.sources] + [o.source.timestamp for o in others]
            self._latency.committed(stamps)
        m = self._metrics
        m.batch_size.observe(s.records)
        m.batch_duration.observe(seconds)
        applied = len(s.events) - (len(dead) - len(s.dead))
        m.events_processed.labels("applied").inc(applied)
        m.events_processed.labels("dead_lettered").inc(len(dead))
        m.events_processed.labels("rekeyed").inc(len(s.rekeyed))
        for letter in dead:
            m.dlq_records.labels(letter.kind).inc()
        m.rekeyed_records.inc(len(s.rekeyed))
        poison = sum(1 for letter in dead if letter.kind == "poison")
        return BatchOutcome(
            s.records, applied, len(dead), len(s.rekeyed), transitions, tuple(parts), seconds, poison,
            written=written,
        )

    async def run_isolating(
        self, s: SortedRecords, epochs: Mapping[int, int], partitions: int
    ) -> BatchOutcome:
        """``run``, and when it fails with an error one record can cause, the same records again in
        parts until every record is applied or, failing alone, dead-lettered (module docstring).

        Raises ``FencedError`` and transient errors as ``run`` does; parts committed before such an
        error stay committed (their offsets are stored)."""
        try:
            return await self.run(s, epochs, partitions)
        except Exception as exc:
            if classify(exc) != "poison":
                raise
            failure: Exception = exc
        t0 = time.perf_counter()
        parts = sorted(s.next_offsets)
        log.warning(
            "batch over partitions %s failed (%s: %s); re-running it in parts to isolate the record",
            parts, type(failure).__name__, _short(failure),
        )
        done: list[BatchOutcome] = []
        for p in parts:
            part = s.part(p, s.first_offset(p), s.next_offsets[p])
            # A batch of one partition has just failed as a whole: go straight to its halves.
            await self._settle(part, epochs, partitions, done, failure if len(parts) == 1 else None)
        return BatchOutcome.merge(done, time.perf_counter() - t0)

    async def _settle(
        self,
        s: SortedRecords,
        epochs: Mapping[int, int],
        partitions: int,
        done: list[BatchOutcome],
        failure: Exception | None,
    ) -> None:
        """Commit ``s`` (one partition's records), in halves if it fails, recursively."""
        if failure is None:
            try:
                done.append(await self.run(s, epochs, partitions))
                return
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
                failure = exc
        (p,) = s.next_offsets
        if len(s.events) > 1:
            lo, hi, mid = s.first_offset(p), s.next_offsets[p], s.sources[len(s.sources) // 2].offset
            await self._settle(s.part(p, lo, mid), epochs, partitions, done, None)
            await self._settle(s.part(p, mid, hi), epochs, partitions, done, None)
            return
        if not s.events:
            raise failure  # no record of ours to blame (e.g. the DLQ copies): not poison
        src, ev = s.sources[0], s.events[0]
        what = f"{type(failure).__name__}: {_short(failure)}"
        reason = f"poison: {what} (while {self._stage} event {ev.event_id})"
        log.error(
            "record %s[%d]@%d (event %s, workspace %s, customer %s) fails alone; dead-lettered: %s",
            src.topic, src.partition, src.offset, ev.event_id, ev.workspace_id, ev.customer_id, reason,
        )
        letter = DeadLetter(SourceRecord.of(src), reason, "poison")
        # Its offset moves past it in the same unit that delivers its DLQ copy. If this unit fails
        # too, the record was not the cause: the error propagates and nothing is dead-lettered.
        alone = SortedRecords(
            dead=[*s.dead, letter],
            rekeyed=list(s.rekeyed),
            next_offsets=dict(s.next_offsets),
            last=dict(s.last),
            records=s.records,
        )
        done.append(await self.run(alone, epochs, partitions))

    async def _commit(
        self, s: SortedRecords, fence: Mapping[int, int], partitions: int,
        traced: Mapping[str, tuple[str, str | None]],
    ) -> tuple[int, list[DeadLetter], Written]:
        self._stage = "reading"
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
            self._stage = "applying"
            result = process(s.events, recs, views, self._clock.now(), partitions=partitions)
            if traced:
                remember_trace_context(result.transitions, traced)
            dead = list(s.dead)  # not s.dead itself: a failed unit must leave ``s`` as it was
            for index, reason in result.rejected:
                kind = "limit" if INSTANT_OUT_OF_RANGE in reason else "invalid_value"
                dead.append(DeadLetter(SourceRecord.of(s.sources[index]), reason, kind))
            self._stage = "writing"
            states = [st for k in result.changed if (st := recs[k].state) is not None]
            optouts = [OptOutChange(ws, cid, keys[(ws, cid)], flag) for ws, cid, flag in result.optouts]
            await pg.save_states(
                u.conn, states, times_of=result.times_changed, versions_format=self._versions_format
            )
            await u.write_transitions(result.transitions)
            await pg.write_optout(u.conn, optouts)
            await pg.save_offsets(u.conn, self._group, self._topic, s.next_offsets, s.last)
            faultpoints.reach("batch_written")  # test-only (the fault suite): no-op unless armed
            # Records not applied here are delivered before the offsets past them commit, so a
            # crash re-publishes them instead of losing them.
            self._stage = "publishing"
            if dead:
                await publish_dead_letters(self._producer, self._dlq_topic, dead)
            if s.rekeyed:
                await publish_rekeyed(self._producer, self._topic, s.rekeyed)
            self._stage = "committing"
        self._metrics.count_transitions(result.transitions)
        if self._latency is not None:
            self._latency.caused(result.transitions, s.events, s.sources)
        return len(result.transitions), dead, Written(u.rows, u.cursors)


def _short(exc: BaseException, limit: int = 500) -> str:
    """An exception's message on one line, at most ``limit`` characters (it goes into a header)."""
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= limit else text[: limit - 1] + "…"
