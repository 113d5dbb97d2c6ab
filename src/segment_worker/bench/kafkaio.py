"""Kafka at the bench's edges: the input stream (pre-encoded on disk, produced flat out or at a
fixed rate) and a watcher of the output topic that timestamps every CloudEvent as it is consumed.

The stream is encoded to a file before the clock starts, so producing costs only the client's
send path, and the very same bytes feed every run and baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ..config import Settings
from ..kafka import client_options, kafka_errors
from .servers import BenchError

_HEADER = struct.Struct("<HI")
_PENDING = 20_000  # sends in flight before we wait for acknowledgements


def record_of(event: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """An input event as a Kafka record: key ``"<workspace_id>:<customer_id>"``, JSON value."""
    return f"{event['workspace_id']}:{event['customer_id']}".encode(), orjson.dumps(event)


@dataclass(frozen=True, slots=True)
class EventFile:
    """Encoded input records on disk (length-prefixed key and value)."""

    path: Path
    count: int

    @classmethod
    def write(cls, path: Path, events: Iterable[Mapping[str, Any]],
              progress: Callable[[int], None] | None = None) -> EventFile:
        """Encode ``events`` into ``path``."""
        n = 0
        with open(path, "wb", buffering=1 << 20) as f:
            for ev in events:
                key, value = record_of(ev)
                f.write(_HEADER.pack(len(key), len(value)))
                f.write(key)
                f.write(value)
                n += 1
                if progress is not None and n % 10_000 == 0:
                    progress(n)
        return cls(path, n)

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """The records, in order."""
        with open(self.path, "rb", buffering=1 << 20) as f:
            while header := f.read(_HEADER.size):
                klen, vlen = _HEADER.unpack(header)
                yield f.read(klen), f.read(vlen)


async def produce_all(
    producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[bytes, bytes]],
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send every record as fast as the client goes (acks=all); answers how many were sent."""
    pending: list[asyncio.Future[Any]] = []
    sent = 0
    with kafka_errors("produce bench events", topic=topic):
        for key, value in records:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= _PENDING:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if on_progress is not None:
                    on_progress(sent)
        await asyncio.gather(*pending)
    sent += len(pending)
    if on_progress is not None:
        on_progress(sent)
    return sent


async def produce_at_rate(
    producer: AIOKafkaProducer, topic: str, events: Iterable[Mapping[str, Any]], *, rate: float,
    sent_at: dict[str, float], stop_after: float,
) -> int:
    """Send events at ``rate`` per second for ``stop_after`` seconds, in 10 ms slices; record each
    event's send instant (``time.monotonic``) in ``sent_at`` by event id. Answers the count."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: list[asyncio.Future[Any]] = []
    n = 0
    it = iter(events)
    with kafka_errors("produce bench events", topic=topic):
        while (elapsed := loop.time() - start) < stop_after:
            due = int(elapsed * rate) + 1
            while n < due:
                ev = next(it)
                key, value = record_of(ev)
                sent_at[ev["event_id"]] = time.monotonic()
                pending.append(await producer.send(topic, value=value, key=key))
                n += 1
            if len(pending) >= 1000:
                done = [f for f in pending if f.done()]
                for f in done:
                    f.result()
                pending = [f for f in pending if not f.done()]
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
    return n


@dataclass(slots=True)
class SegmentSeen:
    """Output events of one segment: how many, and when the last one was consumed."""

    count: int = 0
    last: float = 0.0


@dataclass(slots=True)
class OutputWatcher:
    """Consumes the output topic from its start and keeps what the measurements need."""

    settings: Settings
    topic: str
    sent_at: dict[str, float] = field(default_factory=dict)  # event id → send instant (latency phase)
    latencies: list[float] = field(default_factory=list)
    total: int = 0
    last: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    segments: dict[str, SegmentSeen] = field(default_factory=dict)
    time_exits: dict[tuple[str, str], float] = field(default_factory=dict)  # (segment, customer) → seen
    watch_exits: set[str] = field(default_factory=set)  # segment ids whose time exits are kept
    _task: asyncio.Task[None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self, partitions: int) -> None:
        """Assign every partition of the topic, from the beginning, and consume in the background."""
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=8 << 20, fetch_max_wait_ms=10)
        # Tansu answers a fetch at its deadline, not when a record arrives: the watcher's wait
        # would be added to every latency measured (Kafka answers at once).
        with kafka_errors("watch the output topic", topic=self.topic):
            await consumer.start()
        consumer.assign([TopicPartition(self.topic, p) for p in range(partitions)])
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=20_000)
            now = time.monotonic()
            for records in batches.values():
                for r in records:
                    self._seen(orjson.loads(r.value), now)

    def _seen(self, ce: dict[str, Any], now: float) -> None:
        self.total += 1
        self.last = now
        data = ce.get("data") or {}
        cause = data.get("cause") or {}
        kind = cause.get("kind", "")
        self.kinds[kind] += 1
        sid = data.get("segment_id", "")
        seen = self.segments.get(sid)
        if seen is None:
            seen = self.segments[sid] = SegmentSeen()
        seen.count += 1
        seen.last = now
        if kind == "event" and self.sent_at:
            sent = self.sent_at.get(cause.get("event_id", ""))
            if sent is not None:
                self.latencies.append(now - sent)
        elif kind == "time" and sid in self.watch_exits and ce.get("type") == "segment.exited":
            self.time_exits.setdefault((sid, data.get("customer_id", "")), now)

    async def wait_total(self, expected: int, *, within: float) -> float:
        """Wait until ``expected`` events were consumed; answers when the last one was."""
        await _until(lambda: self.total >= expected, within, f"{expected} output events", self._task)
        return self.last

    async def wait_segment(self, segment_id: str, expected: int, *, within: float) -> float:
        """Wait until ``expected`` events of one segment were consumed; answers the last's instant."""
        def done() -> bool:
            seen = self.segments.get(segment_id)
            return expected == 0 or (seen is not None and seen.count >= expected)

        await _until(done, within, f"{expected} output events of segment {segment_id}", self._task)
        seen = self.segments.get(segment_id)
        return seen.last if seen is not None else time.monotonic()

    async def stop(self) -> None:
        """Stop consuming."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def _until(cond: Callable[[], bool], within: float, what: str,
                 task: asyncio.Task[None] | None = None) -> None:
    deadline = time.monotonic() + within
    while True:
        if cond():
            return
        if task is not None and task.done():
            task.result()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:.0f}s waiting for {what}", retriable=True,
                             context={"waiting_for": what})
        await asyncio.sleep(0.02)
