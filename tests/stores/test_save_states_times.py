"""``save_states`` keeps ``customer_times`` from values parsed in Python (``pg_customers.time_values``);
``refresh_customer_times`` rebuilds it with the SQL readers. Both must produce the same rows for any
value: the ticker reads the table whichever writer filled it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.generators import SAFE_TEXT, stamp_like
from helpers.stores import new_partitions, new_ws, state
from segment_worker.stores import pg_customers
from segment_worker.stores import postgres as pg

# Values at the edges: Python cannot hold the first two in UTC (years 0 and 10000).
EDGES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:30:00-05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31",
    "0001-01-01",
    "2024-02-29",
    "2023-02-29",
    "2026-03-10T24:00:00Z",
    "2026-03-10T23:59:59.999999+23:59",
    "2026-03-10t10:00:00z",
    "2026-03-10 10:00:00-00:00",
    "2026-03-10\n",
    "2026-03-10T10:00:00Z\n",
    "２０２６-03-10",
    "",
    "1",
]


async def _declare(conn: asyncpg.Connection, ws: str, types: dict[str, str]) -> None:
    await conn.execute("INSERT INTO workspaces (id) VALUES ($1)", ws)
    await conn.executemany(
        "INSERT INTO attribute_defs (workspace_id, name, type) VALUES ($1, $2, $3)",
        [(ws, name, typ) for name, typ in types.items()],
    )


async def _rows(conn: asyncpg.Connection, ws: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in await conn.fetch(
            # As text: asyncpg cannot decode an instant in year 0.
            "SELECT attr, customer_id, partition, (value AT TIME ZONE 'UTC')::text, month_day"
            " FROM customer_times"
            " WHERE workspace_id = $1 ORDER BY 1, 2",
            ws,
        )
    ]


async def _saved_equals_rebuilt(conn: asyncpg.Connection, values: Sequence[object]) -> list[tuple[Any, ...]]:
    """Save one customer per value under a date, a datetime and a text attribute; answer the rows
    after the save, having checked that the SQL rebuild gives exactly the same."""
    ws = new_ws()
    (p,) = new_partitions(1)
    await _declare(conn, ws, {"d": "date", "t": "datetime", "x": "text"})
    states = [state(ws, f"c{i}", p, attrs={"d": v, "t": v, "x": v}) for i, v in enumerate(values)]
    await pg.save_states(conn, states)
    saved = await _rows(conn, ws)
    await conn.execute("DELETE FROM customer_times WHERE workspace_id = $1", ws)
    await pg.refresh_customer_times(conn, ws)
    assert saved == await _rows(conn, ws)
    return saved


async def test_edge_values_give_the_rows_the_sql_readers_give(conn: asyncpg.Connection) -> None:
    rows = await _saved_equals_rebuilt(conn, [*EDGES, 20260310, None, ["2026-03-10"]])
    by_value = {(a, int(c[1:])): (v, md) for a, c, _, v, md in rows}
    # Not vacuous: the years Python cannot hold in UTC reached the table, through SQL.
    assert by_value[("t", 0)] == ("0001-12-31 23:00:00 BC", 1231)
    assert by_value[("t", 1)] == ("10000-01-01 04:30:00", 101)
    assert by_value[("d", 4)] == ("0001-01-01 00:00:00", 101)  # asyncpg would send it as -infinity
    assert by_value[("d", 5)] == ("2024-02-29 00:00:00", 229)
    assert ("d", 6) not in by_value and ("t", 7) not in by_value  # 29 Feb 2023, hour 24
    assert by_value[("t", 8)] == ("2026-03-10 00:00:59.999999", 310)
    assert {a for a, _, _, _, _ in rows} == {"d", "t"}  # text attributes never get rows


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), extra=st.lists(SAFE_TEXT, max_size=10))
async def test_any_value_gives_the_rows_the_sql_readers_give(
    pool: asyncpg.Pool, seed: int, extra: list[str]
) -> None:
    r = random.Random(seed)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await _saved_equals_rebuilt(conn, [stamp_like(r) for _ in range(300)] + extra)
        finally:
            await tx.rollback()
    assert rows  # the generator makes valid values too


async def test_a_value_changed_or_unset_moves_or_removes_its_row(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    await _declare(conn, ws, {"d": "date"})
    s = state(ws, "c1", p, attrs={"d": "2026-01-02"})
    await pg.save_states(conn, [s])
    assert [r[3:] for r in await _rows(conn, ws)] == [("2026-01-02 00:00:00", 102)]
    s.attrs = {"d": "2026-12-25"}
    await pg.save_states(conn, [s])
    assert [r[3:] for r in await _rows(conn, ws)] == [("2026-12-25 00:00:00", 1225)]
    s.attrs = {"d": "soon"}
    await pg.save_states(conn, [s])
    assert await _rows(conn, ws) == []


def test_time_values_skips_what_cannot_be_a_date_or_datetime() -> None:
    s = state("ws", "c1", 0, attrs={"a": "gold", "b": 7, "c": "2026-01-02", "d": "2026-01-02T03:04:05+01:00"})
    ws, cid, attr, part, kind, value, raw = pg_customers.time_values([s])
    assert attr == ["c", "d"] and kind == ["date", "datetime"] and raw == [None, None]
    assert value == [datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)]
    assert ws == ["ws", "ws"] and cid == ["c1", "c1"] and part == [0, 0]


async def test_only_the_customers_named_in_times_of_are_resynced(conn: asyncpg.Connection) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)
    await _declare(conn, ws, {"renews": "date"})
    a, b = state(ws, "a", p), state(ws, "b", p)
    a.attrs["renews"] = b.attrs["renews"] = "2026-01-01"
    await pg.save_states(conn, [a, b])
    assert [r[:2] for r in await _rows(conn, ws)] == [("renews", "a"), ("renews", "b")]
    a.attrs["renews"], b.attrs["renews"], b.name = "2026-02-02", "2026-03-03", "B"
    # The caller says only a's dates changed: b's row is left as it is, b's other columns are saved.
    await pg.save_states(conn, [a, b], times_of={(ws, "a")})
    assert [(r[1], r[3][:10]) for r in await _rows(conn, ws)] == [("a", "2026-02-02"), ("b", "2026-01-01")]
    name_b = "SELECT name FROM customers WHERE workspace_id = $1 AND customer_id = 'b'"
    assert await conn.fetchval(name_b, ws) == "B"
    del a.attrs["renews"]
    await pg.save_states(conn, [a], times_of=set())
    assert [r[1] for r in await _rows(conn, ws)] == ["a", "b"]
    await pg.save_states(conn, [a], times_of={(ws, "a")})
    assert [r[1] for r in await _rows(conn, ws)] == ["b"]
