"""The soak (``slow``: ``scripts/test-faults -m slow``): two workers take a steady stream for at
least 10 minutes; their memory (RSS) and open connections (PostgreSQL ``pg_stat_activity``,
Redis ``CLIENT LIST``) stay bounded and flat, and the result is exact at the end.

``SW_SOAK_SECONDS`` (default 600) and ``SW_SOAK_RATE`` (events/s, default 200) size it."""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
from pathlib import Path

import psutil
import pytest

from faults.feed import produce_paced
from faults.run import FaultRun, wait_owning
from faults.servers import OwnServers
from helpers.scenario import encode, mixed_events

log = logging.getLogger("faults")

SECONDS = float(os.environ.get("SW_SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SW_SOAK_RATE", "200"))
SAMPLE_EVERY_S = 10.0
WARM_UP_S = min(120.0, SECONDS / 5)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(SECONDS) + 600)]


def _flat(name: str, samples: list[float], tolerance: float, slack: float = 0.0) -> str | None:
    """None when the last third's median is within ``tolerance`` (+ ``slack``) of the first's."""
    third = max(1, len(samples) // 3)
    first, last = statistics.median(samples[:third]), statistics.median(samples[-third:])
    if last > first * (1 + tolerance) + slack:
        return f"{name} grew: first-third median {first:.0f}, last-third median {last:.0f} ({samples})"
    return None


async def test_soak_steady_rate_memory_and_connections_flat(
    own_servers: OwnServers, workspace_id: str, tmp_path: Path
) -> None:
    run = await FaultRun.open(await own_servers.settings("soak"), workspace_id, tmp_path)
    try:
        run.cluster.start(0)
        run.cluster.start(1)
        await wait_owning(run, [0, 1])
        procs = [psutil.Process(pid) for pid in run.cluster.pids()]
        samples: dict[str, list[float]] = {"rss0": [], "rss1": [], "pg": [], "redis": []}
        total = int(SECONDS * RATE)
        stop = asyncio.Event()

        async def sample() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            while not stop.is_set():
                await asyncio.sleep(SAMPLE_EVERY_S)
                if loop.time() - start < WARM_UP_S:
                    continue
                for i, p in enumerate(procs):
                    samples[f"rss{i}"].append(p.memory_info().rss / 2**20)
                samples["pg"].append(
                    await run.conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                samples["redis"].append(len(await run.redis.client_list()) - 1)  # not ours

        sampler = asyncio.create_task(sample())
        chunk = 10_000
        for n, i in enumerate(range(0, total, chunk)):
            events = mixed_events(run.ws.id, 5_000, min(chunk, total - i), seed=700 + n)
            run.produced += await produce_paced(
                run.settings.kafka_bootstrap,
                run.settings.topic_events,
                [encode(e) for e in events],
                rate=RATE,
            )
        stop.set()
        await sampler
        log.warning("soak: %d events at %.0f/s; samples after warm-up %s", total, RATE, samples)
        got = await run.finish(limit_s=300)
        assert got.events > 0 and len(samples["pg"]) >= 6
        problems = [
            _flat("worker 0 RSS (MB)", samples["rss0"], 0.20),
            _flat("worker 1 RSS (MB)", samples["rss1"], 0.20),
            _flat("PostgreSQL connections", samples["pg"], 0.20, slack=2),
            _flat("Redis clients", samples["redis"], 0.20, slack=2),
        ]
        # Bounded: a worker's pools are small (asyncpg pool + listener; one Redis pool).
        bounds = [
            f"{k} max {max(v):.0f} > 40" for k, v in samples.items() if k in ("pg", "redis") and max(v) > 40
        ]
        assert not [p for p in problems if p] and not bounds, [p for p in problems if p] + bounds
    finally:
        await run.close()
