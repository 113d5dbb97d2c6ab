"""Redis side: op coalescing, grouped application, and reconcile against PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis

from helpers.stores import T0, new_partitions, new_ws, state, transition
from segment_worker.stores import OpKind, OptOutChange, RedisOp
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import audience_key, glob_escape, optout_key, segment_key
from segment_worker.stores.reconcile import KeyDrift, rebuild_and_diff
from segment_worker.stores.redis import CHUNK, KeyWrites, apply_ops, coalesce_ops, read_set, scan_keys
from segment_worker.stores.unit import partition_unit


@pytest.fixture
async def ws(redis: Redis) -> AsyncIterator[str]:
    ws = new_ws()
    yield ws
    for key in await scan_keys(redis, f"sw:{{{glob_escape(ws)}}}:*"):
        await redis.delete(key)


def test_keys_carry_the_workspace_hash_tag() -> None:
    seg = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert segment_key("ws1", seg) == "sw:{ws1}:seg:12345678-1234-5678-1234-567812345678"
    assert optout_key("ws1") == "sw:{ws1}:optout"
    assert audience_key("ws1", "a1") == "sw:{ws1}:aud:a1"
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_coalesce_keeps_the_last_op_per_member_and_lets_del_reset_a_key() -> None:
    ops = [
        RedisOp(0, OpKind.SADD, "k1", "a"),
        RedisOp(0, OpKind.SADD, "k1", "b"),
        RedisOp(1, OpKind.SREM, "k1", "a"),
        RedisOp(0, OpKind.SADD, "k2", "x"),
        RedisOp(0, OpKind.DEL, "k2"),
        RedisOp(0, OpKind.SADD, "k2", "y"),
        RedisOp(0, OpKind.SREM, "k3", "z"),
        RedisOp(0, OpKind.SADD, "k3", "z"),
        RedisOp(0, OpKind.DEL, "k4"),
    ]
    assert coalesce_ops(ops) == {
        "k1": KeyWrites(delete=False, add=["b"], remove=["a"]),
        "k2": KeyWrites(delete=True, add=["y"], remove=[]),
        "k3": KeyWrites(delete=False, add=["z"], remove=[]),
        "k4": KeyWrites(delete=True, add=[], remove=[]),
    }


async def test_apply_ops_equals_applying_them_one_by_one(redis: Redis, ws: str) -> None:
    k1, k2 = segment_key(ws, "s1"), segment_key(ws, "s2")
    await redis.sadd(k1, "stale")
    await redis.sadd(k2, "old", "keep")
    big = [RedisOp(0, OpKind.SADD, k1, f"m{i}") for i in range(CHUNK * 2 + 5)]  # several chunks
    ops = [
        RedisOp(0, OpKind.DEL, k1),
        *big,
        RedisOp(0, OpKind.SREM, k1, "m0"),
        RedisOp(0, OpKind.SREM, k2, "old"),
        RedisOp(0, OpKind.SADD, k2, "new"),
    ]
    await apply_ops(redis, ops)
    assert await read_set(redis, k1) == {f"m{i}" for i in range(1, CHUNK * 2 + 5)}
    assert await read_set(redis, k2) == {"keep", "new"}
    await apply_ops(redis, ops)  # a replay converges to the same sets
    assert await redis.scard(k1) == CHUNK * 2 + 4
    assert await read_set(redis, k2) == {"keep", "new"}


async def _seed(pool: asyncpg.Pool, redis: Redis, ws: str) -> tuple[uuid.UUID, uuid.UUID, int]:
    """Workspace with a segment {c1, c2, c3} (c4 left it), an empty segment, c1 opted out."""
    (p,) = new_partitions(1)
    seg, empty = uuid.uuid4(), uuid.uuid4()
    async with partition_unit(pool, redis, [p]) as u:
        await u.conn.execute("INSERT INTO workspaces (id) VALUES ($1)", ws)
        for sid, name in ((seg, "VIPs"), (empty, "Nobody")):
            await u.conn.execute(
                "INSERT INTO segments"
                " (id, workspace_id, name, name_folded, type, rules, created_at, updated_at)"
                " VALUES ($1, $2, $3, lower($3), 'static', NULL, $4, $4)",
                sid,
                ws,
                name,
                T0,
            )
        await pg.save_states(u.conn, [state(ws, f"c{i}", p, marketing_opt_out=(i == 1)) for i in range(1, 5)])
        await u.write_transitions(
            [transition(ws, seg, f"c{i}", p, 1, "entered") for i in range(1, 5)]
            + [transition(ws, seg, "c4", p, 2, "exited")],
        )
        await pg.write_optout(u.conn, [OptOutChange(ws, "c1", p, True)])
    return seg, empty, p


async def _snapshot(redis: Redis, ws: str) -> dict[str, set[str]]:
    # The sets only (the workspace's epochs hash and rebuild marker are not sets).
    keys = await scan_keys(redis, f"sw:{{{glob_escape(ws)}}}:seg:*") | {optout_key(ws)}
    return {k: await read_set(redis, k) for k in keys}


async def test_reconcile_reports_drift_and_repair_false_changes_nothing(
    pool: asyncpg.Pool, redis: Redis, ws: str
) -> None:
    seg, _, _ = await _seed(pool, redis, ws)
    clean = await rebuild_and_diff(pool, redis, ws, repair=False)
    assert clean.keys_checked == 3 and not clean.has_drift  # two segments + the opt-out set

    key, orphan = segment_key(ws, seg), segment_key(ws, uuid.uuid4())
    await redis.srem(key, "c2")
    await redis.sadd(key, "ghost", "c4")
    await redis.srem(optout_key(ws), "c1")
    await redis.sadd(optout_key(ws), "c3")
    await redis.sadd(orphan, "x")  # the set of a segment PostgreSQL does not know
    before = await _snapshot(redis, ws)

    report = await rebuild_and_diff(pool, redis, ws, repair=False)
    assert await _snapshot(redis, ws) == before
    assert not report.repaired and report.keys_checked == 4
    assert sorted(report.drift, key=lambda d: d.key) == sorted(
        [
            KeyDrift(key, 1, 2, ("c2",), ("c4", "ghost")),
            KeyDrift(optout_key(ws), 1, 1, ("c1",), ("c3",)),
            KeyDrift(orphan, 0, 1, (), ("x",)),
        ],
        key=lambda d: d.key,
    )
    assert any("1 missing ['c2']" in line for line in report.lines())


async def test_reconcile_repairs_missing_and_extra_members(pool: asyncpg.Pool, redis: Redis, ws: str) -> None:
    seg, empty, _ = await _seed(pool, redis, ws)
    key, orphan = segment_key(ws, seg), segment_key(ws, uuid.uuid4())
    await redis.delete(key)  # a lost set: every member missing
    await redis.sadd(segment_key(ws, empty), "ghost")
    await redis.sadd(optout_key(ws), "c2")
    await redis.sadd(orphan, "x", "y")

    report = await rebuild_and_diff(pool, redis, ws, repair=True)
    assert report.repaired and {(d.key, d.missing, d.extra) for d in report.drift} == {
        (key, 3, 0),
        (segment_key(ws, empty), 0, 1),
        (optout_key(ws), 0, 1),
        (orphan, 0, 2),
    }
    assert await _snapshot(redis, ws) == {key: {"c1", "c2", "c3"}, optout_key(ws): {"c1"}}
    again = await rebuild_and_diff(pool, redis, ws, repair=False)
    assert not again.has_drift and again.keys_checked == 3


async def test_reconcile_check_counts_pending_ops_as_drift_and_repair_applies_them(
    pool: asyncpg.Pool, redis: Redis, ws: str
) -> None:
    seg, _, p = await _seed(pool, redis, ws)
    # Committed, not yet applied (as after a Redis outage).
    async with pool.acquire() as conn:
        await pg.write_transitions(conn, [transition(ws, seg, "c4", p, 3, "entered")])
    check = await rebuild_and_diff(pool, redis, ws, repair=False)
    assert [(d.key, d.missing, d.extra) for d in check.drift] == [(segment_key(ws, seg), 1, 0)]
    assert "c4" not in await read_set(redis, segment_key(ws, seg))
    fixed = await rebuild_and_diff(pool, redis, ws, repair=True)
    assert not fixed.has_drift  # the pending op was applied first: no drift left to repair
    assert "c4" in await read_set(redis, segment_key(ws, seg))
    async with pool.acquire() as conn:
        assert await pg.fetch_redis_ops(conn, [p]) == []
