"""``worker.latency.EndToEnd`` on its own: which transitions are timed, what is forgotten, the cap."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from helpers.stores import transition
from segment_worker.worker.latency import EndToEnd
from segment_worker.worker.metrics import WorkerMetrics


@dataclass
class _Event:
    event_id: str


@dataclass
class _Record:
    timestamp: int  # ms


def _tracker(now: float, cap: int = 100) -> tuple[EndToEnd, CollectorRegistry]:
    registry = CollectorRegistry()
    return EndToEnd(WorkerMetrics(registry), max_pending=cap, wall=lambda: now), registry


def _sent(registry: CollectorRegistry) -> tuple[float, float]:
    labels = {"stage": "sent"}
    count = registry.get_sample_value("segment_worker_end_to_end_seconds_count", labels) or 0.0
    return count, registry.get_sample_value("segment_worker_end_to_end_seconds_sum", labels) or 0.0


def test_a_transition_is_timed_from_the_record_of_the_event_that_caused_it() -> None:
    tracker, registry = _tracker(now=1_000.0)
    seg = uuid.uuid4()
    # helpers.stores.transition(seq=n) is caused by event "e-<n>".
    t1, t2 = transition("ws", seg, "a", 3, 1, "entered"), transition("ws", seg, "b", 3, 2, "entered")
    tracker.caused([t1, t2], [_Event("e-1"), _Event("e-2")], [_Record(990_000), _Record(995_500)])
    assert tracker.pending == 2
    assert tracker.take(3, seg, "a", 2) is None  # another seq: not one of ours
    born = [tracker.take(3, seg, "a", 1), tracker.take(3, seg, "b", 2)]
    assert born == [990.0, 995.5] and tracker.pending == 0
    tracker.delivered([b for b in born if b is not None])
    assert _sent(registry) == (2.0, 10.0 + 4.5)
    tracker.committed([990_000, -1, 0])  # no timestamp (-1, 0): not observed
    committed = registry.get_sample_value("segment_worker_end_to_end_seconds_count", {"stage": "committed"})
    assert committed == 1.0


def test_revoked_partitions_are_forgotten_and_the_map_is_capped() -> None:
    tracker, _ = _tracker(now=0.0, cap=3)
    seg = uuid.uuid4()
    ts = [transition("ws", seg, f"c{i}", i % 2, i + 1, "entered") for i in range(5)]
    tracker.caused(ts, [_Event(f"e-{i + 1}") for i in range(5)], [_Record(1)] * 5)
    assert tracker.pending == 3  # capped: the last two are not timed
    tracker.forget([0])  # c0 and c2 were in partition 0
    assert tracker.pending == 1
    assert tracker.take(1, seg, "c1", 2) == 0.001 and tracker.pending == 0


def test_the_exits_of_a_deletion_are_timed_too() -> None:
    tracker, _ = _tracker(now=10.0)
    seg = uuid.uuid4()
    gone = transition("ws", seg, "a", 0, 2, "exited")
    gone = replace(gone, cause={"kind": "customer_deleted", "event_id": "e-9"})
    ticked = replace(gone, customer_id="b", cause={"kind": "time"})
    tracker.caused([gone, ticked], [_Event("e-9")], [_Record(4_000)])
    assert tracker.pending == 1 and tracker.take(0, seg, "a", 2) == 4.0
