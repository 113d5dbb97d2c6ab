"""PostgreSQL store functions against a real database. Each test runs in a transaction that is
rolled back, so tests see only their own rows."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from helpers.stores import T0, full_state, new_partitions, new_ws, state, transition
from segment_worker.stores import OpKind, OptOutChange, RedisOp
from segment_worker.stores import postgres as pg
from segment_worker.stores.errors import MembershipConflictError
from segment_worker.stores.keys import optout_key, segment_key


async def _declare(conn: asyncpg.Connection, ws: str, **types: str) -> None:
    await conn.execute("INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT DO NOTHING", ws)
    for name, typ in types.items():
        await conn.execute(
            "INSERT INTO attribute_defs (workspace_id, name, type) VALUES ($1, $2, $3)"
            " ON CONFLICT (workspace_id, name) DO UPDATE SET type = EXCLUDED.type",
            ws,
            name,
            typ,
        )


async def _times(conn: asyncpg.Connection, ws: str) -> dict[tuple[str, str], tuple[datetime, int]]:
    rows = await conn.fetch(
        "SELECT attr, customer_id, value, month_day FROM customer_times WHERE workspace_id = $1", ws
    )
    return {(r["attr"], r["customer_id"]): (r["value"], r["month_day"]) for r in rows}


async def test_states_round_trip_every_column(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    saved = [full_state(ws, "c1", p), state(ws, "c2", p)]
    assert await pg.save_states(conn, saved) == 2
    got = await pg.load_records(conn, [(ws, "c1"), (ws, "c2"), (ws, "nobody")])
    assert got[(ws, "c1")].state == saved[0]
    assert got[(ws, "c2")].state == saved[1]
    assert got[(ws, "nobody")].state is None and got[(ws, "nobody")].memberships == {}

    changed = dataclasses.replace(
        saved[0], name=None, name_f=None, tags=set(), tag_labels={}, attrs={}, deleted=True
    )
    await pg.save_states(conn, [changed])
    assert (await pg.load_records(conn, [(ws, "c1")]))[(ws, "c1")].state == changed


async def test_a_key_saved_twice_in_one_batch_keeps_the_last_state(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    await pg.save_states(conn, [state(ws, "c1", p, name="first"), state(ws, "c1", p, name="second")])
    got = (await pg.load_records(conn, [(ws, "c1")]))[(ws, "c1")].state
    assert got is not None and got.name == "second"


async def test_saving_an_unchanged_state_rewrites_no_row(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    s = full_state(ws, "c1", p)
    await pg.save_states(conn, [s])

    async def ctid() -> str:
        return str(await conn.fetchval("SELECT ctid FROM customers WHERE workspace_id = $1", ws))

    before = await ctid()
    await pg.save_states(conn, [full_state(ws, "c1", p)])  # equal, not the same object
    assert await ctid() == before
    await pg.save_states(conn, [dataclasses.replace(s, versions={**s.versions, "f:x": (1, "e-9")})])
    assert await ctid() != before


async def test_an_attribute_or_opt_out_change_rewrites_no_index_entry(conn: asyncpg.Connection) -> None:
    # A HOT update: no indexed column changed (migration 007) and the page had room for the new
    # version (008). A quarter of the customers change at once, as batches do.
    ws = new_ws()
    (p,) = new_partitions(1)
    states = [full_state(ws, f"c{i:03}", p) for i in range(400)]
    await pg.save_states(conn, states)
    changed = [
        dataclasses.replace(s, attrs={**s.attrs, "plan": "gold"}, attrs_f={**s.attrs_f, "plan": "gold"},
                            marketing_opt_out=not s.marketing_opt_out)
        for s in states[::4]
    ]

    async def counts() -> tuple[int, int]:
        # Deltas: a backend's pending counts may still hold its earlier transactions' (PG ≥ 15).
        row = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
            " WHERE relid = 'customers'::regclass"
        )
        assert row is not None
        return row[0], row[1]

    (upd0, hot0) = await counts()
    await pg.save_states(conn, changed)
    (upd1, hot1) = await counts()
    assert (upd1 - upd0, hot1 - hot0) == (100, 100)


async def test_customer_times_follow_declared_date_attributes(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    await _declare(conn, ws, birthday="date", seen="datetime", tier="text")
    s = full_state(ws, "c1", p)
    await pg.save_states(conn, [s])
    assert await _times(conn, ws) == {
        ("birthday", "c1"): (datetime(1992, 2, 29, tzinfo=UTC), 229),
        ("seen", "c1"): (datetime(2026, 11, 21, 21, 0, tzinfo=UTC), 1121),  # UTC day of the instant
    }
    # An invalid date and an unset datetime both remove their rows.
    s.attrs = {**s.attrs, "birthday": "1992-02-30"}
    del s.attrs["seen"]
    await pg.save_states(conn, [s])
    assert await _times(conn, ws) == {}
    # A wrong JSON type counts as missing too.
    s.attrs["birthday"] = 19920229
    await pg.save_states(conn, [s])
    assert await _times(conn, ws) == {}


async def test_refresh_customer_times_after_declaring_an_attribute(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    await _declare(conn, ws)
    await pg.save_states(conn, [full_state(ws, "c1", p), full_state(ws, "c2", p)])
    assert await _times(conn, ws) == {}
    await _declare(conn, ws, birthday="date")
    assert await pg.refresh_customer_times(conn, ws, ["birthday"]) == 2
    assert set(await _times(conn, ws)) == {("birthday", "c1"), ("birthday", "c2")}
    await _declare(conn, ws, birthday="text")  # retyped: no longer a date
    assert await pg.refresh_customer_times(conn, ws) == 0
    assert await _times(conn, ws) == {}


async def _joined(conn: asyncpg.Connection, seg: uuid.UUID) -> dict[str, object]:
    """Stored joined_at by customer (records do not carry it: the stores write it)."""
    rows = await conn.fetch("SELECT customer_id, joined_at FROM memberships WHERE segment_id = $1", seg)
    return {r["customer_id"]: r["joined_at"] for r in rows}


async def _rows(conn: asyncpg.Connection, sql: str, *args: object) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await conn.fetch(sql, *args)]


async def test_write_transitions_updates_memberships_counts_outbox_and_redis_ops(
    conn: asyncpg.Connection,
) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    key = segment_key(ws, seg)
    t1 = T0 + timedelta(seconds=1)
    await pg.write_transitions(
        conn,
        [
            transition(ws, seg, "c1", p, 1, "entered"),
            transition(ws, seg, "c2", q, 1, "entered"),
            # enters and leaves within one batch: one row, seq 2, a net SREM, count delta 0
            transition(ws, seg, "c3", p, 1, "entered"),
            transition(ws, seg, "c3", p, 2, "exited", at=t1),
        ],
    )
    recs = await pg.load_records(conn, [(ws, "c1"), (ws, "c3")])
    m1 = recs[(ws, "c1")].memberships[seg]
    assert (m1.is_member, m1.seq, m1.joined_at) == (True, 1, None)  # records keep no joined_at
    m3 = recs[(ws, "c3")].memberships[seg]
    assert (m3.is_member, m3.seq) == (False, 2)
    assert await _joined(conn, seg) == {"c1": T0, "c2": T0, "c3": None}
    assert await pg.segment_member_counts(conn, [seg]) == {seg: 2}
    outbox = await _rows(
        conn,
        "SELECT customer_id, seq, kind, cause FROM transitions WHERE segment_id = $1 ORDER BY id",
        seg,
    )
    assert outbox == [
        ("c1", 1, "entered", {"kind": "event", "event_id": "e-1"}),
        ("c2", 1, "entered", {"kind": "event", "event_id": "e-1"}),
        ("c3", 1, "entered", {"kind": "event", "event_id": "e-1"}),
        ("c3", 2, "exited", {"kind": "event", "event_id": "e-2"}),
    ]
    # Pending Redis ops: one per transition, in commit order, until the partitions' cursors move.
    ops = await pg.fetch_redis_ops(conn, [p, q])
    assert [(o.partition, o.op, o.key, o.member) for o in ops] == [
        (p, OpKind.SADD, key, "c1"),
        (q, OpKind.SADD, key, "c2"),
        (p, OpKind.SADD, key, "c3"),
        (p, OpKind.SREM, key, "c3"),
    ]

    await pg.write_transitions(conn, [transition(ws, seg, "c1", p, 2, "exited", at=t1)])
    assert await pg.segment_member_counts(conn, [seg]) == {seg: 1}
    assert await _rows(
        conn, "SELECT partition, count FROM segment_counts WHERE segment_id = $1 ORDER BY partition", seg
    ) == [(p, 0), (q, 1)]


async def test_write_transitions_refuses_what_does_not_continue_the_stored_row(
    conn: asyncpg.Connection,
) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    await pg.write_transitions(conn, [transition(ws, seg, "c1", p, 1, "entered")])
    before = await conn.fetchval("SELECT count(*) FROM transitions WHERE segment_id = $1", seg)
    for stale in (
        [transition(ws, seg, "c1", p, 1, "entered")],  # a replay of seq 1
        [transition(ws, seg, "c1", p, 2, "entered")],  # enters while a member
        [transition(ws, seg, "c1", p, 3, "exited")],  # skips seq 2
        [transition(ws, seg, "c2", p, 1, "entered"), transition(ws, seg, "c1", p, 1, "exited")],
    ):
        # A refusal may abort the enclosing transaction (a replayed new pair fails on the primary
        # key): each batch in a savepoint of its own, as a unit's rollback would leave it.
        with pytest.raises(MembershipConflictError):
            async with conn.transaction():
                await pg.write_transitions(conn, stale)
    # nothing of the refused batches was written, not even their valid parts (c2)
    assert await conn.fetchval("SELECT count(*) FROM transitions WHERE segment_id = $1", seg) == before
    assert await pg.segment_member_counts(conn, [seg]) == {seg: 1}
    assert (await pg.load_records(conn, [(ws, "c2")]))[(ws, "c2")].memberships == {}


async def test_write_optout_queues_the_last_change_per_customer(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    await pg.write_optout(
        conn,
        [
            OptOutChange(ws, "c1", p, True),
            OptOutChange(ws, "c2", p, True),
            OptOutChange(ws, "c1", p, False),
        ],
    )
    ops = await pg.fetch_redis_ops(conn, [p])
    assert {(o.op, o.key, o.member) for o in ops} == {
        (OpKind.SREM, optout_key(ws), "c1"),
        (OpKind.SADD, optout_key(ws), "c2"),
    }


VIP_SQL = "c.tags @> $1::text[]"


async def _diff(
    conn: asyncpg.Connection, ws: str, seg: uuid.UUID, **kw: object
) -> list[tuple[str, int, str]]:
    kw.setdefault("cause", {"kind": "rules_changed"})
    kw.setdefault("at", T0)
    ts = await pg.diff_segment(conn, ws, seg, "VIPs", VIP_SQL, [["vip"]], **kw)  # type: ignore[arg-type]
    return [(t.customer_id, t.seq, t.kind) for t in ts]


async def test_diff_segment_enters_exits_and_continues_seq(conn: asyncpg.Connection) -> None:
    ws, other_ws = new_ws(), new_ws()
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    await pg.save_states(
        conn,
        [
            state(ws, "c1", p, tags={"VIP"}),
            state(ws, "c2", p, tags={"vip", "lead"}),
            state(ws, "c3", p, tags={"lead"}),
            state(other_ws, "c9", p, tags={"vip"}),  # another workspace: never a member
        ],
    )
    assert await _diff(conn, ws, seg) == [("c1", 1, "entered"), ("c2", 1, "entered")]
    assert await _diff(conn, ws, seg) == []  # nothing changed: nothing to write
    assert await pg.segment_member_counts(conn, [seg]) == {seg: 2}

    await pg.save_states(conn, [state(ws, "c1", p)])
    assert await _diff(conn, ws, seg, at=T0 + timedelta(minutes=1)) == [("c1", 2, "exited")]
    await pg.save_states(conn, [state(ws, "c1", p, tags={"vip"})])
    assert await _diff(conn, ws, seg, at=T0 + timedelta(minutes=2)) == [("c1", 3, "entered")]
    # a deleted customer leaves
    await pg.save_states(conn, [state(ws, "c2", p, tags={"vip"}, deleted=True)])
    assert await _diff(conn, ws, seg) == [("c2", 2, "exited")]

    recs = await pg.load_records(conn, [(ws, "c1"), (ws, "c2")])
    m1, m2 = recs[(ws, "c1")].memberships[seg], recs[(ws, "c2")].memberships[seg]
    assert (m1.is_member, m1.seq) == (True, 3)
    assert (m2.is_member, m2.seq) == (False, 2)
    assert await _joined(conn, seg) == {"c1": T0 + timedelta(minutes=2), "c2": None}
    assert await pg.segment_member_counts(conn, [seg]) == {seg: 1}
    history = await _rows(
        conn,
        "SELECT customer_id, seq, kind, cause, segment_name FROM transitions"
        " WHERE segment_id = $1 ORDER BY id",
        seg,
    )
    cause = {"kind": "rules_changed"}
    assert history == [
        ("c1", 1, "entered", cause, "VIPs"),
        ("c2", 1, "entered", cause, "VIPs"),
        ("c1", 2, "exited", cause, "VIPs"),
        ("c1", 3, "entered", cause, "VIPs"),
        ("c2", 2, "exited", cause, "VIPs"),
    ]
    # Pending Redis ops: each diff's transitions and, with them, its one redis_ops row per direction
    # (what a unit applies after commit without reading the transitions back); each in commit order.
    ops = await pg.fetch_redis_ops(conn, [p])
    rows = {r[0] for r in await conn.fetch("SELECT id FROM redis_ops WHERE partition = $1", p)}
    expected = [
        (OpKind.SADD, "c1"),
        (OpKind.SADD, "c2"),
        (OpKind.SREM, "c1"),
        (OpKind.SADD, "c1"),
        (OpKind.SREM, "c2"),
    ]
    assert [(o.op, o.member) for o in ops if o.id in rows] == expected
    assert [(o.op, o.member) for o in ops if o.id not in rows] == expected
    assert {o.key for o in ops} == {segment_key(ws, seg)}


async def test_diff_segment_continues_rows_written_by_write_transitions(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    await pg.save_states(conn, [state(ws, "c1", p, tags={"vip"})])
    await pg.write_transitions(
        conn, [transition(ws, seg, "c1", p, 1, "entered"), transition(ws, seg, "c1", p, 2, "exited")]
    )
    assert await _diff(conn, ws, seg) == [("c1", 3, "entered")]
    await pg.write_transitions(conn, [transition(ws, seg, "c1", p, 4, "exited")])
    assert await _diff(conn, ws, seg) == [("c1", 5, "entered")]


async def test_diff_segment_restricted_to_partitions_and_candidates(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    p, q = new_partitions(2)
    seg = uuid.uuid4()
    await pg.save_states(
        conn,
        [
            state(ws, "a1", p, tags={"vip"}),
            state(ws, "a2", p, tags={"vip"}),
            state(ws, "b1", q, tags={"vip"}),
        ],
    )
    assert await _diff(conn, ws, seg, partitions=[q]) == [("b1", 1, "entered")]
    # Nobody matches any more, but only the candidate a1 of partition p is looked at.
    await pg.save_states(conn, [state(ws, c, part) for c, part in (("a1", p), ("a2", p), ("b1", q))])
    ts = await pg.diff_segment(
        conn,
        ws,
        seg,
        "VIPs",
        VIP_SQL,
        [["vip"], ws, ["a1", "b1"]],
        partitions=[p],
        candidates_sql="SELECT customer_id FROM customers WHERE workspace_id = $2 AND customer_id = ANY($3)",
        cause={"kind": "time"},
        at=T0,
    )
    assert ts == []  # a1 was never a member; b1 is outside the partitions
    await pg.save_states(conn, [state(ws, "a1", p, tags={"vip"}), state(ws, "a2", p, tags={"vip"})])
    ts = await pg.diff_segment(
        conn,
        ws,
        seg,
        "VIPs",
        VIP_SQL,
        [["vip"], ws, ["a1"]],
        partitions=[p],
        candidates_sql="SELECT customer_id FROM customers WHERE workspace_id = $2 AND customer_id = ANY($3)",
        cause={"kind": "time"},
        at=T0,
    )
    assert [(t.customer_id, t.partition, t.seq, t.kind, t.cause) for t in ts] == [
        ("a1", p, 1, "entered", {"kind": "time"})
    ]
    assert await _diff(conn, ws, seg) == [("a2", 1, "entered"), ("b1", 2, "exited")]


async def test_delete_segment_rows_keeps_history_and_queues_a_del(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    seg, other = uuid.uuid4(), uuid.uuid4()
    await pg.write_transitions(
        conn,
        [
            transition(ws, seg, "c1", p, 1, "entered"),
            transition(ws, seg, "c2", p, 1, "entered"),
            transition(ws, seg, "c2", p, 2, "exited"),
            transition(ws, other, "c1", p, 1, "entered"),
        ],
    )
    assert await pg.delete_segment_rows(conn, ws, seg, partition=p) == 1
    assert await conn.fetchval("SELECT count(*) FROM memberships WHERE segment_id = $1", seg) == 0
    assert await pg.segment_member_counts(conn, [seg, other]) == {seg: 0, other: 1}
    assert await conn.fetchval("SELECT count(*) FROM transitions WHERE segment_id = $1", seg) == 3
    ops = await pg.fetch_redis_ops(conn, [p])
    assert ops[-1] == RedisOp(p, OpKind.DEL, segment_key(ws, seg), None, ops[-1].id)
