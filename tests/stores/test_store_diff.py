"""The set-based diff (``stores.pg_diff``): grouped Redis op rows, one pass over stored rows,
the same result whether the scan goes through the temporary table or a candidate list, and plans
that stay linear in the candidates when the statistics are stale."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from helpers.stores import T0, new_partitions, new_ws, state
from segment_worker.stores import OpKind
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import glob_escape, segment_key
from segment_worker.stores.redis import read_set, scan_keys
from segment_worker.stores.unit import partition_unit

VIP_SQL = "c.tags @> $1::text[]"
CAUSE = {"kind": "rules_changed"}


async def test_a_full_diff_queues_one_op_row_per_partition_and_direction(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    await pg.save_states(conn, [
        state(ws, "a1", p, tags={"vip"}), state(ws, "a2", p, tags={"vip"}), state(ws, "b1", q, tags={"vip"}),
        state(ws, "b2", q),
    ])
    await pg.diff_segment(conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
    await pg.save_states(conn, [state(ws, "a1", p), state(ws, "b2", q, tags={"vip"})])
    ts = await pg.diff_segment(conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
    assert [(t.customer_id, t.seq, t.kind) for t in ts] == [("a1", 2, "exited"), ("b2", 1, "entered")]
    rows = await conn.fetch(
        "SELECT partition, op, member, members FROM redis_ops WHERE partition = ANY($1::int[]) ORDER BY id",
        [p, q],
    )
    grouped = sorted((r["partition"], r["op"], r["member"], sorted(r["members"])) for r in rows)
    assert grouped == sorted([
        (p, int(OpKind.SADD), None, ["a1", "a2"]), (q, int(OpKind.SADD), None, ["b1"]),
        (p, int(OpKind.SREM), None, ["a1"]), (q, int(OpKind.SADD), None, ["b2"]),
    ])
    # Expanded per member, in commit order (each diff's transitions, then its rows): a1's SREMs
    # come after its SADDs.
    ops = [(o.op, o.member) for o in await pg.fetch_redis_ops(conn, [p]) if o.member == "a1"]
    assert ops == [(OpKind.SADD, "a1")] * 2 + [(OpKind.SREM, "a1")] * 2


async def test_full_scan_and_candidate_diffs_agree(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    full, by_cand = uuid.uuid4(), uuid.uuid4()
    states = [state(ws, f"c{i}", p, tags={"vip"} if i % 3 else set()) for i in range(30)]
    await pg.save_states(conn, states)
    for step in range(3):
        changed = [state(ws, f"c{i}", p, tags={"vip"} if (i + step) % 2 else set()) for i in range(0, 30, 4)]
        await pg.save_states(conn, changed)
        a = await pg.diff_segment(conn, ws, full, "A", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
        b = await pg.diff_segment(
            conn, ws, by_cand, "B", VIP_SQL, [["vip"]], cause=CAUSE, at=T0,
            candidates_sql=f"SELECT customer_id FROM customers WHERE workspace_id = '{ws}'",
        )
        assert [(t.customer_id, t.seq, t.kind) for t in a] == [(t.customer_id, t.seq, t.kind) for t in b]
        assert a, "every step moves someone"
    members = await conn.fetch(
        "SELECT segment_id, count(*) FILTER (WHERE is_member) AS n FROM memberships"
        " WHERE segment_id = ANY($1::uuid[]) GROUP BY 1", [full, by_cand],
    )
    counts = await pg.segment_member_counts(conn, [full, by_cand])
    assert {r["segment_id"]: r["n"] for r in members} == counts
    assert counts[full] == counts[by_cand] > 0


async def test_a_candidate_diff_moves_only_candidates_of_its_partitions(conn: asyncpg.Connection) -> None:
    # A tick's diff: only the customers its candidates name, of the partitions it ticks — whoever
    # else the rule now disagrees with waits for their own candidate list. Tombstones exit.
    ws = new_ws()
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    ids = [f"c{i:02}" for i in range(24)]
    part = {cid: (p if i % 2 else q) for i, cid in enumerate(ids)}
    await pg.save_states(conn, [state(ws, cid, part[cid], tags={"vip"} if i % 3 else set())
                                for i, cid in enumerate(ids)])
    await pg.diff_segment(conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
    member = {cid: bool(i % 3) for i, cid in enumerate(ids)}
    # Every customer's tag flips; a few are deleted. A tombstone is in no segment, even one whose
    # rule its row still matches (``{"all": []}``, ``not_has``): here it keeps the tag.
    deleted = {"c01", "c04", "c07"}
    now_vip = {cid: not member[cid] and cid not in deleted for cid in ids}
    await pg.save_states(conn, [
        state(ws, cid, part[cid], tags={"vip"} if now_vip[cid] or cid in deleted else set(),
              deleted=cid in deleted)
        for cid in ids
    ])
    cands = ids[: len(ids) * 2 // 3]
    # Listed twice: still one transition each.
    cand_sql = "SELECT unnest($2::text[]) UNION ALL SELECT unnest($2::text[])"
    ts = await pg.diff_segment(
        conn, ws, seg, "VIPs", VIP_SQL, [["vip"], cands], partitions=[p], candidates_sql=cand_sql,
        cause=CAUSE, at=T0,
    )
    expected = sorted(
        (cid, 2 if member[cid] else 1, "exited" if member[cid] else "entered")
        for cid in cands if part[cid] == p and member[cid] != now_vip[cid]
    )
    assert sorted((t.customer_id, t.seq, t.kind) for t in ts) == expected
    assert {cid for cid, _, kind in expected if kind == "exited"} & deleted, "a tombstone exits"
    stored = {r["customer_id"]: r["is_member"] for r in await conn.fetch(
        "SELECT customer_id, is_member FROM memberships WHERE segment_id = $1", seg)}
    moved = {cid for cid, _, _ in expected}
    assert {cid for cid, m in stored.items() if m} == {
        cid for cid in ids if (now_vip[cid] if cid in moved else member[cid])
    }


def _rows_processed(plan: dict[str, Any]) -> int:
    """Rows every node of an executed plan (EXPLAIN ANALYZE, FORMAT JSON) produced, each time it
    ran: a plan that re-reads one side per row of the other shows as the product of both."""
    return int(plan["Actual Rows"] * plan["Actual Loops"]) + sum(map(_rows_processed, plan.get("Plans", [])))


async def _diff_and_plan(conn: asyncpg.Connection, *args: Any, **kw: Any) -> tuple[list[Any], dict[str, Any]]:
    """``pg.diff_segment(conn, *args, **kw)``'s transitions and the executed plan of its writing
    statement, which ``auto_explain`` sends to this connection."""
    plans: list[dict[str, Any]] = []

    def collect(_: object, message: asyncpg.PostgresLogMessage) -> None:
        text = str(message.message)
        if "changes AS MATERIALIZED" in text:
            plans.append(json.loads(text[text.index("{"):])["Plan"])

    await conn.execute("LOAD 'auto_explain'")
    for name, value in [("log_min_duration", "0"), ("log_analyze", "on"), ("log_timing", "off"),
                        ("log_format", "json"), ("log_level", "notice"), ("log_nested_statements", "on")]:
        await conn.execute(f"SET LOCAL auto_explain.{name} = '{value}'")
    conn.add_log_listener(collect)
    try:
        ts = await pg.diff_segment(conn, *args, **kw)
    finally:
        conn.remove_log_listener(collect)
        await conn.execute("SET LOCAL auto_explain.log_min_duration = -1")
    assert len(plans) == 1
    return ts, plans[0]


async def test_a_tick_diff_stays_linear_when_its_values_are_newer_than_the_statistics(
    conn: asyncpg.Connection,
) -> None:
    # A tick's candidates are the customers whose values just changed: newer than the statistics,
    # so the planner estimates them (and the customers they match) at one row. A plan that re-reads
    # one side per row of the other is then quadratic (a nested-loop anti-join of the stored members
    # against the matched customers did: 15,000 candidates took 5 s, docs/PERFORMANCE.md).
    ws = new_ws()
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    recent = "c.last_interaction_at >= $1::timestamptz"
    since = T0 - timedelta(days=7)
    days = {f"c{i:04}": i % 20 for i in range(2_000)}
    await pg.save_states(conn, [state(ws, cid, p, last_interaction_at=T0 - timedelta(days=d, hours=1))
                                for cid, d in days.items()])
    await pg.diff_segment(conn, ws, seg, "Recent", recent, [since], cause=CAUSE, at=T0)
    await conn.execute("ANALYZE customers")
    await conn.execute("ANALYZE memberships")
    members = [cid for cid, d in days.items() if d < 7]
    others = [cid for cid, d in days.items() if d >= 7]
    fresh = members[:500] + others[:100]
    await conn.execute(
        "UPDATE customers SET last_interaction_at = $3"
        " WHERE workspace_id = $1 AND customer_id = ANY($2::text[])", ws, fresh, T0 + timedelta(hours=1),
    )
    ts, plan = await _diff_and_plan(
        conn, ws, seg, "Recent", recent, [since], partitions=[p], cause=CAUSE, at=T0,
        candidates_sql=f"SELECT customer_id FROM customers WHERE workspace_id = '{ws}'"
        f" AND last_interaction_at > '{(T0 + timedelta(minutes=30)).isoformat()}'",
    )
    assert sorted((t.customer_id, t.kind) for t in ts) == [(cid, "entered") for cid in sorted(others[:100])]
    processed = _rows_processed(plan)
    assert processed < 30 * len(fresh), f"{processed} rows processed for {len(fresh)} candidates"


async def test_an_import_into_a_new_workspace_stays_linear(conn: asyncpg.Connection) -> None:
    # The statistics know many small workspaces and not this one: a constant workspace id is then
    # estimated at one customer, and a plan comparing each of its customers with every candidate
    # looked cheapest (a 20,000-row import took 26 s that way; 8,000 here took 2 s).
    parts = new_partitions(12)
    await conn.execute(
        "INSERT INTO customers (workspace_id, customer_id, partition)"
        " SELECT $1 || (i / 3), 'c' || i, $2 + i % 12 FROM generate_series(1, 9000) i", new_ws(), parts[0],
    )
    await conn.execute("ANALYZE customers")
    await conn.execute("ANALYZE memberships")
    ws = new_ws()
    seg = uuid.uuid4()
    ids = [f"c{i:04}" for i in range(8_000)]
    await conn.execute(
        "INSERT INTO customers (workspace_id, customer_id, partition)"
        " SELECT $1, id, $3 + i % 4 FROM unnest($2::text[]) WITH ORDINALITY AS u(id, i)", ws, ids, parts[0],
    )
    # As the import does: the rows' customers in a temporary table.
    await conn.execute(
        "CREATE TEMP TABLE imported ON COMMIT DROP AS SELECT unnest($1::text[]) AS customer_id", ids
    )
    ts, plan = await _diff_and_plan(
        conn, ws, seg, "List", "true", [], partitions=parts[:4], cause=CAUSE, at=T0,
        candidates_sql="SELECT customer_id FROM pg_temp.imported",
    )
    assert sorted((t.customer_id, t.seq, t.kind) for t in ts) == [(cid, 1, "entered") for cid in ids]
    processed = _rows_processed(plan)
    assert processed < 30 * len(ids), f"{processed} rows processed for {len(ids)} candidates"


async def test_the_counting_diff_writes_what_the_answering_one_does(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    answered, counted = uuid.uuid4(), uuid.uuid4()
    await pg.save_states(conn, [state(ws, f"c{i}", p, tags={"vip"} if i % 3 else set()) for i in range(30)])
    for step in range(2):
        await pg.save_states(conn, [state(ws, f"c{i}", p, tags={"vip"} if (i + step) % 2 else set())
                                    for i in range(0, 30, 4)])
        ts = await pg.diff_segment(conn, ws, answered, "A", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
        entered, exited = await pg.diff_segment_tally(
            conn, ws, counted, "C", VIP_SQL, [["vip"]], cause=CAUSE, at=T0
        )
        kinds = [t.kind for t in ts]
        assert (entered, exited) == (kinds.count("entered"), kinds.count("exited"))
        assert entered + exited > 0
    written = await conn.fetch(
        "SELECT segment_id, customer_id, seq, kind FROM transitions WHERE segment_id = ANY($1::uuid[])"
        " ORDER BY customer_id, seq", [answered, counted],
    )
    per_segment = {sid: [(r["customer_id"], r["seq"], r["kind"]) for r in written if r["segment_id"] == sid]
                   for sid in (answered, counted)}
    assert per_segment[answered] == per_segment[counted]
    counts = await pg.segment_member_counts(conn, [answered, counted])
    assert counts[answered] == counts[counted] > 0


async def test_a_full_diff_reaches_redis_through_the_unit(pool: asyncpg.Pool, redis: Redis) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    key = segment_key(ws, seg)
    try:
        async with partition_unit(pool, redis, [p, q]) as u:
            await pg.save_states(u.conn, [state(ws, f"c{i}", (p, q)[i % 2], tags={"vip"}) for i in range(50)])
            await pg.diff_segment(u.conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
        assert u.applied_ops == 50
        assert await read_set(redis, key) == {f"c{i}" for i in range(50)}
        async with partition_unit(pool, redis, [p, q]) as u:
            await pg.save_states(u.conn, [state(ws, f"c{i}", (p, q)[i % 2]) for i in range(0, 50, 5)])
            await pg.diff_segment(u.conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], cause=CAUSE, at=T0)
        assert await read_set(redis, key) == {f"c{i}" for i in range(50) if i % 5}
        async with pool.acquire() as conn:
            assert await pg.fetch_redis_ops(conn, [p, q]) == []
    finally:
        for k in await scan_keys(redis, f"sw:{{{glob_escape(ws)}}}:*"):
            await redis.delete(k)
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM memberships WHERE segment_id = $1", seg)
            await conn.execute("DELETE FROM segment_counts WHERE segment_id = $1", seg)
            await conn.execute("DELETE FROM customers WHERE workspace_id = $1", ws)
