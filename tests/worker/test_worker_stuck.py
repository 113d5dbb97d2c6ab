"""``/healthz`` tells the truth: an owned partition with lag that makes no progress for longer than
``WorkerOptions.stuck_seconds`` fails it and shows in ``segment_worker_stuck_partitions``, while the
batch loop itself is alive; once the partition moves again, health comes back."""

from __future__ import annotations

import dataclasses

import pytest

from helpers.harness import FAST, WorkerHarness
from helpers.kafka_io import produce
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    create_workspace,
    encode,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg
from segment_worker.stores.unit import SW_LOCK_CLASS

pytestmark = pytest.mark.timeout(120)


async def test_a_partition_that_cannot_progress_fails_healthz(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str
) -> None:
    s = unique_settings
    options = dataclasses.replace(FAST, stuck_seconds=2.0, watch_seconds=0.25, redis_check_seconds=0)
    conn = await pg.connect(s.require_database_url())
    blocker = await pg.connect(s.require_database_url(), application_name="test blocker")
    try:
        ws = await create_workspace(conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS)
        h = WorkerHarness(s, options=options)
        async with h:
            await h.wait_for(lambda: len(h.worker.partitions.ready()) == 4, 30, "not positioned")
            # Hold every partition lock, as a frozen unit of a process that is not a worker would:
            # the batches wait for it (the partitions have lag and make no progress).
            await blocker.execute("SELECT sw_lock_partitions($1, $2::int[])", SW_LOCK_CLASS, [0, 1, 2, 3])
            ends = await produce(kafka_bootstrap, s.topic_events,
                                 [encode(ev) for ev in mixed_events(ws.id, 50, 200, seed=1)])
            await h.wait_for(lambda: not h.worker.liveness()[0], 15, "healthz never failed")
            _, detail = h.worker.liveness()
            assert "made no progress" in detail, detail
            assert h.metric("segment_worker_stuck_partitions") >= 1
            # The loop itself is not what failed: only the stuck partitions are reported.
            assert "batch loop stalled" not in detail
            await blocker.execute("SELECT pg_advisory_unlock_all()")
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id)
            await h.wait_for(lambda: h.worker.liveness()[0], 15, "healthz never recovered")
            assert h.metric("segment_worker_stuck_partitions") == 0
    finally:
        await blocker.close()
        await conn.close()
