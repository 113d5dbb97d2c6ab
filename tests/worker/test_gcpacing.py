"""``GcPacer``: frozen objects are skipped by collections until the periodic thaw, which finds the
cyclic garbage frozen meanwhile."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from segment_worker.worker.gcpacing import GcPacer


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
