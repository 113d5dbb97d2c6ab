"""The worker end to end on real Kafka, PostgreSQL and Redis: a few thousand mixed events, then
Redis == PostgreSQL == the Python evaluator and a well-formed enter/exit stream; a replay from
offset 0 under a new consumer group changes nothing and emits nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    Workspace,
    check_consistency,
    create_workspace,
    encode,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.events import DLQ_REASONS
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.worker.clock import SystemClock

pytestmark = pytest.mark.timeout(180)

EVENTS = 4000
CUSTOMERS = 400


@dataclass
class Run:
    settings: Settings
    ws: Workspace
    output: list[Any]
    rate: float
    harness: WorkerHarness
    ends: dict[int, int]


@pytest.fixture(scope="module")
async def run(kafka_bootstrap: str, pg_dsn: str, redis_url: str) -> AsyncIterator[Run]:
    import uuid

    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=pg_dsn,
        redis_url=redis_url,
        topic_events=f"e2e-in-{tag}",
        topic_membership=f"e2e-out-{tag}",
        topic_dlq=f"e2e-dlq-{tag}",
        consumer_group=f"e2e-{tag}",
        input_partitions=4,
        tick_seconds=1,
    )
    conn = await pg.connect(pg_dsn)
    try:
        ws = await create_workspace(
            conn, f"ws-e2e-{tag}", attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS
        )
        harness = await WorkerHarness(settings).start()
        events = mixed_events(ws.id, CUSTOMERS, EVENTS)
        t0 = time.perf_counter()
        ends = await produce(kafka_bootstrap, settings.topic_events, [encode(e) for e in events])
        await wait_caught_up(conn, settings.consumer_group, settings.topic_events, ends, workspace_id=ws.id)
        rate = EVENTS / (time.perf_counter() - t0)
        output = await read_topic(kafka_bootstrap, settings.topic_membership)
        yield Run(settings, ws, output, rate, harness, ends)
        await harness.stop()
    finally:
        await conn.close()


async def test_redis_postgres_and_the_evaluator_agree_and_events_alternate(
    run: Run, pg_dsn: str, redis_url: str
) -> None:
    conn = await pg.connect(pg_dsn)
    redis = Redis.from_url(redis_url)
    try:
        result = await check_consistency(conn, redis, run.ws, run.output, SystemClock().now())
    finally:
        await conn.close()
        await redis.aclose()
    assert sum(len(m) for m in result.members.values()) > 100  # the workload really fills segments
    assert result.events > 500
    h = run.harness
    assert h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) == EVENTS
    assert sum(h.metric("segment_worker_dlq_records_total", {"reason": r}) for r in DLQ_REASONS) == 0
    assert h.metric("segment_worker_transitions_total", {"kind": "entered", "cause": "event"}) > 0
    print(
        f"\nworker e2e: {EVENTS} events in {EVENTS / run.rate:.2f} s = {run.rate:.0f} events/s "
        f"(produce + process + outbox), {result.events} CloudEvents"
    )


async def snapshot(conn: Any, redis: Redis, ws: Workspace) -> dict[str, Any]:
    """Everything a replay must leave alone (customers' rows but their ``updated_at``)."""
    return {
        "customers": sorted(
            orjson.dumps(r[0])
            for r in await conn.fetch(
                "SELECT to_jsonb(c) - 'updated_at' FROM customers c WHERE workspace_id = $1", ws.id
            )
        ),
        "memberships": sorted(
            tuple(r)
            for r in await conn.fetch(
                "SELECT segment_id, customer_id, is_member, seq, joined_at FROM memberships"
                " WHERE workspace_id = $1",
                ws.id,
            )
        ),
        "transitions": await conn.fetchval("SELECT count(*) FROM transitions WHERE workspace_id = $1", ws.id),
        "redis": {sid: sorted(await redis.smembers(segment_key(ws.id, sid))) for sid in ws.segments.values()},
        "optout": sorted(await redis.smembers(optout_key(ws.id))),
    }


async def test_a_replay_from_offset_zero_under_a_new_group_changes_nothing(
    run: Run, pg_dsn: str, redis_url: str, kafka_bootstrap: str
) -> None:
    await run.harness.stop()  # one writer per partition: the first group's worker leaves
    conn = await pg.connect(pg_dsn)
    redis = Redis.from_url(redis_url)
    try:
        before = await snapshot(conn, redis, run.ws)
        replay = run.settings.model_copy(update={"consumer_group": run.settings.consumer_group + "-replay"})
        async with WorkerHarness(replay) as h:
            await wait_caught_up(
                conn, replay.consumer_group, replay.topic_events, run.ends, workspace_id=run.ws.id
            )
            assert h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) == EVENTS
            assert h.metric("segment_worker_transitions_total", {"kind": "entered", "cause": "event"}) == 0
            assert h.metric("segment_worker_transitions_total", {"kind": "exited", "cause": "event"}) == 0
        after = await snapshot(conn, redis, run.ws)
        output = await read_topic(kafka_bootstrap, run.settings.topic_membership)
    finally:
        await conn.close()
        await redis.aclose()
    b = {orjson.loads(x)["customer_id"]: orjson.loads(x) for x in before["customers"]}
    a = {orjson.loads(x)["customer_id"]: orjson.loads(x) for x in after["customers"]}
    diffs = {
        c: {k: (b[c].get(k), a[c].get(k)) for k in a[c] if a[c].get(k) != b[c].get(k)}
        for c in a
        if a[c] != b.get(c)
    }
    assert {k: v for k, v in after.items() if k != "customers"} == {
        k: v for k, v in before.items() if k != "customers"
    }
    assert not diffs, list(diffs.items())[:3]
    assert len(output) == len(run.output)
