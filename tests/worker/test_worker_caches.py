"""The worker's caches follow other writers: an API-like commit is sent at once (LISTEN
``sw_outbox``) and its ``generation`` bump drops cached records; a ``catalog_version`` bump reloads
the rules. A zombie whose epoch is stale writes nothing and rejoins."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.partitioning import customer_partition
from segment_worker.state import Transition
from segment_worker.stores import postgres as pg
from segment_worker.stores.unit import partition_unit
from segment_worker.text import fold

pytestmark = pytest.mark.timeout(120)


async def history(conn: object, ws: str) -> list[tuple[str, str, int, str, str]]:
    rows = await conn.fetch(  # type: ignore[attr-defined]
        "SELECT customer_id, segment_name, seq, kind, cause->>'kind' FROM transitions WHERE workspace_id = $1"
        " ORDER BY id",
        ws,
    )
    return [tuple(r) for r in rows]


async def test_other_writers_are_sent_at_once_and_invalidate_caches(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 60})  # no polling can explain a prompt send
    ws = workspace_id
    conn = await pg.connect(s.require_database_url())
    pool = await pg.create_pool(s.require_database_url(), max_size=2)
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        static = uuid.uuid4()
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO segments (id, workspace_id, name, name_folded, type, created_at, updated_at)"
            " VALUES ($1, $2, 'Hand picked', $3, 'static', $4, $4)",
            static,
            ws,
            fold("Hand picked"),
            now,
        )
        async with WorkerHarness(s) as h:
            ends = await produce(
                kafka_bootstrap,
                s.topic_events,
                [encode(event(ws, "c1", "customer.tags_added", {"tags": ["vip"]}, T0))],
            )
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            # An API call adds c1 to the static segment: its own unit, generation bump, NOTIFY.
            p = customer_partition(ws, "c1", s.input_partitions)
            async with partition_unit(pool, redis, [p], bump_generation=True) as u:
                await u.write_transitions(
                    [Transition(ws, static, "Hand picked", "c1", p, 1, "entered", {"kind": "manual"}, now)],
                )
            loop = asyncio.get_running_loop()
            started = loop.time()
            while await conn.fetchval(
                "SELECT count(*) FROM transitions t LEFT JOIN outbox_cursors c ON c.partition = t.partition"
                " WHERE t.workspace_id = $1 AND t.id > COALESCE(c.sent_id, 0)",
                ws,
            ):
                assert loop.time() - started < 5, "the API's transition was not sent promptly"
                await asyncio.sleep(0.05)
            # The worker's cached record of c1 predates the API's write: deleting c1 must see it.
            # And a rule change (catalog_version bump) is picked up for the next events.
            await conn.execute(
                "UPDATE segments SET rules = $2::text::jsonb WHERE id = $1",
                w.segments["VIP"],
                orjson.dumps({"field": "tags", "op": "has", "value": "gold"}).decode(),
            )
            await conn.execute(
                "UPDATE workspaces SET catalog_version = catalog_version + 1 WHERE id = $1", ws
            )
            ends = await produce(
                kafka_bootstrap,
                s.topic_events,
                [
                    encode(event(ws, "c1", "customer.deleted", {}, T0.replace(hour=10))),
                    encode(event(ws, "c2", "customer.tags_added", {"tags": ["vip"]}, T0)),
                    encode(event(ws, "c3", "customer.tags_added", {"tags": ["gold"]}, T0)),
                ],
            )
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            assert h.metric("segment_worker_errors_total", {"stage": "batch"}) == 0
        got = await history(conn, ws)
        output = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, s.topic_membership)]
    finally:
        await conn.close()
        await pool.close()
        await redis.aclose()
    assert got[:2] == [("c1", "VIP", 1, "entered", "event"), ("c1", "Hand picked", 1, "entered", "manual")]
    # Both exits of the deleted c1 (the static one needs the API's write, so a fresh record); c2's
    # "vip" no longer matches the edited rule, c3's "gold" does. (Partitions: any batch order.)
    assert sorted(got[2:]) == [
        ("c1", "Hand picked", 2, "exited", "customer_deleted"),
        ("c1", "VIP", 2, "exited", "customer_deleted"),
        ("c3", "VIP", 1, "entered", "event"),
    ], got
    mine = [
        (e["subject"], e["data"]["segment_name"], e["data"]["seq"])
        for e in output
        if e["data"]["workspace_id"] == ws
    ]
    assert sorted(mine) == sorted((c, n, q) for c, n, q, _, _ in got)


async def test_a_fenced_worker_writes_nothing_and_rejoins(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str
) -> None:
    s, ws = unique_settings, workspace_id
    conn = await pg.connect(s.require_database_url())
    try:
        await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        async with WorkerHarness(s) as h:
            ends = await produce(
                kafka_bootstrap,
                s.topic_events,
                [encode(event(ws, "c1", "customer.tags_added", {"tags": ["vip"]}, T0))],
            )
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            # Another process claims every partition (as a new owner would): this worker is a zombie now.
            await pg.claim_partitions(conn, list(range(s.input_partitions)), "intruder")
            ends = await produce(
                kafka_bootstrap,
                s.topic_events,
                [encode(event(ws, f"z{i}", "customer.tags_added", {"tags": ["vip"]}, T0)) for i in range(10)],
            )
            await h.wait_for(lambda: h.metric("segment_worker_fenced_total") >= 1, 20, "never fenced")
            # It rejoins, claims again, and then does the work (once).
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws, limit_s=60)
            owners = {
                r[0]
                for r in await conn.fetch(
                    "SELECT owner FROM partitions WHERE partition = ANY($1::int[])",
                    list(range(s.input_partitions)),
                )
            }
            assert owners == {h.worker.owner}
        got = await history(conn, ws)
    finally:
        await conn.close()
    assert sorted(got) == sorted(
        [("c1", "VIP", 1, "entered", "event")] + [(f"z{i}", "VIP", 1, "entered", "event") for i in range(10)]
    )
