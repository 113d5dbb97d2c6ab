"""A Redis that lost data is noticed and rebuilt from PostgreSQL by the running worker within 60 s,
with no operator (CONTRACT §6): FLUSHALL; kill -9 and a restart, empty, on the same port; a
segment key overwritten with a string (reported, deleted, rebuilt). A redis-server of this test's
own is broken, never the session's."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from helpers.harness import FAST, WorkerHarness
from helpers.kafka_io import produce
from helpers.own_servers import OwnRedis
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    Workspace,
    create_workspace,
    encode,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import marker_key, optout_key, segment_key
from segment_worker.stores.reconcile import rebuild_and_diff

pytestmark = pytest.mark.timeout(300)

BOUND_S = 60.0  # CONTRACT §6


async def wait_redis_equals_postgres(pool: asyncpg.Pool, redis: Redis, ws: Workspace, what: str) -> float:
    """Seconds until every set of ``ws`` equals PostgreSQL again (checked without repairing)."""
    t0 = time.monotonic()
    while True:
        report = await rebuild_and_diff(pool, redis, ws.id, repair=False)
        if not report.has_drift and await redis.get(marker_key(ws.id)) == b"ok":
            took = time.monotonic() - t0
            print(f"{what}: Redis rebuilt in {took:.1f} s")
            return took
        assert time.monotonic() - t0 < BOUND_S, f"{what}: still drifting after {BOUND_S} s: {report.lines()}"
        await asyncio.sleep(0.5)


async def test_a_redis_that_lost_data_is_rebuilt_by_the_running_worker(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    own = OwnRedis(tmp_path)
    await own.start()
    s = unique_settings.model_copy(update={"redis_url": own.url})
    pool = await pg.create_pool(s.require_database_url(), max_size=2)
    redis = Redis.from_url(own.url)
    try:
        async with pool.acquire() as conn:
            ws = await create_workspace(
                conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS
            )
        events = mixed_events(ws.id, 300, 3000, seed=3)
        ends = await produce(kafka_bootstrap, s.topic_events, [encode(ev) for ev in events])
        # The default check period (10 s): the times printed are what production gets.
        h = WorkerHarness(s, options=dataclasses.replace(FAST, redis_check_seconds=10.0))
        async with h:
            async with pool.acquire() as conn:
                await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id)
            await wait_redis_equals_postgres(pool, redis, ws, "first start")
            seg_keys = [segment_key(ws.id, sid) for sid in ws.segments.values()]
            sizes = [await redis.scard(k) for k in seg_keys]
            assert sum(sizes) > 100 and await redis.scard(optout_key(ws.id)) > 0, sizes

            await redis.flushall()
            took = await wait_redis_equals_postgres(pool, redis, ws, "FLUSHALL")
            assert took < BOUND_S
            rebuilds = h.metric("segment_worker_redis_rebuilds_total")
            assert rebuilds >= 1  # this one (the first start found nothing lost: not counted)

            # A key of the test's own shows the restart lost everything: the running worker may
            # write to the new server before the test reads it (a CI run saw 12 keys there).
            await redis.set("test:sentinel", "before the kill")
            own.kill()  # kill -9, no persistence: it comes back empty on the same port
            await own.start()
            await redis.connection_pool.disconnect()
            assert await redis.exists("test:sentinel") == 0
            took = await wait_redis_equals_postgres(pool, redis, ws, "kill -9 and restart empty")
            assert took < BOUND_S
            await h.wait_for(lambda: h.metric("segment_worker_redis_rebuilds_total") > rebuilds, 10,
                             "the rebuild was not counted")

            # Something outside the project overwrites a segment set with a string; the next
            # write to it reports it, deletes it, and the workspace is rebuilt.
            wrong = seg_keys[0]
            await redis.set(wrong, "not a set")
            more = mixed_events(ws.id, 300, 1500, seed=4)
            ends = await produce(kafka_bootstrap, s.topic_events, [encode(ev) for ev in more])
            async with pool.acquire() as conn:
                await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id)
            took = await wait_redis_equals_postgres(pool, redis, ws, "a wrong-type key")
            assert await redis.type(wrong) == b"set"
            assert h.metric("segment_worker_errors_total", {"stage": "redis_wrongtype"}) >= 1
            ok, detail = h.worker.liveness()
            assert ok, detail
    finally:
        await redis.aclose()
        await pool.close()
        own.stop()
