"""A log recreated while no worker runs (issue 13): the positions stored in PostgreSQL carry the
fingerprint of the record consumed before them; a worker that starts on a log whose record there
is missing or another one reads the partition from the log start (CONTRACT §10), so no record of
the new log is skipped — also when the new log has grown past the old positions. A log that did
not change is read on from the stored positions, not replayed. A Tansu of this test's own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest
from aiokafka import TopicPartition

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce
from helpers.own_servers import OwnTansu
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.kafka import ensure_topics
from segment_worker.stores import postgres as pg
from segment_worker.worker.positions import _probe_before, log_went_back, record_fingerprint

pytestmark = pytest.mark.timeout(240)

SEGMENTS = {
    "A": {"field": "tags", "op": "has", "value": "a"},
    "B": {"field": "tags", "op": "has", "value": "b"},
}
APPLIED = ("segment_worker_events_processed_total", {"outcome": "applied"})


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


async def test_a_log_recreated_while_no_worker_ran_is_read_from_its_start(
    unique_settings: Settings, workspace_id: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = OwnTansu(tmp_path)
    await broker.start()
    s = unique_settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    conn = await pg.connect(s.require_database_url())
    caplog.set_level(logging.WARNING, logger="segment_worker.worker.positions")
    try:
        ws = await create_workspace(conn, workspace_id, segments=SEGMENTS)
        a, b = ws.segments["A"], ws.segments["B"]
        async with WorkerHarness(s):
            ends = await produce(broker.bootstrap, s.topic_events, tag_events(ws.id, "a", range(200), 1))
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id)
        stored = await pg.load_offsets(conn, s.consumer_group, s.topic_events, list(ends))
        assert stored == ends
        prints = await pg.load_fingerprints(conn, s.consumer_group, s.topic_events, list(ends))
        assert set(prints) == set(ends)

        # No worker runs: the broker loses its log (in memory), the topic is created anew and its
        # new log grows to three times the old positions before any worker looks.
        broker.kill()
        await broker.start()
        await ensure_topics(s)
        new_ends = await produce(broker.bootstrap, s.topic_events, tag_events(ws.id, "b", range(600), 2))
        assert all(new_ends[p] > stored[p] for p in stored)
        want_b = {f"c{i}" for i in range(600)}
        t0 = time.monotonic()
        async with WorkerHarness(s) as h:
            await wait_caught_up(conn, s.consumer_group, s.topic_events, new_ends, workspace_id=ws.id)
            got = await members(conn, ws.id, b)
            assert got == want_b, f"{len(want_b - got)} of 600 records of the new log skipped"
            assert h.metric(*APPLIED) == 600
        print(f"recreated log: all 600 records applied in {time.monotonic() - t0:.1f} s")
        assert await members(conn, ws.id, a) == {f"c{i}" for i in range(200)}
        warned = [r for r in caplog.records if "is missing or not the one consumed" in r.getMessage()]
        assert {r.args[2] for r in warned if isinstance(r.args, tuple)} == set(stored)  # type: ignore[index]

        # The same log again: its positions hold, nothing is replayed.
        caplog.clear()
        async with WorkerHarness(s) as h:
            ends = await produce(broker.bootstrap, s.topic_events, tag_events(ws.id, "a", range(600, 601), 3))
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id)
            assert h.metric(*APPLIED) == 1
        assert not [r for r in caplog.records if "continuing from the log start" in r.getMessage()]
    finally:
        await conn.close()
        broker.stop()


async def test_log_went_back_compares_the_record_before_the_position(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("fingerprint")
    records = [(b"k%d" % i, b"v%d" % i) for i in range(30)]
    assert await produce(kafka_bootstrap, topic, records, partition=0) == {0: 30}
    tp = TopicPartition(topic, 0)
    s = Settings(kafka_bootstrap=kafka_bootstrap)

    # The record at 16 as the probe fetches it (a batch stores the fingerprint of what it consumed).
    (found,) = (await _probe_before(s, {tp: 17}, wait_s=3.0, need_record=True)).values()
    assert found.offset == 16 and (found.key, found.value) == records[16]
    assert await log_went_back(s, {tp: 17}, {tp: record_fingerprint(found)}) == set()
    other = SimpleNamespace(key=found.key, value=b"other", timestamp=found.timestamp)
    assert await log_went_back(s, {tp: 17}, {tp: record_fingerprint(other)}) == {tp}
    later = SimpleNamespace(key=found.key, value=found.value, timestamp=found.timestamp + 1)
    assert await log_went_back(s, {tp: 17}, {tp: record_fingerprint(later)}) == {tp}
    assert await log_went_back(s, {tp: 31}, {tp: record_fingerprint(found)}, wait_s=1.0) == {tp}  # past end
