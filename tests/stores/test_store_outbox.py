"""Partition bookkeeping (epochs, generations, offsets, ticks, topics) and the outbox, against a
real database; each test runs in a transaction that is rolled back."""

from __future__ import annotations

import uuid
from unittest.mock import ANY

import asyncpg

from helpers.stores import T0, new_partitions, new_ws, redis_applied, transition
from segment_worker.stores import OpKind, RedisOp, pg_outbox
from segment_worker.stores import postgres as pg


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
    assert len(await pg.fetch_redis_ops(conn, [p, q])) == 3
    await redis_applied(conn, [p])
    rows = await pg.fetch_unsent(conn, [p, q], 10)
    assert [(r.customer_id, r.seq, r.kind) for r in rows] == [("c1", 1, "entered"), ("c1", 2, "exited")]
    assert rows[0].id < rows[1].id and rows[0].segment_id == seg and rows[0].at == T0
    await redis_applied(conn, [q])
    rows = await pg.fetch_unsent(conn, [p, q], 2)
    assert [(r.customer_id, r.partition) for r in rows] == [("c1", p), ("c2", q)]  # id order, limit
    assert await pg.mark_sent(conn, {p: rows[0].id}) == 1
    rows = await pg.fetch_unsent(conn, [p, q], 10)
    assert [(r.customer_id, r.seq) for r in rows] == [("c2", 1), ("c1", 2)]
    assert await pg.mark_sent(conn, pg.max_ids(rows)) == 2
    assert await pg.fetch_unsent(conn, [p, q], 10) == []


async def _insert(
    conn: asyncpg.Connection, ws: str, partition: int, n: int, *, applied: bool = True
) -> list[int]:
    """``n`` outbox rows of one partition (customers c1…, seq 1), their Redis ops applied unless
    ``applied`` is false; answers their ids."""
    rows = await conn.fetch(
        "INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id, seq, kind,"
        " cause, at) SELECT $1, $2, $3, 'S', 'c' || i, 1, 'entered', '{\"kind\": \"manual\"}', $4"
        " FROM generate_series(1, $5) AS i ORDER BY i RETURNING id",
        partition,
        ws,
        uuid.uuid4(),
        T0,
        n,
    )
    if applied:
        await redis_applied(conn, [partition])
    return sorted(r["id"] for r in rows)


async def test_the_sent_cursor_moves_forward_only_and_per_partition(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    ids_p = await _insert(conn, ws, p, 3)
    ids_q = await _insert(conn, ws, q, 2)
    assert await pg_outbox.count_unsent(conn, [p, q]) == 5
    assert await pg.mark_sent(conn, {p: ids_p[1]}) == 1
    assert [r.id for r in await pg.fetch_unsent(conn, [p, q], 10)] == [ids_p[2], *ids_q]  # q untouched
    assert await pg.mark_sent(conn, {p: ids_p[0]}) == 0  # an older mark (a late or zombie sender)
    assert await pg.mark_sent(conn, {p: ids_p[1]}) == 0
    assert [r.id for r in await pg.fetch_unsent(conn, [p], 10)] == [ids_p[2]]
    assert await pg_outbox.count_unsent(conn, [p, q]) == 3
    assert await pg_outbox.count_unsent(conn, [q]) == 2
    # Rows committed later in a partition have higher ids: they are found past the cursor.
    later = await _insert(conn, ws, p, 1)
    assert [r.id for r in await pg.fetch_unsent(conn, [p], 10)] == [ids_p[2], *later]
    assert await pg.mark_sent(conn, {p: later[0], q: ids_q[1]}) == 2
    assert await pg.fetch_unsent(conn, [p, q], 10) == []
    assert await pg_outbox.count_unsent(conn, [p, q]) == 0


async def test_a_partition_with_pending_redis_ops_yields_nothing_until_they_are_applied(
    conn: asyncpg.Connection,
) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    ids_p = await _insert(conn, ws, p, 2)
    ids_q = await _insert(conn, ws, q, 2)
    # Committed after the Redis cursor moved (a unit whose Redis step failed): p's new rows wait,
    # its older ones and q's go.
    await pg.insert_redis_ops(conn, [RedisOp(p, OpKind.SADD, "k", "c0")])
    more_p = await _insert(conn, ws, p, 1, applied=False)
    assert [r.id for r in await pg.fetch_unsent(conn, [p, q], 10)] == sorted(ids_p + ids_q)
    assert await pg_outbox.count_unsent(conn, [p]) == 3  # the backlog still counts them
    assert [(o.key, o.member) for o in await pg.fetch_redis_ops(conn, [p])] == [("k", "c0"), (ANY, "c1")]
    await redis_applied(conn, [p])
    assert [r.id for r in await pg.fetch_unsent(conn, [p, q], 10)] == sorted(ids_p + ids_q + more_p)


async def test_reading_on_past_queued_rows_returns_each_row_once_in_partition_order(
    conn: asyncpg.Connection,
) -> None:
    ws = new_ws()
    parts = new_partitions(6)
    ids = {parts[0]: await _insert(conn, ws, parts[0], 30)}  # one partition holds most of the backlog
    for part in parts[1:]:
        ids[part] = await _insert(conn, ws, part, 2)
    seen: dict[int, list[int]] = {part: [] for part in parts}
    after: dict[int, int] = {}
    calls = 0
    while rows := await pg.fetch_unsent(conn, parts, 10, after=after):
        calls += 1
        assert len(rows) <= 10 and [r.id for r in rows] == sorted(r.id for r in rows)
        # Each partition gives at most 2 × limit / partitions rows: the rest waits for the next call.
        assert max(sum(r.partition == part for r in rows) for part in parts) <= 4
        for r in rows:
            seen[r.partition].append(r.id)
            after[r.partition] = r.id
    assert seen == ids and calls >= 30 // 4
    assert await pg_outbox.count_unsent(conn, parts) == 40  # reading ahead marks nothing
