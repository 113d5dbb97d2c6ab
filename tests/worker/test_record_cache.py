"""The record cache: lean records decoded from rows, the byte estimate, LRU eviction under a byte
budget and a per-partition bound, against a real database (each test in a rolled-back transaction)."""

from __future__ import annotations

import gc
import tracemalloc
import uuid

import asyncpg

from helpers.stores import full_state, new_partitions, new_ws, transition
from segment_worker.bench import cpu
from segment_worker.state import CustomerRecord, Membership, intern_segment
from segment_worker.stores import pg_customers
from segment_worker.stores import postgres as pg
from segment_worker.worker.record_cache import RecordCache, record_bytes


def test_record_bytes_tracks_what_loaded_records_allocate() -> None:
    fx = cpu.build(300, 1)
    srows, mrows = cpu.state_rows(fx), cpu.membership_rows(fx)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    recs = cpu.load(fx, srows, mrows)
    actual = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    estimate = sum(record_bytes(r) for r in recs.values())
    # The estimate also counts the cache's own bookkeeping per record (~250 bytes).
    assert 0.85 < actual / estimate < 1.1, (actual, estimate)


def test_loaded_records_share_segment_ids_and_version_tuples() -> None:
    fx = cpu.build(50, 1)
    recs = cpu.load(fx, cpu.state_rows(fx), cpu.membership_rows(fx))
    keys = {id(k) for r in recs.values() for k in r.codes}
    assert len(keys) <= len(fx.segment_ids)  # one key object per segment, not per row
    for r in recs.values():
        assert r.state is not None
        by_event: dict[str, int] = {}
        for v in r.state.versions.values():
            assert by_event.setdefault(v[1], id(v)) == id(v)  # one tuple per event
        for sid in r.memberships:
            assert sid in fx.segment_ids and r.memberships[sid] == Membership(True, 1)


def test_memberships_view_reads_and_writes_the_codes() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    rec = CustomerRecord(None, {a: Membership(True, 3)})
    assert rec.codes == {intern_segment(a): 7}
    rec.memberships[b] = Membership(False, 2)
    assert dict(rec.memberships) == {a: Membership(True, 3), b: Membership(False, 2)}
    assert rec.memberships.get(uuid.uuid4()) is None and len(rec.memberships) == 2
    del rec.memberships[a]
    assert rec.memberships == {b: Membership(False, 2)} and rec != CustomerRecord(None)


async def _customers(conn: asyncpg.Connection, n: int) -> tuple[str, int, dict[tuple[str, str], int]]:
    ws = new_ws()
    (p,) = new_partitions(1)
    states = [full_state(ws, f"c{i}", p) for i in range(n)]
    await pg.save_states(conn, states)
    seg = uuid.uuid4()
    await pg.write_transitions(conn, [transition(ws, seg, "c0", p, 1, "entered")])
    return ws, p, {(ws, s.customer_id): p for s in states}


async def test_byte_budget_evicts_least_recently_used_and_reloads(conn: asyncpg.Connection) -> None:
    ws, p, wanted = await _customers(conn, 10)
    first = await RecordCache().get(conn, {(ws, "c0"): p})
    one = record_bytes(first[(ws, "c0")])
    cache = RecordCache(max_bytes=one * 4 + one // 2)  # room for four records
    keys = list(wanted)
    got = await cache.get(conn, {k: p for k in keys[:4]})
    assert len(cache) == 4 and cache.bytes <= one * 4 + one // 2
    await cache.get(conn, {keys[0]: p})  # keys[0] is now the most recently used
    await cache.get(conn, {keys[4]: p})  # evicts keys[1], the least recently used
    again = await cache.get(conn, {k: p for k in (keys[0], keys[2], keys[3], keys[4])})
    assert all(again[k] is got.get(k, again[k]) for k in again)  # all four still cached
    assert again[keys[0]] is got[keys[0]]
    reloaded = await cache.get(conn, {keys[1]: p})
    assert reloaded[keys[1]] is not got[keys[1]] and reloaded[keys[1]] == got[keys[1]]
    assert len(cache) == 4
    assert got[keys[0]].memberships == first[(ws, "c0")].memberships != {}


async def test_bookkeeping_stays_exact_through_drop_evict_and_generations(conn: asyncpg.Connection) -> None:
    ws, p, wanted = await _customers(conn, 6)
    cache = RecordCache(max_per_partition=4)
    recs = await cache.get(conn, wanted)
    assert len(cache) == 4  # the per-partition bound keeps the four most recent
    for k in list(wanted)[2:]:  # hits: the very objects
        assert (await cache.get(conn, {k: p}))[k] is recs[k]
    first = (ws, "c0")
    assert (await cache.get(conn, {first: p}))[first] is not recs[first]  # evicted: reloaded
    # c0 came back and pushed out c2, the least recently used.
    recs[first] = (await cache.get(conn, {first: p}))[first]
    cache.evict([(p, (ws, "c5"))])
    left = [(ws, "c3"), (ws, "c4"), first]
    assert len(cache) == 3 and cache.bytes == sum(record_bytes(recs[k]) for k in left)
    cache.check_generations({p: 1})
    assert len(cache) == 0 and cache.bytes == 0
    await cache.get(conn, wanted)
    cache.check_generations({p: 1})  # unchanged: kept
    assert len(cache) == 4
    cache.drop([p])
    assert len(cache) == 0 and cache.bytes == 0


def test_records_from_rows_answers_every_key() -> None:
    out = pg_customers.records_from_rows([("w", "a"), ("w", "b")], [], [])
    assert out == {("w", "a"): CustomerRecord(None), ("w", "b"): CustomerRecord(None)}
