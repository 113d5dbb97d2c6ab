"""Where a worker starts reading: the positions stored in PostgreSQL (even when the broker
under-reports its log end, as Tansu does), or the log start when a stored position lies past
the log end (a broker that lost its data) — with a warning."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.kafka import ensure_topics
from segment_worker.stores import postgres as pg
from segment_worker.worker.positions import log_reaches

pytestmark = pytest.mark.timeout(120)


def tags(ws: str, cid: str) -> tuple[bytes, bytes]:
    return encode(event(ws, cid, "customer.tags_added", {"tags": ["vip"]}, T0))


async def test_a_restarted_worker_resumes_from_the_stored_positions(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str
) -> None:
    s, ws = unique_settings, workspace_id
    conn = await pg.connect(s.require_database_url())
    try:
        await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        async with WorkerHarness(s):
            # One producer batch per partition: Tansu then reports a log end short of the real one.
            ends = await produce(kafka_bootstrap, s.topic_events, [tags(ws, f"c{i}") for i in range(60)])
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
        # The next worker takes over the stored positions (under another group name: joins faster).
        later = s.model_copy(update={"consumer_group": s.consumer_group + "-later"})
        await conn.execute(
            "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)"
            " SELECT $1, topic, partition, next_offset FROM consumer_offsets WHERE group_id = $2",
            later.consumer_group,
            s.consumer_group,
        )
        async with WorkerHarness(later) as h:
            ends = await produce(kafka_bootstrap, s.topic_events, [tags(ws, "new")])
            await wait_caught_up(conn, later.consumer_group, s.topic_events, ends, workspace_id=ws)
            assert h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) == 1
    finally:
        await conn.close()


async def test_a_position_past_the_log_end_restarts_from_the_log_start(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    s, ws = unique_settings, workspace_id
    conn = await pg.connect(s.require_database_url())
    try:
        await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        await ensure_topics(s)
        ends = await produce(kafka_bootstrap, s.topic_events, [tags(ws, f"c{i}") for i in range(20)])
        await pg.save_offsets(conn, s.consumer_group, s.topic_events, dict.fromkeys(range(4), 10_000))
        caplog.set_level(logging.WARNING, logger="segment_worker.worker.loop")
        async with WorkerHarness(s) as h:
            await h.wait_for(
                lambda: h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) >= 20,
                30,
                "the events before the stale positions were not read",
            )
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            assert h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) == 20
        members = await conn.fetchval("SELECT count(*) FROM segment_memberships WHERE workspace_id = $1", ws)
        offsets = await pg.load_offsets(conn, s.consumer_group, s.topic_events, list(range(4)))
    finally:
        await conn.close()
    assert members == 20
    assert offsets == {p: ends.get(p, 10_000) for p in range(4)}  # an empty partition keeps its stale one
    warned = [r for r in caplog.records if "past the log end" in r.getMessage()]
    assert len(warned) == 4  # the empty partition's stale position too


async def test_log_reaches_tells_positions_inside_the_log_from_those_past_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("probe")
    ends = await produce(kafka_bootstrap, topic, [(b"k", b"v")] * 30, partition=0)
    assert ends == {0: 30}
    tp = TopicPartition(topic, 0)
    assert await log_reaches(Settings(kafka_bootstrap=kafka_bootstrap), {tp: 30}) == {tp}
    assert await log_reaches(Settings(kafka_bootstrap=kafka_bootstrap), {tp: 17}) == {tp}
    assert await log_reaches(Settings(kafka_bootstrap=kafka_bootstrap), {tp: 31}, wait_s=1.0) == set()
