"""One behavioural contract for every ``SegmentStore``: the in-memory fake and PostgreSQL+Redis
must pass the same tests (as the ``eventsourcing`` library tests its recorders)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from helpers.store_backends import Batch, MemoryStore, PgRedisStore, SegmentStore
from helpers.stores import T0, full_state, new_partitions, new_ws, state, transition
from segment_worker.stores import OptOutChange
from segment_worker.stores import postgres as pg
from segment_worker.stores.errors import FencedError, MembershipConflictError
from segment_worker.stores.keys import glob_escape, optout_key, segment_key
from segment_worker.stores.redis import scan_keys


@pytest.fixture
def ws() -> str:
    return new_ws()


@pytest.fixture
async def pg_redis_store(pg_dsn: str, redis_url: str, ws: str) -> AsyncIterator[PgRedisStore]:
    pool = await pg.create_pool(pg_dsn, max_size=2)
    redis = Redis.from_url(redis_url)
    try:
        yield PgRedisStore(pool, redis)
    finally:
        for key in await scan_keys(redis, f"sw:{{{glob_escape(ws)}}}:*"):
            await redis.delete(key)
        await redis.aclose()
        await pool.close()


@pytest.fixture(params=["memory", "postgres+redis"])
def store(request: pytest.FixtureRequest) -> SegmentStore:
    """Each test runs once per implementation; the real one starts servers only when asked."""
    if request.param == "memory":
        return MemoryStore()
    real: SegmentStore = request.getfixturevalue("pg_redis_store")
    return real


async def test_an_unknown_customer_has_no_state_and_no_memberships(store: SegmentStore, ws: str) -> None:
    got = await store.load_records([(ws, "nobody")])
    assert list(got) == [(ws, "nobody")]
    assert got[(ws, "nobody")].state is None and got[(ws, "nobody")].memberships == {}


async def test_saved_states_load_back_equal(store: SegmentStore, ws: str) -> None:
    (p,) = new_partitions(1)
    full, plain = full_state(ws, "c1", p), state(ws, "c2", p, tags={"Lead"})
    await store.commit(Batch([p], states=[full, plain]))
    got = await store.load_records([(ws, "c1"), (ws, "c2")])
    assert got[(ws, "c1")].state == full and got[(ws, "c2")].state == plain
    full.name = "mutated after commit"  # the store keeps its own copy
    again = await store.load_records([(ws, "c1")])
    assert again[(ws, "c1")].state == dataclasses.replace(full, name="Zoë Ünal")


async def test_transitions_update_memberships_redis_counts_and_outbox(store: SegmentStore, ws: str) -> None:
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    key = segment_key(ws, seg)
    await store.commit(
        Batch(
            [p, q],
            states=[state(ws, "c1", p), state(ws, "c2", q)],
            transitions=[
                transition(ws, seg, "c1", p, 1, "entered"),
                transition(ws, seg, "c2", q, 1, "entered"),
            ],
        )
    )
    assert await store.redis_members(key) == {"c1", "c2"}
    assert await store.member_count(seg) == 2
    await store.commit(Batch([p], transitions=[transition(ws, seg, "c1", p, 2, "exited")]))
    assert await store.redis_members(key) == {"c2"}
    assert await store.member_count(seg) == 1
    got = await store.load_records([(ws, "c1"), (ws, "c2")])
    m1, m2 = got[(ws, "c1")].memberships[seg], got[(ws, "c2")].memberships[seg]
    assert (m1.is_member, m1.seq) == (False, 2)
    assert (m2.is_member, m2.seq) == (True, 1)

    rows = await store.fetch_unsent([p, q], 10)
    assert [(r.customer_id, r.partition, r.seq, r.kind) for r in rows] == [
        ("c1", p, 1, "entered"),
        ("c2", q, 1, "entered"),
        ("c1", p, 2, "exited"),
    ]
    assert rows[0].id < rows[1].id < rows[2].id
    assert (rows[0].workspace_id, rows[0].segment_id, rows[0].segment_name) == (ws, seg, "VIPs")
    assert (rows[0].cause, rows[0].at) == ({"kind": "event", "event_id": "e-1"}, T0)
    assert [r.customer_id for r in await store.fetch_unsent([q], 10)] == ["c2"]
    assert len(await store.fetch_unsent([p, q], 2)) == 2
    await store.mark_sent({p: rows[0].id})
    assert [r.id for r in await store.fetch_unsent([p, q], 10)] == [rows[1].id, rows[2].id]
    await store.mark_sent({p: rows[2].id, q: rows[1].id})
    assert await store.fetch_unsent([p, q], 10) == []


async def test_marking_sent_never_moves_back_and_keeps_to_its_partition(store: SegmentStore, ws: str) -> None:
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    await store.commit(
        Batch(
            [p, q],
            transitions=[
                transition(ws, seg, "c1", p, 1, "entered"),
                transition(ws, seg, "c2", q, 1, "entered"),
                transition(ws, seg, "c3", p, 1, "entered"),
            ],
        )
    )
    c1, c2, c3 = await store.fetch_unsent([p, q], 10)
    await store.mark_sent({p: c3.id})
    await store.mark_sent({p: c1.id})  # a late, older mark
    assert await store.fetch_unsent([p, q], 10) == [c2]
    await store.commit(Batch([p], transitions=[transition(ws, seg, "c1", p, 2, "exited")]))
    assert [(r.customer_id, r.seq) for r in await store.fetch_unsent([p, q], 10)] == [("c2", 1), ("c1", 2)]


async def test_seq_continues_after_exit_and_reentry(store: SegmentStore, ws: str) -> None:
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    for seq, kind in ((1, "entered"), (2, "exited"), (3, "entered")):
        await store.commit(Batch([p], transitions=[transition(ws, seg, "c1", p, seq, kind)]))
    m = (await store.load_records([(ws, "c1")]))[(ws, "c1")].memberships[seg]
    assert (m.is_member, m.seq) == (True, 3)
    assert await store.redis_members(segment_key(ws, seg)) == {"c1"}


async def test_a_conflicting_batch_writes_nothing(store: SegmentStore, ws: str) -> None:
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    await store.commit(Batch([p], transitions=[transition(ws, seg, "c1", p, 1, "entered")]))
    with pytest.raises(MembershipConflictError):
        await store.commit(
            Batch(
                [p],
                states=[state(ws, "c2", p)],
                transitions=[
                    transition(ws, seg, "c2", p, 1, "entered"),
                    transition(ws, seg, "c1", p, 1, "entered"),
                ],
                optouts=[OptOutChange(ws, "c2", p, True)],
            )
        )
    got = await store.load_records([(ws, "c2")])
    assert got[(ws, "c2")].state is None and got[(ws, "c2")].memberships == {}
    assert await store.redis_members(segment_key(ws, seg)) == {"c1"}
    assert await store.redis_members(optout_key(ws)) == set()
    assert await store.member_count(seg) == 1
    assert len(await store.fetch_unsent([p], 10)) == 1


async def test_optouts_mirror_into_the_optout_set(store: SegmentStore, ws: str) -> None:
    (p,) = new_partitions(1)
    await store.commit(Batch([p], optouts=[OptOutChange(ws, "c1", p, True), OptOutChange(ws, "c2", p, True)]))
    await store.commit(Batch([p], optouts=[OptOutChange(ws, "c1", p, False)]))
    assert await store.redis_members(optout_key(ws)) == {"c2"}


async def test_an_old_epoch_is_fenced_and_writes_nothing(store: SegmentStore, ws: str) -> None:
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    old = await store.claim_partitions([p, q], "w1")
    new = await store.claim_partitions([p], "w2")
    assert new == {p: old[p] + 1}
    with pytest.raises(FencedError) as err:
        await store.commit(
            Batch(
                [p, q], states=[state(ws, "c1", p)], transitions=[transition(ws, seg, "c1", p, 1, "entered")]
            ),
            fence=old,
        )
    assert err.value.partitions == [p] and not err.value.retriable
    assert (await store.load_records([(ws, "c1")]))[(ws, "c1")].state is None
    assert await store.member_count(seg) == 0
    await store.commit(Batch([p], states=[state(ws, "c1", p)]), fence=new)
    assert (await store.load_records([(ws, "c1")]))[(ws, "c1")].state == state(ws, "c1", p)


async def test_a_batch_may_not_write_a_partition_it_does_not_lock(store: SegmentStore, ws: str) -> None:
    p, q = new_partitions(2)
    with pytest.raises(ValueError, match="does not lock"):
        await store.commit(Batch([p], states=[state(ws, "c1", q)]))
