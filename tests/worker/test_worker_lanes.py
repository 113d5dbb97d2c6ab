"""One ``segment-worker run --lanes 3`` process: three consumers of the group on one event loop,
each claiming its own partitions. The result passes every check of the end-to-end test, the
process's probes and gauges count all lanes, and SIGTERM stops every lane cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerProcess
from helpers.kafka_io import produce, read_topic
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    check_consistency,
    create_workspace,
    encode,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.embedded import free_port
from segment_worker.stores import postgres as pg
from segment_worker.worker.clock import SystemClock

pytestmark = pytest.mark.timeout(180)


async def test_lanes_of_one_process_split_the_partitions_and_lose_nothing(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 1, "input_partitions": 6})
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    port = free_port()
    proc = WorkerProcess(s, tmp_path / "worker.log", extra_args=("--lanes", "3", "--metrics-port", str(port)))
    try:
        ws = await create_workspace(conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS)
        proc.start()
        assert proc.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        pid = str(proc.proc.pid)
        while True:  # the database is shared with other tests: count only this process's owners
            rows = await conn.fetch("SELECT partition, owner FROM partitions WHERE partition < 6")
            mine = {r["partition"]: o for r in rows if (o := r["owner"]) and o.split(":")[1] == pid}
            if len(mine) == 6 and len(set(mine.values())) == 3:
                break
            assert loop.time() < deadline, f"three lanes never split 6 partitions: {rows}\n{proc.log_text()}"
            await asyncio.sleep(0.2)

        events = mixed_events(ws.id, 200, 3000, seed=5)
        ends = await produce(kafka_bootstrap, s.topic_events, [encode(ev) for ev in events])
        await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id, limit_s=90)
        output = await read_topic(kafka_bootstrap, s.topic_membership)
        result = await check_consistency(conn, redis, ws, output, SystemClock().now())
        assert result.events > 500

        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            ready = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
            health = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
        # The process's gauge and probe count every lane's partitions, not the last lane's.
        assert "segment_worker_owned_partitions 6.0" in metrics, metrics
        assert ready == {"status": "ok", "detail": "6 partitions owned"}
        assert health == {"status": "ok", "detail": "ok"}

        assert proc.terminate() == 0, proc.log_text()
        assert "Traceback" not in proc.log_text(), proc.log_text()
    finally:
        proc.ensure_dead()
        await conn.close()
        await redis.aclose()


class _Lane:
    """Stands in for a ``Worker`` in ``run_lanes`` (only ``run(stop)`` is called)."""

    def __init__(self, fail_after: float | None) -> None:
        self.fail_after = fail_after
        self.stopped = False

    async def run(self, stop: asyncio.Event) -> None:
        if self.fail_after is not None:
            await asyncio.sleep(self.fail_after)
            raise RuntimeError("lane broke")
        await stop.wait()
        self.stopped = True


async def test_a_failing_lane_stops_the_others_and_its_error_ends_the_process() -> None:
    from typing import Any, cast

    from segment_worker.worker.lanes import run_lanes

    healthy, broken = _Lane(None), _Lane(0.05)
    stop = asyncio.Event()
    with pytest.raises(RuntimeError, match="lane broke"):
        await asyncio.wait_for(run_lanes(cast(Any, [healthy, broken]), stop), 5)
    assert stop.is_set() and healthy.stopped
