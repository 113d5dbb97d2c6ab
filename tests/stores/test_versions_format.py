"""``customers.versions`` in both stored formats (migration 014): the map (the default) and the
groups by event (``Settings.versions_format = "grouped"``). Rows of either format load to the
same state, and ``sw_versions_merge`` (the only SQL that changes versions: an import reviving a
tombstone) keeps a row's format while it sets keys."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import orjson
import pytest

from helpers.stores import full_state, new_partitions, new_ws
from segment_worker.config import VersionsFormat
from segment_worker.state import CustomerState
from segment_worker.stores import postgres as pg
from segment_worker.stores.pg_customers import grouped_versions, read_versions
from segment_worker.timeutil import Version


@pytest.mark.parametrize("versions_format", ["map", "grouped"])
async def test_states_saved_in_either_format_load_as_saved(
    conn: asyncpg.Connection, versions_format: VersionsFormat
) -> None:
    ws = new_ws()
    (p,) = new_partitions(1)

    def saved() -> CustomerState:
        s = full_state(ws, "c1", p)
        s.versions |= {"a:tier": (1_700_000_000_000_002, "e-2"), "s:last": (1_700_000_000_000_003, "e-3")}
        return s

    s = saved()
    await pg.save_states(conn, [s], versions_format=versions_format)
    assert s == saved()  # the state saved is left as it was
    stored = await conn.fetchval("SELECT versions FROM customers WHERE workspace_id = $1", ws)
    if versions_format == "grouped":
        assert sorted(map(len, stored)) == [3, 3, 4]  # one group per event: e-2 holds two keys
    else:
        assert stored == {k: list(v) for k, v in s.versions.items()}
    got = (await pg.load_records(conn, [(ws, "c1")]))[(ws, "c1")].state
    assert got == s
    assert got is not None and got.versions["a:tier"] is got.versions["t:vip"]  # one tuple per event

    # Saving the state loaded, unchanged, rewrites no row: the groups come out in the same order.
    ctid = await conn.fetchval("SELECT ctid FROM customers WHERE workspace_id = $1", ws)
    await pg.save_states(conn, [got], versions_format=versions_format)
    assert await conn.fetchval("SELECT ctid FROM customers WHERE workspace_id = $1", ws) == ctid


async def test_a_key_in_two_groups_keeps_the_greater_version(conn: asyncpg.Connection) -> None:
    # Never written so; read safely all the same.
    ws = new_ws()
    (p,) = new_partitions(1)
    await pg.save_states(conn, [full_state(ws, "c1", p)])
    await conn.execute(
        "UPDATE customers SET versions = $2 WHERE workspace_id = $1",
        ws,
        [[5, "e-5", "f:name"], [9, "e-9", "f:name", "t:x"], [7, "e-7", "f:name"]],
    )
    got = (await pg.load_records(conn, [(ws, "c1")]))[(ws, "c1")].state
    assert got is not None and got.versions == {"f:name": (9, "e-9"), "t:x": (9, "e-9")}


def _random_versions(rnd: random.Random, keys: list[str]) -> dict[str, Version]:
    events = [(rnd.randrange(1, 50), f"e-{i}") for i in range(rnd.randrange(1, 6))]
    return {k: rnd.choice(events) for k in rnd.sample(keys, rnd.randrange(0, len(keys)))}


async def test_merge_sets_keys_in_the_format_of_the_row(conn: asyncpg.Connection) -> None:
    # Expectation: the map folded in Python ({**v, **add}); the same random cases through both
    # stored formats of v, in one statement.
    rnd = random.Random(14)
    keys = [f"{kind}:{n}" for kind in "fat" for n in ("x", "y", "z", "w")] + ["s:last"]
    cases = [(_random_versions(rnd, keys), _random_versions(rnd, keys)) for _ in range(300)]
    maps = [orjson.dumps(old).decode() for old, _ in cases]
    groups = [orjson.dumps(grouped_versions(old)).decode() for old, _ in cases]
    adds = [orjson.dumps(add).decode() for _, add in cases]
    rows = await conn.fetch(
        "SELECT sw_versions_merge(m::jsonb, a::jsonb) AS from_map,"
        " sw_versions_merge(g::jsonb, a::jsonb) AS from_groups"
        " FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(m, g, a, ord) ORDER BY x.ord",
        maps,
        groups,
        adds,
    )
    for (old, add), row in zip(cases, rows, strict=True):
        want = {**old, **add}
        from_map: Any = row["from_map"]
        from_groups: Any = row["from_groups"]
        assert isinstance(from_map, dict) and read_versions(from_map) == want
        assert isinstance(from_groups, list) and read_versions(from_groups) == want
        # Each key in one group only, and no group without keys.
        named = [k for g in from_groups for k in g[2:]]
        assert len(named) == len(set(named)) == len(want)
        assert all(len(g) > 2 for g in from_groups)


def test_grouping_round_trips() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        v = _random_versions(rnd, [f"a:{i}" for i in range(30)])
        assert read_versions(grouped_versions(v)) == v
        assert read_versions({k: list(x) for k, x in v.items()}) == v
