"""Shared helpers of the rule tests: a catalogue with every type, customer states normalised the way
the writer normalises them, and the SQL side of an evaluation against the real ``customers`` table.

The state -> row mapping here is the test's own (the real store does the same mapping); the
tests at the bottom check it round-trips.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from segment_worker.rules.compiled import CompiledRule, compile_rule
from segment_worker.rules.model import Catalog, FieldDef, FieldType
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule
from segment_worker.state import CustomerState
from segment_worker.text import fold

ATTRIBUTES: Mapping[str, FieldDef] = {
    fd.key: fd
    for fd in (
        FieldDef("attributes.t", FieldType.TEXT),
        FieldDef("attributes.größe", FieldType.TEXT),
        FieldDef("attributes.n", FieldType.NUMBER),
        FieldDef("attributes.b", FieldType.BOOLEAN),
        FieldDef("attributes.d", FieldType.DATE),
        FieldDef("attributes.dt", FieldType.DATETIME),
        FieldDef("attributes.s", FieldType.SELECT, ("Gold", "Silver", "Straße", "İstanbul")),
        FieldDef("attributes.so", FieldType.SELECT),
        FieldDef("attributes.m", FieldType.MULTI_SELECT, ("Red", "Green", "ß", "é")),
        FieldDef("attributes.mo", FieldType.MULTI_SELECT),
    )
}
CATALOG = Catalog.for_workspace(ATTRIBUTES)


def fold_json(value: object) -> object:
    """``attrs_f`` of a raw attribute value: strings folded, strings inside arrays too."""
    if isinstance(value, str):
        return fold(value)
    if isinstance(value, list):
        return [fold(v) if isinstance(v, str) else v for v in value]
    return value


def make_state(
    ws: str,
    cid: str,
    *,
    phone: str | None = None,
    name: str | None = None,
    email: str | None = None,
    language: str | None = None,
    country: str | None = None,
    platform: str | None = None,
    created_at: datetime | None = None,
    last_interaction_at: datetime | None = None,
    last_incoming_at: datetime | None = None,
    marketing_opt_out: bool = False,
    tags: Iterable[str] = (),
    attrs: Mapping[str, Any] | None = None,
) -> CustomerState:
    """A state as the writer stores it: folded copies of text, folded tags, ``attrs_f``."""
    language = language.lower() if language is not None else None
    platform = platform.lower() if platform is not None else None
    country = country.upper() if country is not None else None
    tags = list(tags)
    raw_attrs = dict(attrs or {})
    return CustomerState(
        workspace_id=ws,
        customer_id=cid,
        partition=0,
        phone=phone,
        name=name,
        email=email,
        language=language,
        country=country,
        platform=platform,
        phone_f=None if phone is None else fold(phone),
        name_f=None if name is None else fold(name),
        email_f=None if email is None else fold(email),
        language_f=None if language is None else fold(language),
        country_f=None if country is None else fold(country),
        platform_f=None if platform is None else fold(platform),
        created_at=created_at,
        last_interaction_at=last_interaction_at,
        last_incoming_at=last_incoming_at,
        marketing_opt_out=marketing_opt_out,
        tags={fold(t) for t in tags},
        tag_labels={fold(t): t for t in tags},
        attrs=raw_attrs,
        attrs_f={k: fold_json(v) for k, v in raw_attrs.items()},
    )


_COLUMNS = (
    "workspace_id",
    "customer_id",
    "partition",
    "phone",
    "name",
    "email",
    "language",
    "country",
    "platform",
    "phone_f",
    "name_f",
    "email_f",
    "language_f",
    "country_f",
    "platform_f",
    "created_at",
    "last_interaction_at",
    "last_incoming_at",
    "marketing_opt_out",
    "tags",
    "tag_labels",
    "attrs",
    "attrs_f",
)
_JSON_COLUMNS = frozenset(("tag_labels", "attrs", "attrs_f"))


def state_row(s: CustomerState) -> tuple[object, ...]:
    """The ``customers`` row of a state (jsonb columns as JSON text, tags sorted)."""
    row: list[object] = []
    for col in _COLUMNS:
        value = getattr(s, col)
        if col in _JSON_COLUMNS:
            value = json.dumps(value)
        elif col == "tags":
            value = sorted(value)
        row.append(value)
    return tuple(row)


async def insert_states(conn: asyncpg.Connection, states: Sequence[CustomerState]) -> None:
    """COPY the states into ``customers`` (one round trip)."""
    await conn.copy_records_to_table("customers", records=[state_row(s) for s in states], columns=_COLUMNS)


async def delete_workspace(conn: asyncpg.Connection, ws: str) -> None:
    await conn.execute("DELETE FROM customers WHERE workspace_id = $1", ws)


async def sql_matches(
    conn: asyncpg.Connection, ws: str, compiled: CompiledRule, bound: tuple[object, ...]
) -> set[str]:
    """Customer ids of ``ws`` that the rule's SQL selects, with the very values ``matches`` got."""
    where, params = compiled.sql_where_bound(bound, first_param=2)
    rows = await conn.fetch(
        f"SELECT customer_id FROM customers c WHERE c.workspace_id = $1 AND NOT c.deleted AND ({where})",
        ws,
        *params,
    )
    return {r["customer_id"] for r in rows}


def compile_json(doc: object, catalog: Catalog = CATALOG) -> CompiledRule:
    return compile_rule(parse_rule(doc, catalog), catalog)


async def evaluate_both(
    conn: asyncpg.Connection,
    doc: object,
    states: Sequence[CustomerState],
    ctx: TimeContext,
    catalog: Catalog = CATALOG,
) -> tuple[set[str], set[str]]:
    """(ids matched in Python, ids matched in SQL) of ``states`` for rule ``doc`` at ``ctx``.

    The states must belong to one workspace that holds nothing else; it is emptied afterwards.
    """
    compiled = compile_json(doc, catalog)
    bound = compiled.bind(ctx)
    python = {s.customer_id for s in states if compiled.matches(s, bound)}
    ws = states[0].workspace_id
    await insert_states(conn, states)
    try:
        sql = await sql_matches(conn, ws, compiled, bound)
    finally:
        await delete_workspace(conn, ws)
    return python, sql


def new_workspace() -> str:
    return f"rules-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
async def conn(pg_dsn: str) -> Any:
    c = await asyncpg.connect(pg_dsn)
    yield c
    await c.close()


async def test_state_rows_round_trip_through_the_customers_table(conn: asyncpg.Connection) -> None:
    ws = new_workspace()
    state = make_state(
        ws,
        "c1",
        name="Straße",
        language="AR",
        country="om",
        tags=["VIP", "Lead"],
        attrs={"t": "İstanbul", "m": ["Red", 5], "n": 10**400},
    )
    await insert_states(conn, [state])
    try:
        row = await conn.fetchrow(
            "SELECT name, name_f, language, country_f, tags, attrs_f::text AS af FROM customers"
            " WHERE workspace_id = $1",
            ws,
        )
    finally:
        await delete_workspace(conn, ws)
    assert row is not None
    assert (row["name"], row["name_f"], row["language"], row["country_f"]) == (
        "Straße",
        "strasse",
        "ar",
        "om",
    )
    assert sorted(row["tags"]) == ["lead", "vip"]
    assert json.loads(row["af"]) == {"t": fold("İstanbul"), "m": ["red", 5], "n": 10**400}
