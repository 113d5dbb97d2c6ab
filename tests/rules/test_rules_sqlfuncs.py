"""The typed attribute readers of migration 002 (``sw_try_date``, ``sw_try_timestamptz``, ``sw_num``,
``sw_str``, ``sw_str_array``) return NULL exactly where the Python evaluator sees a missing value,
and otherwise the same value."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.generators import SAFE_TEXT, stamp_like
from segment_worker.rules.predicate import as_number, as_strings, as_text
from segment_worker.timeutil import to_micros, try_date, try_datetime


@pytest.fixture(scope="module")
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(pg_dsn)
    yield c
    await c.close()






@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), extra=st.lists(SAFE_TEXT, max_size=20))
async def test_date_and_datetime_readers_accept_what_python_accepts(
    conn: asyncpg.Connection, seed: int, extra: list[str]
) -> None:
    r = random.Random(seed)
    await _agree(conn, [stamp_like(r) for _ in range(2000)] + extra)


async def _agree(conn: asyncpg.Connection, values: list[str]) -> None:
    rows = await conn.fetch(
        "SELECT sw_try_date(to_jsonb(v)) AS d,"
        " extract(epoch FROM sw_try_timestamptz(to_jsonb(v))) * 1000000 AS us"
        " FROM unnest($1::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
        values,
    )
    for value, row in zip(values, rows, strict=True):
        assert row["d"] == try_date(value), value
        dt = try_datetime(value)
        assert row["us"] == (None if dt is None else Decimal(to_micros(dt))), value


def test_the_generator_reaches_valid_and_invalid_values() -> None:
    r = random.Random(1)
    values = [stamp_like(r) for _ in range(2000)]
    dates = [try_date(v) is not None for v in values if len(v) == 10]
    stamps = [try_datetime(v) is not None for v in values if len(v) > 10]
    assert 0.2 < sum(dates) / len(dates) < 0.9
    assert 0.2 < sum(stamps) / len(stamps) < 0.9


async def test_extreme_and_odd_timestamps_agree(conn: asyncpg.Connection) -> None:
    values = [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-23:59",
        "2024-02-29T24:00:00Z",
        "2024-01-01T10:00:00+16:00",
        "2024-01-01T10:00:00+05:99",
        "2024-01-01t10:00:00.123456z",
        "2024-01-01T10:00:00+23:60",
        "2024-04-31",
        "2023-02-29",
        "2024-01-01T10:60:00Z",
    ]
    await _agree(conn, values)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=5),
    lambda children: st.lists(children, max_size=3),
    max_leaves=5,
)
NUMBER_TEXTS = st.sampled_from(
    (
        "1e400",
        "-1e400",
        "1e-400",
        "-1e-400",
        "4.9e-324",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "0.1",
        "-0",
        "123456789012345678901234567890",
    )
)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(JSON_VALUES, min_size=1, max_size=100), texts=st.lists(NUMBER_TEXTS, max_size=5))
async def test_number_text_and_array_readers(
    conn: asyncpg.Connection, values: list[object], texts: list[str]
) -> None:
    docs = [json.dumps(v) for v in values] + texts
    rows = await conn.fetch(
        "SELECT sw_num(j) AS n, sw_str(j) AS s, sw_str_array(j) AS a"
        " FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i), LATERAL (SELECT t::jsonb AS j) x ORDER BY i",
        docs,
    )
    for doc, row in zip(docs, rows, strict=True):
        value = json.loads(doc)  # what the Python evaluator holds once the row is read back
        assert row["n"] == as_number(value), doc
        assert row["s"] == as_text(value), doc
        strings = as_strings(value)
        assert (None if row["a"] is None else frozenset(row["a"])) == strings, doc
