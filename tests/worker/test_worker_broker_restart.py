"""A broker restart that loses the log (the embedded Tansu keeps it in memory only): the running
worker recreates the topics, voids the positions stored for the old log, and applies every record
produced after the restart — also when the new log grows past the old stored positions before
the worker reads it (CONTRACT §10: continue from the log start). A Tansu of this test's own."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from helpers.harness import FAST, WorkerHarness
from helpers.kafka_io import produce
from helpers.own_servers import OwnTansu
from helpers.scenario import T0, create_workspace, encode, event
from segment_worker.config import Settings
from segment_worker.errors import NotFound
from segment_worker.kafka import topic_partition_count
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.stores.redis import read_set

pytestmark = pytest.mark.timeout(240)

SEGMENTS = {
    "A": {"field": "tags", "op": "has", "value": "a"},
    "B": {"field": "tags", "op": "has", "value": "b"},
}


def tag_events(ws: str, tag: str, customers: range, at_s: int) -> list[tuple[bytes, bytes]]:
    return [
        encode(event(ws, f"c{i}", "customer.tags_added", {"tags": [tag]}, T0 + timedelta(seconds=at_s)))
        for i in customers
    ]


async def members(conn: asyncpg.Connection, ws: str, segment: object) -> set[str]:
    rows = await conn.fetch(
        "SELECT customer_id FROM segment_memberships WHERE workspace_id = $1 AND segment_id = $2", ws, segment
    )
    return {r[0] for r in rows}


async def test_records_produced_after_a_broker_restart_are_all_applied(
    unique_settings: Settings, workspace_id: str, redis_url: str, tmp_path: Path
) -> None:
    broker = OwnTansu(tmp_path)
    await broker.start()
    s = unique_settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    options = dataclasses.replace(FAST, topics_check_seconds=1.0, redis_check_seconds=0)
    try:
        ws = await create_workspace(conn, workspace_id, segments=SEGMENTS)
        a, b = ws.segments["A"], ws.segments["B"]
        async with WorkerHarness(s, options=options) as h:
            await produce(broker.bootstrap, s.topic_events, tag_events(ws.id, "a", range(200), 1))
            await h.wait_for(lambda: h.metric("segment_worker_events_processed_total",
                                              {"outcome": "applied"}) >= 200, 60, "first records not applied")

            broker.kill()  # in-memory log: it comes back with no topics and no records
            await broker.start()
            restarted = time.monotonic()
            loop = asyncio.get_running_loop()
            while True:  # the running worker recreates the topics
                try:
                    await topic_partition_count(s, s.topic_events)
                    break
                except NotFound:
                    assert loop.time() - restarted < 30, "topics never recreated"
                    await asyncio.sleep(0.2)
            # Three times as many records per partition as before: the new log passes the old
            # stored positions (~50 per partition) at once.
            await produce(broker.bootstrap, s.topic_events, tag_events(ws.id, "b", range(600), 2))
            want_b = {f"c{i}" for i in range(600)}
            while await members(conn, ws.id, b) != want_b:
                got = len(await members(conn, ws.id, b))
                assert time.monotonic() - restarted < 90, f"{got} of 600 records after the restart applied"
                await asyncio.sleep(0.5)
            print(f"broker restart: every new record applied {time.monotonic() - restarted:.1f} s after it")
            assert await members(conn, ws.id, a) == {f"c{i}" for i in range(200)}
            for _ in range(50):  # Redis follows the commit
                if await read_set(redis, segment_key(ws.id, b)) == want_b:
                    break
                await asyncio.sleep(0.2)
            assert await read_set(redis, segment_key(ws.id, b)) == want_b
            assert h.worker.liveness()[0]
    finally:
        await conn.close()
        await redis.aclose()
        broker.stop()
