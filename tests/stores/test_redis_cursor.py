"""The Redis cursor (migration 013): a transition's Redis op is pending until its partition's cursor
passes it; units apply their own ops from memory and read back only what earlier units left."""

from __future__ import annotations

import socket
import uuid

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from helpers.databases import migrate_below
from helpers.stores import T0, new_partitions, new_ws, state, transition
from segment_worker.migrate import available, migrate_conn
from segment_worker.stores import OpKind
from segment_worker.stores import postgres as pg
from segment_worker.stores.errors import RedisApplyError
from segment_worker.stores.keys import segment_key
from segment_worker.stores.redis import read_set
from segment_worker.stores.unit import partition_unit, replay_redis_ops

_INSERT = (
    "INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id, seq, kind,"
    " cause, at) VALUES ($1, 'ws', $2, 'S', $3, $4, $5, '{\"kind\": \"manual\"}', $6) RETURNING id"
)
VIP_SQL = "c.tags && $1::text[]"


async def test_migration_013_seeds_each_cursor_and_keeps_pending_rows_after_the_history(
    empty_database: str,
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate_below(conn, 13)
        seg = uuid.uuid4()
        # Partition 0: every op applied. Partition 1: its last two transitions' ops still queued
        # (a unit whose Redis step failed), its first one sent. Partition 2: nothing written.
        ids = {p: [await conn.fetchval(_INSERT, p, seg, f"c{p}-{i}", 1, "entered", T0) for i in range(3)]
               for p in (0, 1)}
        key = segment_key("ws", seg)
        for cid in ("c1-1", "c1-2"):
            await conn.execute(
                "INSERT INTO redis_ops (partition, op, key, member) VALUES (1, 1, $1, $2)", key, cid
            )
        await conn.execute("INSERT INTO outbox_cursors VALUES (0, $1), (1, $2)", ids[0][2], ids[1][0])
        assert await migrate_conn(conn) == [m.name for m in available() if m.version >= 13]
        await pg.init_connection(conn)
        assert dict(await conn.fetch("SELECT partition, applied_id FROM redis_cursors")) == {
            0: ids[0][2], 1: ids[1][0]
        }
        # Partition 1 replays the transitions past what was sent, then the old rows, in that order.
        ops = await pg.fetch_redis_ops(conn, [0, 1, 2])
        twice = [(1, OpKind.SADD, "c1-1"), (1, OpKind.SADD, "c1-2")] * 2
        assert [(o.partition, o.op, o.member) for o in ops] == twice
        assert [o.id for o in ops] == sorted(o.id for o in ops) and ops[2].id > max(ids[1])
        # New rows of either table draw from the one sequence.
        later = await conn.fetchval(_INSERT, 2, seg, "c2-0", 1, "entered", T0)
        row = await conn.fetchval(
            "INSERT INTO redis_ops (partition, op, key) VALUES (2, 3, $1) RETURNING id", key
        )
        assert ops[-1].id < later < row
        assert [r.id for r in await pg.fetch_unsent(conn, [0, 1, 2], 10)] == []  # nothing past Redis
    finally:
        await conn.close()


async def test_transitions_cannot_be_written_past_the_unit_that_applies_their_ops(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    ws, seg = new_ws(), uuid.uuid4()
    (p,) = new_partitions(1)
    with pytest.raises(TypeError, match=r"Unit\.write_transitions"):
        async with partition_unit(pool, redis, [p]) as u:
            await pg.write_transitions(u.conn, [transition(ws, seg, "c1", p, 1, "entered")])
    async with partition_unit(pool, redis, [p]) as u:
        await u.write_transitions([transition(ws, seg, "c1", p, 1, "entered")])
    assert u.applied_ops == 1 and await read_set(redis, segment_key(ws, seg)) == {"c1"}
    async with pool.acquire() as conn:
        assert await pg.fetch_redis_ops(conn, [p]) == []
        assert [r.customer_id for r in await pg.fetch_unsent(conn, [p], 10)] == ["c1"]


def _dead_redis() -> Redis:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


async def test_a_diff_whose_redis_step_failed_is_replayed_in_commit_order(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    """A set-based diff's ops are its transitions and its per-partition rows: replayed after a
    failure both are applied, in commit order with what other units wrote since."""
    ws, seg = new_ws(), uuid.uuid4()
    p, q = new_partitions(2)
    key = segment_key(ws, seg)
    async with pool.acquire() as conn:
        await pg.save_states(conn, [state(ws, "a", p, tags={"vip"}), state(ws, "b", q, tags={"vip"})])
    dead = _dead_redis()
    try:
        with pytest.raises(RedisApplyError):
            async with partition_unit(pool, dead, [p, q]) as u:
                await pg.diff_segment_tally(
                    u.conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], cause={"kind": "rules_changed"}, at=T0
                )
    finally:
        await dead.aclose()
    async with pool.acquire() as conn:
        assert len(await pg.fetch_redis_ops(conn, [p, q])) == 4  # two transitions, two rows
    # The next unit on p applies p's leftovers (the diff's) before its own exit of "a".
    async with partition_unit(pool, redis, [p]) as u:
        await u.write_transitions([transition(ws, seg, "a", p, 2, "exited")])
    assert u.applied_ops == 3 and await read_set(redis, key) == set()
    assert await replay_redis_ops(pool, redis, [p, q]) == 2
    assert await read_set(redis, key) == {"b"}
    async with pool.acquire() as conn:
        assert await pg.fetch_redis_ops(conn, [p, q]) == []
        rows = await pg.fetch_unsent(conn, [p, q], 10)
    assert [(r.customer_id, r.kind) for r in rows] == [("a", "entered"), ("b", "entered"), ("a", "exited")]
