"""The outbox's per-partition sent cursor: how migration 004 seeds it from the old ``sent`` flags,
and a pipelined drain against the real broker (every row once, each key in order, marks last, no linger)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry

from helpers.databases import migrate_below
from helpers.kafka_io import create_topic, read_topic
from helpers.own_servers import OwnTansu
from helpers.stores import T0, new_partitions, new_ws, redis_applied
from segment_worker.config import Settings
from segment_worker.kafka import create_producer, ensure_topics, on_connection_broken, producer
from segment_worker.migrate import available, migrate_conn
from segment_worker.stores import pg_outbox
from segment_worker.stores import postgres as pg
from segment_worker.worker.metrics import WorkerMetrics
from segment_worker.worker.outbox import OutboxSender, render_row
from segment_worker.worker.topics import TopicGuard

_INSERT = (
    "INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id, seq, kind,"
    " cause, at) VALUES ($1, $2, $3, 'S', $4, $5, $6, '{\"kind\": \"manual\"}', $7) RETURNING id"
)


async def test_migration_004_seeds_each_cursor_below_the_first_unsent_row(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate_below(conn, 4)
        seg = uuid.uuid4()
        # partition → sent flags in id order: all sent; a sent prefix; none sent; a sent row above
        # an unsent one (never written by the old code, but it must not be lost).
        flags = {0: [True, True], 1: [True, True, False, False], 2: [False, False], 3: [True, False, True]}
        ids: dict[int, list[int]] = defaultdict(list)
        for i in range(4):  # interleaved, as concurrent partitions are
            for p, fs in flags.items():
                if i < len(fs):
                    ids[p].append(await conn.fetchval(_INSERT, p, "ws", seg, f"c{p}", i + 1, "entered", T0))
        for p, fs in flags.items():
            sent = [i for i, f in zip(ids[p], fs, strict=True) if f]
            await conn.execute("UPDATE transitions SET sent = true WHERE id = ANY($1::bigint[])", sent)
        assert await migrate_conn(conn) == [m.name for m in available() if m.version >= 4]
        cursors = dict(await conn.fetch("SELECT partition, sent_id FROM outbox_cursors"))
        # The rows each cursor covers (id ≤ cursor): the sent ones below the first unsent row.
        covered = {p: [i for i in ids[p] if i <= cursors[p]] for p in flags}
        assert covered == {0: ids[0], 1: ids[1][:2], 2: [], 3: ids[3][:1]}
        assert await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'transitions'"
            " AND column_name = 'sent'"
        ) == 0
        await pg.init_connection(conn)
        unsent = await pg.fetch_unsent(conn, list(flags), 100)
        assert [r.id for r in unsent] == sorted([*ids[1][2:], *ids[2], *ids[3][1:]])
    finally:
        await conn.close()


async def test_a_pipelined_drain_sends_every_row_once_and_each_key_in_order(
    pg_dsn: str, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    ws = new_ws()
    parts = new_partitions(3)
    seg = uuid.uuid4()
    topic = unique_name("outbox")
    await create_topic(kafka_bootstrap, topic, 4)
    pool = await pg.create_pool(pg_dsn, max_size=2)
    try:
        async with pool.acquire() as conn:
            # 10 customers per partition, 4 transitions each, written round after round so that
            # one key's events fall into different chunks of the drain.
            for seq in range(1, 5):
                for p in parts:
                    for c in range(10):
                        kind = "entered" if seq % 2 else "exited"
                        await conn.execute(_INSERT, p, ws, seg, f"c{p}-{c}", seq, kind, T0)
            # The last partition's Redis ops are pending: it must wait.
            await redis_applied(conn, parts[:2])
            expected = {r.id: render_row(r) for r in await pg.fetch_unsent(conn, parts[:2], 1000)}
        async with producer(Settings(kafka_bootstrap=kafka_bootstrap)) as prod:
            sender = OutboxSender(prod, topic, WorkerMetrics(CollectorRegistry()), batch_rows=7)
            assert await sender.drain(pool, parts) == 80
            assert sender.has_unmarked  # marked lazily…
            async with pool.acquire() as conn:
                assert await pg_outbox.count_unsent(conn, parts) == 120
            assert await sender.drain(pool, parts) == 0  # …before the next read
            async with pool.acquire() as conn:
                assert await pg_outbox.count_unsent(conn, parts) == 40
                await redis_applied(conn, parts)
                expected |= {r.id: render_row(r) for r in await pg.fetch_unsent(conn, parts, 1000)}
            assert await sender.drain(pool, parts) == 40
            await sender.flush_marks(pool)
            async with pool.acquire() as conn:
                assert await pg_outbox.count_unsent(conn, parts) == 0
        records = await read_topic(kafka_bootstrap, topic)
        assert sorted((r.key, r.value) for r in records) == sorted(expected.values())  # each once
        seqs: dict[bytes, list[int]] = defaultdict(list)
        for r in records:  # per partition in offset order
            seqs[r.key].append(int(r.value.split(b'"seq":')[1].rstrip(b"}")))
        assert len(seqs) == 30 and all(s == [1, 2, 3, 4] for s in seqs.values())
    finally:
        await pool.close()


async def test_a_drain_does_not_wait_out_the_producers_linger(
    pg_dsn: str, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    # The drain waits for delivery right after queueing: a batch left open would sit out
    # linger_ms first (5 ms on every batch of the worker; 2 s here, to be seen).
    ws, (part,), topic = new_ws(), new_partitions(1), unique_name("outbox")
    pool = await pg.create_pool(pg_dsn, max_size=2)
    try:
        async with pool.acquire() as conn:
            for c in range(20):
                await conn.execute(_INSERT, part, ws, uuid.uuid4(), f"c{c}", 1, "entered", T0)
            await redis_applied(conn, [part])
        async with producer(Settings(kafka_bootstrap=kafka_bootstrap), linger_ms=2000) as prod:
            await prod.partitions_for(topic)  # creates the topic: its metadata is not timed
            sender = OutboxSender(prod, topic, WorkerMetrics(CollectorRegistry()))
            t0 = time.monotonic()
            assert await sender.drain(pool, [part]) == 20
            assert time.monotonic() - t0 < 1.0
            await sender.flush_marks(pool)
    finally:
        await pool.close()


async def test_rows_are_held_while_the_broker_may_have_lost_the_topic_and_then_all_arrive(
    pg_dsn: str, tmp_path: Path
) -> None:
    # The embedded broker restarted (its log in memory: the topic is gone). Sent before the
    # topics are checked, rows would be acknowledged into nothing or into a topic the broker
    # made up, and marked sent: the guard holds them until the topic is there again.
    broker = OwnTansu(tmp_path)
    await broker.start()
    ws, (part,), topic = new_ws(), new_partitions(1), "outbox"
    s = Settings(kafka_bootstrap=broker.bootstrap, topic_membership=topic, topic_events="in", topic_dlq="dlq",
                 input_partitions=4)
    await ensure_topics(s)
    pool = await pg.create_pool(pg_dsn, max_size=2)
    guard = TopicGuard()

    async def rows(first: int) -> dict[int, tuple[bytes, bytes]]:
        async with pool.acquire() as conn:
            for c in range(first, first + 20):
                await conn.execute(_INSERT, part, ws, uuid.uuid4(), f"c{c}", 1, "entered", T0)
            await redis_applied(conn, [part])
            return {r.id: render_row(r) for r in await pg.fetch_unsent(conn, [part], 1000)}

    try:
        prod = create_producer(s)
        on_connection_broken(prod, lambda: guard.suspect("test: connection broke"))
        await prod.start()
        try:
            sender = OutboxSender(prod, topic, WorkerMetrics(CollectorRegistry()), guard=guard)
            await rows(0)
            assert await sender.drain(pool, [part]) == 20
            await sender.flush_marks(pool)
            after = await rows(20)
            broker.kill()
            await broker.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while guard.verified:  # the producer notices the broken connection on its next use
                with contextlib.suppress(Exception):
                    await sender.drain(pool, [part])
                assert loop.time() < deadline, "the broken connection was not noticed"
                await asyncio.sleep(0.1)
            assert await sender.drain(pool, [part]) == 0  # held
            ticket = await guard.wait_check(0)
            await ensure_topics(s)  # what the worker's topics task does
            guard.confirmed(ticket, recreated=True)
            assert await sender.drain(pool, [part]) == 20
            await sender.flush_marks(pool)
        finally:
            await prod.stop()
        records = await read_topic(broker.bootstrap, topic)
        assert sorted((r.key, r.value) for r in records) == sorted(after.values())
    finally:
        await pool.close()
        broker.kill()
