"""Closing a worker never hangs on leaving the consumer group: aiokafka's ``stop`` waits for its
coordination task, which a broker can keep rejoining (seen on Tansu: a lane that never exited
after SIGTERM, so ``segment-worker run`` hung)."""

from __future__ import annotations

import asyncio
import time

from segment_worker.config import Settings
from segment_worker.worker import Worker, WorkerOptions


class _NeverLeaves:
    """A consumer whose ``stop`` waits forever, like a coordinator stuck rejoining."""

    def __init__(self) -> None:
        self.cancelled = False

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_close_gives_up_leaving_the_group_after_the_timeout() -> None:
    worker = Worker(Settings(), options=WorkerOptions(leave_timeout_seconds=0.2))
    consumer = _NeverLeaves()
    worker._consumer = consumer
    t0 = time.monotonic()
    await asyncio.wait_for(worker.close(), 5)
    assert time.monotonic() - t0 < 2
    assert consumer.cancelled  # the stuck coordination is cancelled, not left running
    assert worker._consumer is None
