"""The unit of work against real PostgreSQL and Redis: locking, rollback, Redis after commit,
replay, fencing."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from helpers.stores import new_partitions, new_ws, state, transition
from segment_worker.stores import postgres as pg
from segment_worker.stores.errors import FencedError, LockTimeoutError, RedisApplyError
from segment_worker.stores.keys import segment_key
from segment_worker.stores.redis import read_set
from segment_worker.stores.unit import SW_LOCK_CLASS, partition_unit, replay_redis_ops


@pytest.fixture
async def seg_key(redis: Redis) -> AsyncIterator[tuple[str, uuid.UUID, str]]:
    ws, seg = new_ws(), uuid.uuid4()
    key = segment_key(ws, seg)
    yield ws, seg, key
    await redis.delete(key)


async def _until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``predicate`` (another session's lock state) until true, for up to 5 s."""
    for _ in range(500):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


async def _waiting_for_partition_lock(pool: asyncpg.Pool, p: int) -> bool:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = $1 AND objid = $2 AND objsubid = 2",
        SW_LOCK_CLASS,
        p,
    )
    return n > 0


async def test_two_units_on_one_partition_run_one_after_the_other(
    pool: asyncpg.Pool, redis: Redis, seg_key: tuple[str, uuid.UUID, str]
) -> None:
    ws, seg, key = seg_key
    (p,) = new_partitions(1)
    log: list[str] = []
    a_in, release_a = asyncio.Event(), asyncio.Event()
    seen_by_b: dict[str, object] = {}

    async def unit_a() -> None:
        async with partition_unit(pool, redis, [p]) as u:
            log.append("a-in")
            a_in.set()
            await u.write_transitions([transition(ws, seg, "c1", p, 1, "entered")])
            await release_a.wait()
            log.append("a-body-done")

    async def unit_b() -> None:
        async with partition_unit(pool, redis, [p]) as u:
            log.append("b-in")
            # B starts from A's committed row and A's applied Redis writes.
            rec = (await pg.load_records(u.conn, [(ws, "c1")]))[(ws, "c1")]
            seen_by_b["seq"] = rec.memberships[seg].seq
            seen_by_b["redis"] = await read_set(redis, key)
            await u.write_transitions([transition(ws, seg, "c1", p, 2, "exited")])
        log.append("b-out")

    task_a = asyncio.create_task(unit_a())
    await a_in.wait()
    task_b = asyncio.create_task(unit_b())
    await _until(lambda: _waiting_for_partition_lock(pool, p))
    assert log == ["a-in"]  # B is blocked while A is open
    release_a.set()
    await asyncio.gather(task_a, task_b)
    assert log == ["a-in", "a-body-done", "b-in", "b-out"]
    # B ran after A's commit and after A's Redis writes (both happen before A unlocks).
    assert seen_by_b == {"seq": 1, "redis": {"c1"}}
    assert await read_set(redis, key) == set()


async def test_units_on_different_partitions_do_not_wait_and_a_lock_timeout_leaves_no_lock(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    p, q = new_partitions(2)
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold_q() -> None:
        async with partition_unit(pool, redis, [q]):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold_q())
    await entered.wait()
    async with partition_unit(pool, redis, [p], lock_timeout=2):
        pass  # p is not blocked by q
    with pytest.raises(LockTimeoutError) as err:
        async with partition_unit(pool, redis, [q, p], lock_timeout=0.2):
            pass  # takes p (ascending order), then waits for q
    assert err.value.retriable and err.value.partitions == [p, q]
    async with partition_unit(pool, redis, [p], lock_timeout=2):
        pass  # the timed-out attempt released p although q is still held
    release.set()
    await holder


async def test_an_exception_rolls_back_and_applies_nothing(
    pool: asyncpg.Pool, redis: Redis, seg_key: tuple[str, uuid.UUID, str]
) -> None:
    ws, seg, key = seg_key
    (p,) = new_partitions(1)
    with pytest.raises(RuntimeError, match="boom"):
        async with partition_unit(pool, redis, [p]) as u:
            await pg.save_states(u.conn, [state(ws, "c1", p, tags={"vip"})])
            await u.write_transitions([transition(ws, seg, "c1", p, 1, "entered")])
            raise RuntimeError("boom")
    assert await redis.exists(key) == 0
    async with pool.acquire() as conn:
        recs = await pg.load_records(conn, [(ws, "c1")])
        assert recs[(ws, "c1")].state is None and recs[(ws, "c1")].memberships == {}
        assert await pg.fetch_redis_ops(conn, [p]) == []
    async with partition_unit(pool, redis, [p], lock_timeout=2):
        pass  # and the lock was released


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting to it is refused


