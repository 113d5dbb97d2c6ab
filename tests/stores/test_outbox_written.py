"""The outbox rows a unit wrote, sent from memory (``Unit.rows``, ``OutboxSender.send_written``):
the same bytes as the rows read back, and only when nothing older of their partitions is unsent —
else the sender drains, which sends another writer's rows first, in commit order."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from helpers.kafka_io import create_topic, read_topic
from helpers.stores import new_partitions, new_ws, transition
from segment_worker.config import Settings
from segment_worker.events import render_transition
from segment_worker.kafka import producer
from segment_worker.state import Transition
from segment_worker.stores import postgres as pg
from segment_worker.stores.unit import partition_unit
from segment_worker.worker.metrics import WorkerMetrics
from segment_worker.worker.outbox import OutboxSender, Written, render_row
from segment_worker.worker.topics import TopicGuard

_TRACED = {
    "kind": "event",
    "event_id": "e-traced",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "vendor=1",
}


async def _write(
    pool: asyncpg.Pool, redis: Redis, parts: list[int], ts: list[Transition], **kw: bool
) -> Written:
    async with partition_unit(pool, redis, parts, **kw) as u:
        await u.write_transitions(ts)
    return Written(u.rows, u.cursors)


async def test_a_units_rows_in_memory_render_as_the_rows_read_back(pool: asyncpg.Pool, redis: Redis) -> None:
    ws, seg = new_ws(), uuid.uuid4()
    parts = new_partitions(2)
    ts = [
        transition(ws, seg, "c1", parts[0], 1, "entered"),
        dataclasses.replace(transition(ws, seg, "c2", parts[1], 1, "entered"), cause=dict(_TRACED)),
        transition(ws, seg, "c1", parts[0], 2, "exited"),
    ]
    written = await _write(pool, redis, parts, ts)
    async with pool.acquire() as conn:
        read_back = await pg.fetch_unsent(conn, parts, 100)
    assert [r.id for r in written.rows] == [r.id for r in read_back]  # id order, every row
    assert [render_row(r) for r in written.rows] == [render_row(r) for r in read_back]
    assert [render_row(r)[1] for r in written.rows] == [render_transition(t) for t in ts]
    cursors = {p: (c.applied, c.last, c.sent) for p, c in written.cursors.items()}
    assert cursors == {p: (0, 0, 0) for p in parts}  # a new partition: nothing before the unit


async def test_rows_are_sent_from_memory_only_when_nothing_older_is_unsent(
    pool: asyncpg.Pool, redis: Redis, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    ws, seg = new_ws(), uuid.uuid4()
    (p,) = new_partitions(1)
    topic = unique_name("written")
    await create_topic(kafka_bootstrap, topic, 3)
    ts = [
        transition(ws, seg, "c1", p, 1, "entered"),
        transition(ws, seg, "c2", p, 1, "entered"),  # another writer's (an API call)
        transition(ws, seg, "c1", p, 2, "exited"),
        transition(ws, seg, "c2", p, 2, "exited"),
        transition(ws, seg, "c3", p, 1, "entered"),
    ]
    guard = TopicGuard()
    async with producer(Settings(kafka_bootstrap=kafka_bootstrap)) as prod:
        sender = OutboxSender(prod, topic, WorkerMetrics(CollectorRegistry()), guard=guard)
        assert await sender.send_written(await _write(pool, redis, [p], ts[:1]))  # nothing before it
        # Another writer commits in the partition; its notification is not handled yet.
        await _write(pool, redis, [p], ts[1:2], bump_generation=True)
        third = await _write(pool, redis, [p], ts[2:3])
        assert not await sender.send_written(third)  # the other writer's row is older and unsent
        assert await sender.drain(pool, [p]) == 2  # both, in commit order
        fourth = await _write(pool, redis, [p], ts[3:4])
        guard.suspect("a test")  # the topics are in doubt: nothing is sent
        assert not await sender.send_written(fourth)
        guard.confirmed(await guard.wait_check(0), recreated=False)
        assert await sender.send_written(fourth)  # the drain delivered everything before it
        await sender.flush_marks(pool)
        # A new owner (a restarted worker) knows what was delivered from the outbox cursor.
        restarted = OutboxSender(prod, topic, WorkerMetrics(CollectorRegistry()))
        assert await restarted.send_written(await _write(pool, redis, [p], ts[4:]))
        await restarted.flush_marks(pool)
    records = await read_topic(kafka_bootstrap, topic)
    by_key: dict[bytes, list[bytes]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r.value)
    expected: dict[bytes, list[bytes]] = {}
    for t in ts:  # each once, each key in order
        expected.setdefault(f"{ws}:{t.customer_id}".encode(), []).append(render_transition(t))
    assert by_key == expected
    async with pool.acquire() as conn:
        assert await pg.fetch_unsent(conn, [p], 100) == []


async def test_a_failed_send_holds_rows_back_until_drained_or_its_partition_is_given_up(
    pg_dsn: str, pool: asyncpg.Pool, redis: Redis, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    ws, seg = new_ws(), uuid.uuid4()
    p, q = new_partitions(2)
    topic = unique_name("retry")
    await create_topic(kafka_bootstrap, topic, 3)
    async with producer(Settings(kafka_bootstrap=kafka_bootstrap)) as prod:
        sender = OutboxSender(prod, topic, WorkerMetrics(CollectorRegistry()))
        closed = await pg.create_pool(pg_dsn, min_size=0, max_size=1)
        await closed.close()
        with pytest.raises(asyncpg.InterfaceError):
            await sender.drain(closed, [p])  # a send of p's rows failed: they may be left unsent
        # A later batch in q waits for a drain that sends p's leftovers first…
        first = await _write(pool, redis, [q], [transition(ws, seg, "c1", q, 1, "entered")])
        assert not await sender.send_written(first)
        sender.forget([p])  # …until p is given up: its rows are the next owner's
        assert await sender.send_written(first)
    records = await read_topic(kafka_bootstrap, topic)
    assert [r.value for r in records] == [render_transition(transition(ws, seg, "c1", q, 1, "entered"))]
