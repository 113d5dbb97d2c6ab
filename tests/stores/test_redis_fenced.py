"""Fenced Redis writes (``stores.redis_fenced``): a stale owner epoch cannot undo the new owner's
writes; a key of the wrong type is reported, deleted and written, never retried for ever."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from helpers.stores import new_partitions, new_ws
from segment_worker.stores import OpKind, RedisOp
from segment_worker.stores import postgres as pg
from segment_worker.stores.errors import FencedError
from segment_worker.stores.keys import epochs_key, glob_escape, marker_key, segment_key
from segment_worker.stores.redis import CHUNK, read_set, scan_keys
from segment_worker.stores.redis_fenced import apply_ops_fenced, on_wrong_type
from segment_worker.stores.unit import partition_unit


@pytest.fixture
async def ws(redis: Redis) -> AsyncIterator[str]:
    ws = new_ws()
    yield ws
    for key in await scan_keys(redis, f"sw:{{{glob_escape(ws)}}}:*"):
        await redis.delete(key)


def sadd(p: int, key: str, member: str) -> RedisOp:
    return RedisOp(p, OpKind.SADD, key, member)


def srem(p: int, key: str, member: str) -> RedisOp:
    return RedisOp(p, OpKind.SREM, key, member)


async def test_a_stale_epoch_cannot_undo_the_new_owners_writes(redis: Redis, ws: str) -> None:
    key = segment_key(ws, uuid.uuid4())
    # The old owner (epoch 4) added c1; the new owner (epoch 5) removed it and added c2.
    await apply_ops_fenced(redis, [sadd(3, key, "c1")], {3: 4})
    await apply_ops_fenced(redis, [srem(3, key, "c1"), sadd(3, key, "c2")], {3: 5})
    # The old owner wakes up and applies what it had read before it froze: refused, nothing written.
    with pytest.raises(FencedError) as caught:
        await apply_ops_fenced(redis, [sadd(3, key, "c1"), srem(3, key, "c2")], {3: 4})
    assert caught.value.partitions == [3]
    assert await read_set(redis, key) == {"c2"}
    assert await redis.hget(epochs_key(ws), "3") == b"5"
    # The current owner (same epoch) and other partitions of the workspace still write.
    await apply_ops_fenced(redis, [sadd(3, key, "c3"), sadd(7, key, "d1")], {3: 5, 7: 1})
    assert await read_set(redis, key) == {"c2", "c3", "d1"}


async def test_units_fence_their_redis_writes_with_the_epoch_in_postgresql(
    pool: asyncpg.Pool, redis: Redis, ws: str
) -> None:
    (p,) = new_partitions(1)
    key = segment_key(ws, uuid.uuid4())
    async with pool.acquire() as conn:
        epochs = await pg.claim_partitions(conn, [p], "old")
        epochs = await pg.claim_partitions(conn, [p], "new")
    async with partition_unit(pool, redis, [p], fence=epochs) as u:
        await pg.insert_redis_ops(u.conn, [sadd(p, key, "c1")])
    assert await read_set(redis, key) == {"c1"}
    assert await redis.hget(epochs_key(ws), str(p)) == str(epochs[p]).encode()
    with pytest.raises(FencedError):  # what a zombie of the previous epoch would send
        await apply_ops_fenced(redis, [srem(p, key, "c1")], {p: epochs[p] - 1})
    assert await read_set(redis, key) == {"c1"}


async def test_a_key_of_the_wrong_type_is_reported_deleted_and_written(redis: Redis, ws: str) -> None:
    key, other = segment_key(ws, uuid.uuid4()), segment_key(ws, uuid.uuid4())
    await redis.set(key, "not a set")
    await redis.set(marker_key(ws), "ok")
    seen: list[str] = []
    on_wrong_type(redis, seen.append)
    await apply_ops_fenced(redis, [sadd(1, key, "c1"), sadd(1, other, "c2")], {1: 1})
    assert seen == [key]
    assert await read_set(redis, key) == {"c1"} and await read_set(redis, other) == {"c2"}
    # The workspace's marker is gone: the self-healing check rebuilds its sets from PostgreSQL.
    assert await redis.exists(marker_key(ws)) == 0


async def test_big_writes_are_split_into_bounded_script_calls(redis: Redis, ws: str) -> None:
    key, other = segment_key(ws, uuid.uuid4()), segment_key(ws, uuid.uuid4())
    await redis.sadd(key, "gone")
    n = CHUNK * 2 + 17
    ops = [RedisOp(1, OpKind.DEL, key), *(sadd(1, key, f"c{i}") for i in range(n))]
    ops += [srem(2, other, "x"), *(sadd(2, other, f"d{i}") for i in range(300))]
    calls = await apply_ops_fenced(redis, ops, {1: 1, 2: 1})
    assert calls >= 3
    assert await read_set(redis, key) == {f"c{i}" for i in range(n)}
    assert await read_set(redis, other) == {f"d{i}" for i in range(300)}


# Members are customer ids: printable, no spaces, any script — the counts argument's separators too.
_MEMBERS = st.sampled_from(["c1", "c2", "Ünïcødé", "客户", "🙂x", "a,b;c", "1,0,0", "%d+"])


@settings(max_examples=40, deadline=None)
@given(
    before=st.lists(st.tuples(st.integers(0, 2), _MEMBERS), max_size=6),
    writes=st.lists(st.tuples(st.sampled_from(list(OpKind)), st.integers(0, 2), _MEMBERS), max_size=30),
)
async def test_a_fenced_apply_equals_applying_the_ops_one_by_one(
    redis: Redis, before: list[tuple[int, str]], writes: list[tuple[OpKind, int, str]]
) -> None:
    ws = new_ws()
    keys = [segment_key(ws, uuid.uuid4()) for _ in range(3)]
    expected: list[set[str]] = [set(), set(), set()]
    for k, m in before:
        await redis.sadd(keys[k], m)
        expected[k].add(m)
    ops = []
    for kind, k, m in writes:
        ops.append(RedisOp(k, kind, keys[k], None if kind is OpKind.DEL else m))
        if kind is OpKind.DEL:
            expected[k].clear()
        elif kind is OpKind.SADD:
            expected[k].add(m)
        else:
            expected[k].discard(m)
    try:
        await apply_ops_fenced(redis, ops, {0: 1, 1: 1, 2: 1})
        assert [await read_set(redis, k) for k in keys] == expected
    finally:
        await redis.delete(*keys, epochs_key(ws))
