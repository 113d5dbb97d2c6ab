"""Property: for random customers, random nested rules over every operator, random instants and
timezones, the generated Python predicate and the SQL filter select exactly the same customers.

The generators are in ``test_rules_generators``. ``SEGMENT_WORKER_HYPOTHESIS=nightly`` runs 5000
examples instead of 300 (``SEGMENT_WORKER_HYPOTHESIS_EXAMPLES=n`` sets any number). One
connection serves the module and one COPY loads each example's customers (8–24 of them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from test_rules_generators import EXAMPLES, Scenario, conditions_of, scenarios
from test_rules_support import CATALOG, insert_states, make_state, new_workspace, sql_matches

from segment_worker.rules.compiled import compile_rule
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule
from segment_worker.state import CustomerState

# -- the property -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(pg_dsn)
    yield c
    await c.close()


def _describe(state: CustomerState, keys: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        if key.startswith("attributes."):
            out[key] = state.attrs_f.get(key.removeprefix("attributes."), "<absent>")
        else:
            out[key] = getattr(state, key + "_f", getattr(state, key))
    return out


async def _report(
    conn: asyncpg.Connection, ws: str, states: list[CustomerState], ctx: TimeContext, doc: dict[str, Any]
) -> None:
    """Fail naming the smallest part of ``doc`` (a single condition when one suffices) on which the
    evaluators disagree, with the customers concerned."""
    parts = [*conditions_of(doc), doc]
    for part in parts:
        compiled = compile_rule(parse_rule(part, CATALOG), CATALOG)
        bound = compiled.bind(ctx)
        python = {s.customer_id for s in states if compiled.matches(s, bound)}
        sql = await sql_matches(conn, ws, compiled, bound)
        if python != sql:
            by_id = {s.customer_id: s for s in states}
            diff = {
                cid: ("only python" if cid in python else "only sql", _describe(by_id[cid], compiled.fields))
                for cid in sorted(python ^ sql)
            }
            pytest.fail(f"evaluators disagree at {ctx.now.isoformat()} in {ctx.tz.key} for {part}: {diff}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
async def test_python_predicate_and_sql_select_the_same_customers(
    conn: asyncpg.Connection, scenario: Scenario
) -> None:
    ctx, people, docs = scenario
    ws = new_workspace()
    states = [make_state(ws, f"c{i}", **p) for i, p in enumerate(people)]
    await insert_states(conn, states)
    try:
        for doc in docs:
            compiled = compile_rule(parse_rule(doc, CATALOG), CATALOG)
            bound = compiled.bind(ctx)
            python = {s.customer_id for s in states if compiled.matches(s, bound)}
            sql = await sql_matches(conn, ws, compiled, bound)
            if python != sql:
                await _report(conn, ws, states, ctx, doc)
    finally:
        await conn.execute("DELETE FROM customers WHERE workspace_id = $1", ws)
