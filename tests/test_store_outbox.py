"""Partition bookkeeping (epochs, generations, offsets, ticks, topics) and the outbox, against a
real database; each test runs in a transaction that is rolled back."""

from __future__ import annotations

import uuid

import asyncpg

from segment_worker.stores import postgres as pg
from test_store_helpers import T0, new_partitions, new_ws, transition

pytest_plugins = ["helpers.store_fixtures"]


async def test_partition_epochs_generations_offsets_ticks_and_topics(conn: asyncpg.Connection) -> None:
    p, q = new_partitions(2)
    assert await pg.claim_partitions(conn, [q, p], "w1") == {p: 1, q: 1}
    assert await pg.claim_partitions(conn, [p], "w2") == {p: 2}
    assert await pg.check_epochs(conn, {p: 2, q: 1}) == (True, {p: 0, q: 0})
    assert (await pg.check_epochs(conn, {p: 1}))[0] is False
    r = new_partitions(1)[0]
    assert (await pg.check_epochs(conn, {r: 1}))[0] is False  # never claimed
    assert await pg.bump_generation(conn, [p]) == {p: 1}
    assert await pg.check_epochs(conn, {p: 2, q: 1}) == (True, {p: 1, q: 0})
    assert await pg.current_epochs(conn, [p, r]) == {p: (2, 1), r: (None, 0)}

    assert await pg.load_offsets(conn, "g", "t", [p, q]) == {}
    await pg.save_offsets(conn, "g", "t", {p: 10, q: 20})
    await pg.save_offsets(conn, "g", "t", {p: 15})
    assert await pg.load_offsets(conn, "g", "t", [p, q, r]) == {p: 15, q: 20}
    assert await pg.load_offsets(conn, "other", "t", [p]) == {}

    assert await pg.get_ticked_at(conn, [p, r]) == {p: None, r: None}
    await pg.set_ticked_at(conn, [p, r], T0)
    assert await pg.get_ticked_at(conn, [p, r]) == {p: T0, r: T0}

    topic = f"t-{uuid.uuid4().hex}"
    assert await pg.input_partitions(conn, topic) is None
    await pg.record_topic(conn, topic, 12)
    assert await pg.input_partitions(conn, topic) == 12
    known = await pg.known_partitions(conn)
    assert {p, q, r} <= set(known) and set(range(12)) <= set(known)


async def test_outbox_waits_for_redis_ops_and_marks_sent_per_partition(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    await pg.write_transitions(
        conn,
        [
            transition(ws, seg, "c1", p, 1, "entered"),
            transition(ws, seg, "c2", q, 1, "entered"),
            transition(ws, seg, "c1", p, 2, "exited"),
        ],
    )
    # Redis ops of both partitions are pending: Kafka must wait for Redis.
    assert await pg.fetch_unsent(conn, [p, q], 10) == []
    ops = await pg.fetch_redis_ops(conn, [p, q])
    assert await pg.delete_redis_ops(conn, pg.max_ids([o for o in ops if o.partition == p])) == 1
    rows = await pg.fetch_unsent(conn, [p, q], 10)
    assert [(r.customer_id, r.seq, r.kind) for r in rows] == [("c1", 1, "entered"), ("c1", 2, "exited")]
    assert rows[0].id < rows[1].id and rows[0].segment_id == seg and rows[0].at == T0
    await pg.delete_redis_ops(conn, pg.max_ids(ops))
    rows = await pg.fetch_unsent(conn, [p, q], 2)
    assert [(r.customer_id, r.partition) for r in rows] == [("c1", p), ("c2", q)]  # id order, limit
    assert await pg.mark_sent(conn, {p: rows[0].id}) == 1
    rows = await pg.fetch_unsent(conn, [p, q], 10)
    assert [(r.customer_id, r.seq) for r in rows] == [("c2", 1), ("c1", 2)]
    assert await pg.mark_sent(conn, pg.max_ids(rows)) == 2
    assert await pg.fetch_unsent(conn, [p, q], 10) == []
