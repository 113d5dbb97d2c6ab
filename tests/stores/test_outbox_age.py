"""The age of the outbox (``pg_outbox.oldest_unsent``, behind ``outbox_oldest_unsent_seconds``) and
the diff's entered/exited tally (behind the API's transitions counter)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from helpers.stores import T0, new_partitions, new_ws, state, transition
from segment_worker.stores import pg_outbox
from segment_worker.stores import postgres as pg


async def test_the_oldest_unsent_row_is_the_first_past_each_cursor(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    p, q, r = new_partitions(3)
    seg = uuid.uuid4()
    # p: rows at T0+1h, T0+2h (the first will be sent); q: T0+30m, T0+3h; r: nothing.
    await pg.write_transitions(conn, [
        transition(ws, seg, "a", p, 1, "entered", at=T0 + timedelta(hours=1)),
        transition(ws, seg, "a", p, 2, "exited", at=T0 + timedelta(hours=2)),
        transition(ws, seg, "b", q, 1, "entered", at=T0 + timedelta(minutes=30)),
        transition(ws, seg, "b", q, 2, "exited", at=T0 + timedelta(hours=3)),
    ])
    assert await pg_outbox.oldest_unsent(conn, [p, q, r]) == T0 + timedelta(minutes=30)
    assert await pg_outbox.oldest_unsent(conn, [p, r]) == T0 + timedelta(hours=1)
    assert await pg_outbox.oldest_unsent(conn, [r]) is None
    ids = dict(await conn.fetch(
        "SELECT partition, min(id) FROM transitions WHERE partition = ANY($1::int[]) GROUP BY 1", [p, q]
    ))
    await pg_outbox.mark_sent(conn, {p: ids[p], q: ids[q] + 1})  # p: first row sent; q: both
    assert await pg_outbox.oldest_unsent(conn, [p, q]) == T0 + timedelta(hours=2)
    assert await pg_outbox.oldest_unsent(conn, [q]) is None


async def test_the_diff_tally_counts_entered_and_exited(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    seg = uuid.uuid4()
    vip = "c.tags @> $1::text[]"
    cause = {"kind": "rules_changed"}
    await pg.save_states(conn, [state(ws, f"c{i}", p, tags={"vip"} if i < 5 else set()) for i in range(8)])
    assert await pg.diff_segment_tally(conn, ws, seg, "V", vip, [["vip"]], cause=cause, at=T0) == (5, 0)
    # c0, c1 stop being VIPs, c6 becomes one.
    await pg.save_states(conn, [state(ws, "c0", p), state(ws, "c1", p), state(ws, "c6", p, tags={"vip"})])
    assert await pg.diff_segment_tally(conn, ws, seg, "V", vip, [["vip"]], cause=cause, at=T0) == (1, 2)
    assert await pg.diff_segment_tally(conn, ws, seg, "V", vip, [["vip"]], cause=cause, at=T0) == (0, 0)
