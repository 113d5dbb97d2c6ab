"""Stopping a worker never hangs on the consumer group. Seen on Tansu: after a rebalance a
group kept rejoining and never synced, and ``segment-worker run`` never exited after SIGTERM —
aiokafka's ``getmany`` waits, past its timeout, for the reassignment to end, and its ``stop``
waits for the coordination task that keeps rejoining."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from helpers.harness import FAST, WorkerHarness
from segment_worker.config import Settings
from segment_worker.worker.loop import Worker, WorkerOptions


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


async def test_stop_ends_the_batch_loop_while_a_rebalance_never_ends(unique_settings: Settings) -> None:
    harness = await WorkerHarness(unique_settings, options=replace(FAST, leave_timeout_seconds=1)).start()
    worker = harness.worker
    # aiokafka's own "rejoin in progress" flag, left set: the state of a group that never syncs
    # (the coordinator sees an assignment and does not rejoin, so it stays set).
    worker._consumer._subscription.begin_reassignment()
    try:
        await asyncio.sleep(0.5)  # a getmany already past that check ends at its poll timeout
        batches, loops = worker.batches, worker._loop_at
        await asyncio.sleep(1.0)
        assert worker._loop_at == loops, "the batch loop still comes round: the state was not reproduced"
        t0 = time.monotonic()
        await harness.stop()
        assert time.monotonic() - t0 < 5
        assert worker.batches == batches
        assert worker._consumer is None
    finally:
        await harness.stop()
