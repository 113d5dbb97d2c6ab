"""End-to-end latency (``segment_worker_end_to_end_seconds``): from an input record's Kafka
timestamp to its batch committed (``stage="committed"``) and to the delivery of each CloudEvent
it caused (``stage="sent"``).

``committed`` is observed once per record of a committed batch (about 1 µs each, measured).
``sent`` is exact per transition: a batch remembers, for each transition an input event caused,
the event's record timestamp under the transition's identity (segment, customer, seq: unique, as
``seq`` counts that pair's transitions); the outbox looks each row up as it queues it and observes
once the producer confirmed delivery. Transitions the worker did not cause in this process (API
calls, ticks, rows left by a previous owner) carry no input timestamp and are not observed; nor
is a row whose delivery failed (it is sent again later, untimed).

The pending map empties as the outbox drains; while it cannot drain (Kafka down, Redis ops
pending) it grows with the backlog, so it is capped (``max_pending``): past the cap transitions
are not timed, which loses samples, never memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

from ..state import Transition
from .metrics import WorkerMetrics

# (segment_id, customer_id, seq): what identifies a transition both in memory and as an outbox row.
TransitionId = tuple[UUID, str, int]


class EndToEnd:
    """The two stages of ``segment_worker_end_to_end_seconds`` for one worker (lane)."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        *,
        max_pending: int = 200_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._committed = metrics.end_to_end.labels("committed")
        self._sent = metrics.end_to_end.labels("sent")
        self._max_pending = max_pending
        self._wall = wall
        self._pending: dict[int, dict[TransitionId, float]] = {}  # partition → id → record time (s)
        self._count = 0

    @property
    def pending(self) -> int:
        """Transitions waiting for their CloudEvent's delivery to be timed."""
        return self._count

    def committed(self, timestamps_ms: Iterable[int]) -> None:
        """Observe a committed batch's records (Kafka timestamps in ms; ≤ 0 means none)."""
        now = self._wall()
        observe = self._committed.observe
        for ts in timestamps_ms:
            if ts > 0:
                observe(max(0.0, now - ts / 1000.0))

    def caused(
        self, transitions: Sequence[Transition], events: Sequence[Any], sources: Sequence[Any]
    ) -> None:
        """Remember the record timestamp of each transition an input event caused (``events`` and
        ``sources``, their consumer records, are parallel)."""
        if not transitions or self._count >= self._max_pending:
            return
        stamps: dict[str, float] = {}
        for ev, src in zip(events, sources, strict=True):
            if src.timestamp > 0:
                # A repeated event id keeps its first record's (older) timestamp.
                stamps.setdefault(ev.event_id, src.timestamp / 1000.0)
        room = self._max_pending - self._count
        for t in transitions:
            if room <= 0:
                break
            # Causes with an event id: "event", and "customer_deleted" (the exits of a deletion).
            ts = stamps.get(t.cause.get("event_id", ""))
            if ts is None:
                continue
            part = self._pending.setdefault(t.partition, {})
            key = (t.segment_id, t.customer_id, t.seq)
            if key not in part:
                part[key] = ts
                room -= 1
        self._count = self._max_pending - room

    def take(
        self, partition: int, segment_id: UUID, customer_id: str | None, seq: int | None
    ) -> float | None:
        """The record time (s) of an outbox row about to be sent, or None (not one of ours)."""
        if customer_id is None or seq is None:
            return None
        part = self._pending.get(partition)
        if not part:
            return None
        ts = part.pop((segment_id, customer_id, seq), None)
        if ts is not None:
            self._count -= 1
        return ts

    def delivered(self, record_times: Sequence[float]) -> None:
        """Observe CloudEvents confirmed delivered (their causing records' times, s)."""
        if not record_times:
            return
        now = self._wall()
        observe = self._sent.observe
        for ts in record_times:
            observe(max(0.0, now - ts))

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is remembered for partitions this worker no longer owns."""
        for p in partitions:
            dropped = self._pending.pop(p, None)
            if dropped:
                self._count -= len(dropped)