async def test_redis_outage_after_commit_leaves_ops_that_replay_applies(
    pool: asyncpg.Pool, redis: Redis, seg_key: tuple[str, uuid.UUID, str]
) -> None:
    ws, seg, key = seg_key
    p, q = new_partitions(2)
    dead = Redis(host="127.0.0.1", port=_dead_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(RedisApplyError) as err:
            async with partition_unit(pool, dead, [p, q]) as u:
                await u.write_transitions(
                    [transition(ws, seg, "c1", p, 1, "entered"), transition(ws, seg, "c2", q, 1, "entered")],
                )
        assert err.value.retriable and err.value.partitions == [p, q]
    finally:
        await dead.aclose()
    async with pool.acquire() as conn:
        assert len(await pg.fetch_redis_ops(conn, [p, q])) == 2  # committed, pending
        assert await pg.fetch_unsent(conn, [p, q], 10) == []  # Kafka waits for Redis
        assert (await pg.segment_member_counts(conn, [seg]))[seg] == 2
    assert await redis.exists(key) == 0

    listener = await pool.acquire()
    notes: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        notes.put_nowait(str(args[3]))

    await listener.add_listener("sw_outbox", on_notify)
    try:
        assert await replay_redis_ops(pool, redis, [p]) == 1
        assert await read_set(redis, key) == {"c1"}
        assert await asyncio.wait_for(notes.get(), 5) == str(p)
        # The next ordinary unit on q applies q's leftovers before its own writes.
        async with partition_unit(pool, redis, [q]) as u:
            await u.write_transitions([transition(ws, seg, "c3", q, 1, "entered")])
        assert u.applied_ops == 2
        assert await read_set(redis, key) == {"c1", "c2", "c3"}
        assert await replay_redis_ops(pool, redis, [p, q]) == 0
    finally:
        await listener.remove_listener("sw_outbox", on_notify)
        await pool.release(listener)
    async with pool.acquire() as conn:
        rows = await pg.fetch_unsent(conn, [p, q], 10)
    assert sorted((r.customer_id, r.partition) for r in rows) == [("c1", p), ("c2", q), ("c3", q)]


async def test_an_old_epoch_cannot_write(
    pool: asyncpg.Pool, redis: Redis, seg_key: tuple[str, uuid.UUID, str]
) -> None:
    ws, seg, key = seg_key
    (p,) = new_partitions(1)
    async with pool.acquire() as conn:
        old = await pg.claim_partitions(conn, [p], "worker-1")
        new = await pg.claim_partitions(conn, [p], "worker-2")
    assert new[p] == old[p] + 1
    with pytest.raises(FencedError) as err:
        async with partition_unit(pool, redis, [p], fence=old) as u:
            await u.write_transitions([transition(ws, seg, "c1", p, 1, "entered")])
    assert not err.value.retriable and err.value.partitions == [p] and err.value.found == new
    async with pool.acquire() as conn:
        assert (await pg.segment_member_counts(conn, [seg]))[seg] == 0
    async with partition_unit(pool, redis, [p], fence=new) as u:
        assert u.generations == {p: 0}
        await u.write_transitions([transition(ws, seg, "c1", p, 1, "entered")])
    assert await read_set(redis, key) == {"c1"}


async def test_a_claim_waits_for_the_unit_that_passed_its_epoch_check(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    (p,) = new_partitions(1)
    async with pool.acquire() as conn:
        epochs = await pg.claim_partitions(conn, [p], "worker-1")
    claimer = await pool.acquire()
    try:
        async with partition_unit(pool, redis, [p], fence=epochs):
            claim = asyncio.create_task(pg.claim_partitions(claimer, [p], "worker-2"))
            pid = claimer.get_server_pid()

            async def claim_blocked() -> bool:
                w = await pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
                return bool(w == "Lock")

            await _until(claim_blocked)  # on the row lock the fenced unit took FOR SHARE
            assert not claim.done()
        assert await claim == {p: epochs[p] + 1}
    finally:
        await pool.release(claimer)


async def test_bump_generation_is_visible_to_the_owner(pool: asyncpg.Pool, redis: Redis) -> None:
    (p,) = new_partitions(1)
    async with pool.acquire() as conn:
        epochs = await pg.claim_partitions(conn, [p], "worker-1")
    async with partition_unit(pool, redis, [p], bump_generation=True) as u:
        assert u.generations == {p: 1}
    async with partition_unit(pool, redis, [p], fence=epochs) as u:
        assert u.generations == {p: 1}
