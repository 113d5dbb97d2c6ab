"""Two ``segment-worker run`` processes in one group; one is killed with SIGKILL mid-stream and
restarted. The final state and the event stream still pass every check of the end-to-end test;
duplicates, if any, share their ``id``. Both stop cleanly on SIGTERM."""

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

pytestmark = pytest.mark.timeout(240)


async def owners(conn: object, procs: list[WorkerProcess]) -> set[int]:
    """Pids of our processes that own a partition of the input topic now."""
    pids = {p.proc.pid for p in procs if p.proc is not None and p.proc.poll() is None}
    rows = await conn.fetch("SELECT owner FROM partitions WHERE partition < 4")  # type: ignore[attr-defined]
    return {int(r["owner"].split(":")[1]) for r in rows if r["owner"]} & pids


async def test_a_worker_killed_mid_stream_loses_nothing(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 1})
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    port = free_port()
    procs = [
        WorkerProcess(
            s, tmp_path / f"worker{i}.log", extra_args=("--metrics-port", str(port)) if i == 1 else ()
        )
        for i in range(3)
    ]
    try:
        ws = await create_workspace(conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS)
        events = mixed_events(ws.id, 300, 6000, seed=11)
        chunks = [events[i : i + 500] for i in range(0, len(events), 500)]
        procs[0].start()
        procs[1].start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(await owners(conn, procs)) < 2:
            assert loop.time() < deadline, "two workers never shared the partitions:\n" + procs[0].log_text()
            await asyncio.sleep(0.2)
        ends: dict[int, int] = {}
        for i, chunk in enumerate(chunks):
            for p, e in (
                await produce(kafka_bootstrap, s.topic_events, [encode(ev) for ev in chunk])
            ).items():
                ends[p] = max(ends.get(p, 0), e)
            if i == 4:
                procs[0].kill()  # mid-stream, no clean-up at all
            if i == 7:
                procs[2].start()  # the replacement
            await asyncio.sleep(0.3)
        await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id, limit_s=90)
        output = await read_topic(kafka_bootstrap, s.topic_membership)
        result = await check_consistency(conn, redis, ws, output, SystemClock().now())
        assert result.events > 1000
        # The survivor took over the killed worker's partitions (two assignments at least).
        assert procs[1].log_text().count("partitions assigned") >= 2, procs[1].log_text()
        # Its metrics endpoint: lag gauges appear within a tick of the last assignment.
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                if 'segment_worker_consumer_lag{partition="' in metrics:
                    break
                await asyncio.sleep(0.2)
        assert 'segment_worker_consumer_lag{partition="' in metrics
        assert "segment_worker_events_processed_total" in metrics
        # Its probes (the k8s manifests point at them): a running worker is live and ready.
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200 and ready.json()["detail"].endswith("partitions owned")
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert health.json() == {"status": "ok", "detail": "ok"}
        assert procs[1].terminate() == 0, procs[1].log_text()
        assert procs[2].terminate() == 0, procs[2].log_text()
        for p in procs[1:]:
            assert "Traceback" not in p.log_text(), p.log_text()
    finally:
        for p in procs:
            p.ensure_dead()
        await conn.close()
        await redis.aclose()
