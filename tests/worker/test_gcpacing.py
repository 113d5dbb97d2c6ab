"""``GcPacer``: frozen objects are skipped by collections until the periodic thaw, which finds the
cyclic garbage frozen meanwhile."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from segment_worker.worker.gcpacing import GcPacer, configure_collector


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_frozen_cycles_survive_collections_until_the_thaw_collects_them() -> None:
    now = [0.0]
    pacer = GcPacer(freeze_seconds=1.0, thaw_seconds=60.0, clock=lambda: now[0])
    node = _Node()
    ref = weakref.ref(node)
    pacer.step()  # frozen while still alive
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert ref() is not None, "a frozen object was collected: the collections still walk it"
    now[0] = 61.0
    pacer.step()  # the thaw: everything back, one full collection
    assert ref() is None
    assert gc.get_freeze_count() == 0 and (pacer.freezes, pacer.thaws) == (1, 1)


async def test_run_freezes_periodically_and_thaws_when_stopped() -> None:
    pacer = GcPacer(freeze_seconds=0.01, thaw_seconds=3600.0)
    stop = asyncio.Event()
    task = asyncio.create_task(pacer.run(stop))
    await asyncio.sleep(0.1)
    assert pacer.freezes >= 2 and gc.get_freeze_count() > 0
    stop.set()
    await asyncio.wait_for(task, 1)
    assert gc.get_freeze_count() == 0


# Tracked objects a worker allocated per second at full load: 72 young collections of 50,000 in a
# ~16 s bench run at 100k customers, ~6,500 events/s (gcpacing's docstring).
_MEASURED_ALLOCATIONS_PER_SECOND = 240_000


def test_a_pacer_period_of_record_loading_is_frozen_before_any_collection_walks_it() -> None:
    """The worker's thresholds (``configure_collector``) and the pacer's default period together:
    the young objects one period brings at twice the allocation rate measured are not collected —
    each collection would walk them all, and nearly all of them live on in the record cache."""
    assert gc.isenabled(), "with the collector off this test could not fail"
    period = round(2 * _MEASURED_ALLOCATIONS_PER_SECOND * GcPacer().freeze_seconds)
    before = gc.get_threshold()
    starts: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            starts.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        configure_collector()
        GcPacer().step()  # a period starts: everything alive frozen, the young count at zero
        loaded = [[i] for i in range(period)]  # lists: tracked by the collector, as records are
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*before)
    assert len(loaded) == period
    assert starts == [], f"collections of generations {starts} walked the objects of one period"
