"""Short cyclic-GC pauses for a long-running worker process.

The record cache keeps hundreds of thousands of long-lived objects, and every collection of an
older generation walks them all: in a bench run at 2,000 events/s the worker paused 746 ms for a
full collection and 150–180 ms for second-generation ones — each a latency spike for every lane of
the process, since they share one event loop. ``gc.freeze()`` moves everything alive into a
permanent generation that collections skip, so, frozen every quarter second, collections only
walk what was allocated since. Cyclic garbage that was frozen is not lost: every ``thaw_seconds``
everything is handed back (``gc.unfreeze()``) and one full collection runs — one long pause per
period instead of several a minute. (Almost all of the worker's garbage is freed by reference
counting; the collections above found a few hundred cyclic objects.)

Between two freezes the young generation must not be collected either: what it holds is mostly
records just loaded into the cache, which live on, and a collection walks each of them and what
they refer to. With a threshold of 50,000 allocations and a freeze every second, a bench run at
100k customers (one worker, 100,000 churn events, ~6,500 events/s) ran 72 young collections of
~14 ms each — 1.02 s of CPU, ~9% of the worker's, freeing 82 objects in all — and the jsonb
decoding of loaded records, where most of them struck, took 0.96 s instead of 0.53 s. Frozen every
0.25 s with a threshold of 200,000 (``configure_collector``), the same run collected 20 times for
0.03 s in all, and the worker's CPU per event fell by ~11% (docs/PERFORMANCE.md, "Issue 17").
A burst of more than 200,000 allocations within a quarter of a second (several times the loading
rate measured) still meets a collection before it is frozen.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Allocations of tracked objects between collections of the youngest generation (module docstring).
YOUNG_THRESHOLD = 200_000


def configure_collector() -> None:
    """Set the collector's thresholds for a worker process (``lanes.run_until_signalled``, once,
    before the pacer runs); the older generations are collected every 20 and 10 younger ones."""
    gc.set_threshold(YOUNG_THRESHOLD, 20, 10)


@dataclass(slots=True)
class GcPacer:
    """Decides when to freeze and when to thaw; ``step`` does it."""

    freeze_seconds: float = 0.25
    thaw_seconds: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _thawed_at: float = field(init=False, default=0.0)
    freezes: int = field(init=False, default=0)
    thaws: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._thawed_at = self.clock()

    def step(self) -> None:
        """Freeze what is alive now, or, once per ``thaw_seconds``, thaw and collect everything."""
        now = self.clock()
        if now - self._thawed_at >= self.thaw_seconds:
            gc.unfreeze()
            gc.collect()
            self._thawed_at = self.clock()
            self.thaws += 1
        else:
            gc.freeze()
            self.freezes += 1

    async def run(self, stop: asyncio.Event) -> None:
        """``step`` every ``freeze_seconds`` until ``stop``; on the way out everything is thawed."""
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.freeze_seconds)
                except TimeoutError:
                    self.step()
        finally:
            gc.unfreeze()
