"""A worker process that dies at each commit boundary (``segment_worker.faultpoints``, armed only
here) and is restarted clean, as a container would be: the result is still exact, and events
re-sent after a crash between the Kafka send and its record are byte-identical copies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from faults.cluster import crash_at
from faults.run import FaultRun, scaled, wait_owning
from helpers.scenario import encode, mixed_events
from segment_worker.config import Settings

pytestmark = pytest.mark.timeout(300)

POINTS = ["before_pg_commit", "after_pg_commit", "after_redis", "after_kafka_send", "before_offsets_commit"]


@pytest.mark.parametrize("point", POINTS)
async def test_crash_at_each_commit_boundary(
    point: str, unique_settings: Settings, workspace_id: str, tmp_path: Path
) -> None:
    run = await FaultRun.open(unique_settings, workspace_id, tmp_path)
    try:
        total = scaled(4_000, 800)
        records = [encode(e) for e in mixed_events(run.ws.id, 400, total, seed=31)]
        # Slot 0 dies the 4th time it reaches the point (after start-up, under load); slot 1 is clean.
        run.cluster.start(0, crash_at(point, 4))
        run.cluster.start(1)
        await wait_owning(run, [0, 1])
        run.cluster.supervise()
        step = max(100, len(records) // 20)
        for i in range(0, len(records), step):
            await run.produce(records[i : i + step])
            await asyncio.sleep(0.3)
        got = await run.finish(limit_s=120)
        # The fault fired where asked (exit status 137 from the fault point, not something else).
        assert (0, 137) in run.cluster.unexpected_exits, (
            run.cluster.unexpected_exits,
            run.cluster.logs_tail(),
        )
        assert all(slot == 0 for slot, _ in run.cluster.unexpected_exits), run.cluster.unexpected_exits
        if point == "after_kafka_send":
            # Delivered but not recorded as sent: the new owner sends them again, identical.
            assert got.duplicates > 0
    finally:
        await run.close()
