"""Short cyclic-GC pauses for a long-running worker process.

The record cache keeps hundreds of thousands of long-lived objects, and every collection of an
older generation walks them all: in a bench run at 2,000 events/s the worker paused 746 ms for a
full collection and 150–180 ms for second-generation ones — each a latency spike for every lane of
the process, since they share one event loop. ``gc.freeze()`` moves everything alive into a
permanent generation that collections skip, so, frozen every second, collections only walk what
was allocated since. Cyclic garbage that was frozen is not lost: every ``thaw_seconds`` everything
is handed back (``gc.unfreeze()``) and one full collection runs — one long pause per period instead
of several a minute. (Almost all of the worker's garbage is freed by reference counting; the
collections above found a few hundred cyclic objects.)
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class GcPacer:
    """Decides when to freeze and when to thaw; ``step`` does it."""

    freeze_seconds: float = 1.0
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
