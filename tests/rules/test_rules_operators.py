"""Every operator of every field type, in both evaluators, on hand-picked customers: missing, null,
"", [] and wrong-typed values, and case-insensitive Unicode (ß/SS, Turkish dotted I, NFC/NFD é).

Each case names the customers it expects to match; the generated Python predicate and the SQL
filter must both select exactly those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from test_rules_support import CATALOG, compile_json, evaluate_both, make_state, new_workspace

from segment_worker.rules.model import OPERATORS, FieldType
from segment_worker.rules.timectx import TimeContext

CTX = TimeContext.at(datetime(2024, 3, 15, 12, 0, tzinfo=UTC), "UTC")  # a Friday

# customer id -> make_state keyword arguments
NAMES: Mapping[str, dict[str, Any]] = {
    "strasse": {"name": "Straße"},
    "STRASSE": {"name": "STRASSE"},
    "none": {},
    "empty": {"name": ""},
    "turkish": {"name": "İstanbul"},
    "dotless": {"name": "istanbul"},
    "nfd": {"name": "Cafe\u0301"},
    "nfc": {"name": "Café"},
    "wild": {"name": "100% sure_x"},
}
TEXT_ATTR: Mapping[str, dict[str, Any]] = {
    "str": {"attrs": {"t": "Gold"}},
    "num": {"attrs": {"t": 5}},
    "bool": {"attrs": {"t": True}},
    "list": {"attrs": {"t": ["gold"]}},
    "null": {"attrs": {"t": None}},
    "empty": {"attrs": {"t": ""}},
    "absent": {},
}
NUMBERS: Mapping[str, dict[str, Any]] = {
    "five": {"attrs": {"n": 5}},
    "five_f": {"attrs": {"n": 5.0}},
    "neg_zero": {"attrs": {"n": -0.0}},
    "seven_half": {"attrs": {"n": 7.5}},
    "two53": {"attrs": {"n": 2**53}},
    "overflow": {"attrs": {"n": 10**400}},
    "bool": {"attrs": {"n": True}},
    "string": {"attrs": {"n": "5"}},
    "null": {"attrs": {"n": None}},
    "absent": {},
}
BOOLEANS: Mapping[str, dict[str, Any]] = {
    "true": {"attrs": {"b": True}, "marketing_opt_out": True},
    "false": {"attrs": {"b": False}},
    "string": {"attrs": {"b": "true"}},
    "one": {"attrs": {"b": 1}},
    "null": {"attrs": {"b": None}},
    "absent": {},
}
SELECTS: Mapping[str, dict[str, Any]] = {
    "ar": {"language": "ar", "attrs": {"s": "Gold"}},
    "AR": {"language": "AR", "attrs": {"s": "gold"}},
    "en": {"language": "en", "attrs": {"s": "STRASSE"}},
    "none": {"attrs": {"s": "Straße"}},
    "empty": {"language": "", "attrs": {"s": "silver"}},
    "wrong": {"attrs": {"s": 3}},
}
MULTI: Mapping[str, dict[str, Any]] = {
    "red_green": {"attrs": {"m": ["Red", "Green"]}},
    "red": {"attrs": {"m": ["red"]}},
    "none_of_them": {"attrs": {"m": []}},
    "eszett": {"attrs": {"m": ["ß"]}},
    "string": {"attrs": {"m": "red"}},
    "mixed": {"attrs": {"m": ["red", 1]}},
    "null": {"attrs": {"m": None}},
    "absent": {},
}
TAGS: Mapping[str, dict[str, Any]] = {
    "vip_lead": {"tags": ["VIP", "Lead"]},
    "vip": {"tags": ["vip"]},
    "no_tags": {},
    "eszett": {"tags": ["ß"]},
    "dotted": {"tags": ["İ"]},
}
DATES: Mapping[str, dict[str, Any]] = {
    "today": {"attrs": {"d": "2024-03-15"}},
    "yesterday": {"attrs": {"d": "2024-03-14"}},
    "monday": {"attrs": {"d": "2024-03-11"}},
    "last_sunday": {"attrs": {"d": "2024-03-10"}},
    "last_monday": {"attrs": {"d": "2024-03-04"}},
    "first": {"attrs": {"d": "2024-03-01"}},
    "leap_day": {"attrs": {"d": "2024-02-29"}},
    "year_ago": {"attrs": {"d": "2023-03-15"}},
    "next_week": {"attrs": {"d": "2024-03-22"}},
    "impossible": {"attrs": {"d": "2023-02-29"}},
    "datetime": {"attrs": {"d": "2024-03-15T00:00:00Z"}},
    "number": {"attrs": {"d": 20240315}},
    "absent": {},
}
DATETIMES: Mapping[str, dict[str, Any]] = {
    "now": {"created_at": datetime(2024, 3, 15, 12, 0, tzinfo=UTC), "attrs": {"dt": "2024-03-15T12:00:00Z"}},
    "midnight": {
        "created_at": datetime(2024, 3, 15, tzinfo=UTC),
        "attrs": {"dt": "2024-03-15T01:00:00+01:00"},
    },
    "late_yesterday": {
        "created_at": datetime(2024, 3, 14, 23, 59, 59, 999999, tzinfo=UTC),
        "attrs": {"dt": "2024-03-14 23:59:59.999999z"},
    },
    "week_ago": {
        "created_at": datetime(2024, 3, 8, 12, 0, tzinfo=UTC),
        "attrs": {"dt": "2024-03-08T07:00:00-05:00"},
    },
    "week_ago_minus": {
        "created_at": datetime(2024, 3, 8, 11, 59, 59, tzinfo=UTC),
        "attrs": {"dt": "2024-03-08T11:59:59Z"},
    },
    "feb": {"created_at": datetime(2024, 2, 29, 8, 0, tzinfo=UTC), "attrs": {"dt": "2024-02-29T08:00:00Z"}},
    "soon": {"created_at": datetime(2024, 3, 20, tzinfo=UTC), "attrs": {"dt": "2024-03-20T00:00:00Z"}},
    "bad": {"attrs": {"dt": "2024-03-15T24:00:00Z"}},
    "date_only": {"attrs": {"dt": "2024-03-15"}},
    "absent": {},
}
ALL_DATES = set(DATES)
ALL_DATETIMES = set(DATETIMES)

CASES: list[tuple[str, Mapping[str, dict[str, Any]], dict[str, Any], set[str]]] = [
    # text: folded comparisons (ß = SS, NFC = NFD, dotted İ ≠ i), LIKE wildcards are literal
    ("text eq folds ß", NAMES, {"field": "name", "op": "eq", "value": "STRAẞE"}, {"strasse", "STRASSE"}),
    (
        "text neq is true on empty",
        NAMES,
        {"field": "name", "op": "neq", "value": "strasse"},
        set(NAMES) - {"strasse", "STRASSE"},
    ),
    ("text contains NFC/NFD", NAMES, {"field": "name", "op": "contains", "value": "É"}, {"nfd", "nfc"}),
    (
        "text not_contains",
        NAMES,
        {"field": "name", "op": "not_contains", "value": "ss"},
        set(NAMES) - {"strasse", "STRASSE"},
    ),
    ("text starts_with dotted I", NAMES, {"field": "name", "op": "starts_with", "value": "İST"}, {"turkish"}),
    ("text starts_with dotless", NAMES, {"field": "name", "op": "starts_with", "value": "Ist"}, {"dotless"}),
    (
        "text ends_with NFD operand",
        NAMES,
        {"field": "name", "op": "ends_with", "value": "E\u0301"},
        {"nfd", "nfc"},
    ),
    ("text starts_with %", NAMES, {"field": "name", "op": "starts_with", "value": "100%"}, {"wild"}),
    ("text _ is literal", NAMES, {"field": "name", "op": "starts_with", "value": "1_0"}, set()),
    ("text % is literal", NAMES, {"field": "name", "op": "ends_with", "value": "%x"}, set()),
    ("text is_empty", NAMES, {"field": "name", "op": "is_empty"}, {"none", "empty"}),
    ("text is_not_empty", NAMES, {"field": "name", "op": "is_not_empty"}, set(NAMES) - {"none", "empty"}),
    (
        "text attr eq ignores other types",
        TEXT_ATTR,
        {"field": "attributes.t", "op": "eq", "value": "GOLD"},
        {"str"},
    ),
    (
        "text attr neq",
        TEXT_ATTR,
        {"field": "attributes.t", "op": "neq", "value": "gold"},
        set(TEXT_ATTR) - {"str"},
    ),
    ("text attr contains", TEXT_ATTR, {"field": "attributes.t", "op": "contains", "value": "o"}, {"str"}),
    ("text attr is_empty", TEXT_ATTR, {"field": "attributes.t", "op": "is_empty"}, set(TEXT_ATTR) - {"str"}),
    # number: exact doubles, booleans and strings are not numbers, beyond a double is missing
    ("number eq", NUMBERS, {"field": "attributes.n", "op": "eq", "value": 5}, {"five", "five_f"}),
    ("number eq -0 = 0", NUMBERS, {"field": "attributes.n", "op": "eq", "value": 0}, {"neg_zero"}),
    (
        "number neq",
        NUMBERS,
        {"field": "attributes.n", "op": "neq", "value": 5},
        set(NUMBERS) - {"five", "five_f"},
    ),
    ("number gt", NUMBERS, {"field": "attributes.n", "op": "gt", "value": 5}, {"seven_half", "two53"}),
    (
        "number gte",
        NUMBERS,
        {"field": "attributes.n", "op": "gte", "value": 5.0},
        {"five", "five_f", "seven_half", "two53"},
    ),
    ("number lt", NUMBERS, {"field": "attributes.n", "op": "lt", "value": 5}, {"neg_zero"}),
    ("number lte", NUMBERS, {"field": "attributes.n", "op": "lte", "value": 0}, {"neg_zero"}),
    (
        "number between inclusive",
        NUMBERS,
        {"field": "attributes.n", "op": "between", "value": [0, 5]},
        {"neg_zero", "five", "five_f"},
    ),
    (
        "number is_empty",
        NUMBERS,
        {"field": "attributes.n", "op": "is_empty"},
        {"overflow", "bool", "string", "null", "absent"},
    ),
    (
        "number is_not_empty",
        NUMBERS,
        {"field": "attributes.n", "op": "is_not_empty"},
        {"five", "five_f", "neg_zero", "seven_half", "two53"},
    ),
    # boolean: is_false only on an explicit false
    ("bool is_true", BOOLEANS, {"field": "attributes.b", "op": "is_true"}, {"true"}),
    ("bool is_false", BOOLEANS, {"field": "attributes.b", "op": "is_false"}, {"false"}),
    (
        "bool is_empty",
        BOOLEANS,
        {"field": "attributes.b", "op": "is_empty"},
        {"string", "one", "null", "absent"},
    ),
    ("bool is_not_empty", BOOLEANS, {"field": "attributes.b", "op": "is_not_empty"}, {"true", "false"}),
    ("opt-out is_true", BOOLEANS, {"field": "marketing_opt_out", "op": "is_true"}, {"true"}),
    (
        "opt-out is_false",
        BOOLEANS,
        {"field": "marketing_opt_out", "op": "is_false"},
        set(BOOLEANS) - {"true"},
    ),
    ("opt-out is never empty", BOOLEANS, {"field": "marketing_opt_out", "op": "is_empty"}, set()),
    ("opt-out is_not_empty", BOOLEANS, {"field": "marketing_opt_out", "op": "is_not_empty"}, set(BOOLEANS)),
    # select: folded, options case-insensitive
    ("select eq", SELECTS, {"field": "language", "op": "eq", "value": "AR"}, {"ar", "AR"}),
    (
        "select neq",
        SELECTS,
        {"field": "language", "op": "neq", "value": "ar"},
        {"en", "none", "empty", "wrong"},
    ),
    ("select in", SELECTS, {"field": "language", "op": "in", "value": ["EN", "tr"]}, {"en"}),
    (
        "select not_in",
        SELECTS,
        {"field": "language", "op": "not_in", "value": ["ar"]},
        {"en", "none", "empty", "wrong"},
    ),
    ("select is_empty", SELECTS, {"field": "language", "op": "is_empty"}, {"none", "empty", "wrong"}),
    ("select is_not_empty", SELECTS, {"field": "language", "op": "is_not_empty"}, {"ar", "AR", "en"}),
    ("select attr eq ß", SELECTS, {"field": "attributes.s", "op": "eq", "value": "straße"}, {"en", "none"}),
    ("select attr in", SELECTS, {"field": "attributes.s", "op": "in", "value": ["GOLD"]}, {"ar", "AR"}),
    ("select attr is_empty", SELECTS, {"field": "attributes.s", "op": "is_empty"}, {"wrong"}),
    # multi_select: arrays of strings only
    (
        "multi contains_any",
        MULTI,
        {"field": "attributes.m", "op": "contains_any", "value": ["RED"]},
        {"red_green", "red"},
    ),
    (
        "multi contains_any ß",
        MULTI,
        {"field": "attributes.m", "op": "contains_any", "value": ["ß"]},
        {"eszett"},
    ),
    (
        "multi contains_all",
        MULTI,
        {"field": "attributes.m", "op": "contains_all", "value": ["red", "green"]},
        {"red_green"},
    ),
    (
        "multi not_contains_any",
        MULTI,
        {"field": "attributes.m", "op": "not_contains_any", "value": ["red"]},
        set(MULTI) - {"red_green", "red"},
    ),
    (
        "multi not_contains_all",
        MULTI,
        {"field": "attributes.m", "op": "not_contains_all", "value": ["red", "green"]},
        set(MULTI) - {"red_green"},
    ),
    (
        "multi is_empty",
        MULTI,
        {"field": "attributes.m", "op": "is_empty"},
        {"none_of_them", "string", "mixed", "null", "absent"},
    ),
    (
        "multi is_not_empty",
        MULTI,
        {"field": "attributes.m", "op": "is_not_empty"},
        {"red_green", "red", "eszett"},
    ),
    # tags: case-insensitive
    ("tags has", TAGS, {"field": "tags", "op": "has", "value": "VIP"}, {"vip_lead", "vip"}),
    ("tags has dotted I", TAGS, {"field": "tags", "op": "has", "value": "i̇"}, {"dotted"}),
    ("tags has plain i", TAGS, {"field": "tags", "op": "has", "value": "i"}, set()),
    (
        "tags not_has",
        TAGS,
        {"field": "tags", "op": "not_has", "value": "vip"},
        {"no_tags", "eszett", "dotted"},
    ),
    (
        "tags has_any_of",
        TAGS,
        {"field": "tags", "op": "has_any_of", "value": ["lead", "SS"]},
        {"vip_lead", "eszett"},
    ),
    ("tags has_all_of", TAGS, {"field": "tags", "op": "has_all_of", "value": ["vip", "LEAD"]}, {"vip_lead"}),
    ("tags has_any_tag", TAGS, {"field": "tags", "op": "has_any_tag"}, set(TAGS) - {"no_tags"}),
    ("tags has_no_tags", TAGS, {"field": "tags", "op": "has_no_tags"}, {"no_tags"}),
    # date attributes (local dates; today is Friday 2024-03-15, weeks start on Monday)
    ("date on", DATES, {"field": "attributes.d", "op": "on", "value": "2024-03-15"}, {"today"}),
    (
        "date not_on",
        DATES,
        {"field": "attributes.d", "op": "not_on", "value": "2024-03-15"},
        ALL_DATES - {"today"},
    ),
    (
        "date before",
        DATES,
        {"field": "attributes.d", "op": "before", "value": "2024-03-04"},
        {"first", "leap_day", "year_ago"},
    ),
    ("date after", DATES, {"field": "attributes.d", "op": "after", "value": "2024-03-15"}, {"next_week"}),
    (
        "date between",
        DATES,
        {"field": "attributes.d", "op": "between", "value": ["2024-03-10", "2024-03-14"]},
        {"yesterday", "monday", "last_sunday"},
    ),
    (
        "date in_last_days",
        DATES,
        {"field": "attributes.d", "op": "in_last_days", "value": 1},
        {"today", "yesterday"},
    ),
    (
        "date older_than_days",
        DATES,
        {"field": "attributes.d", "op": "older_than_days", "value": 14},
        {"leap_day", "year_ago"},
    ),
    (
        "date in_next_days",
        DATES,
        {"field": "attributes.d", "op": "in_next_days", "value": 7},
        {"today", "next_week"},
    ),
    ("date is_today", DATES, {"field": "attributes.d", "op": "is_today"}, {"today"}),
    ("date is_yesterday", DATES, {"field": "attributes.d", "op": "is_yesterday"}, {"yesterday"}),
    ("date this_week", DATES, {"field": "attributes.d", "op": "this_week"}, {"today", "yesterday", "monday"}),
    ("date last_week", DATES, {"field": "attributes.d", "op": "last_week"}, {"last_sunday", "last_monday"}),
    (
        "date this_month",
        DATES,
        {"field": "attributes.d", "op": "this_month"},
        {"today", "yesterday", "monday", "last_sunday", "last_monday", "first", "next_week"},
    ),
    ("date last_month", DATES, {"field": "attributes.d", "op": "last_month"}, {"leap_day"}),
    (
        "date anniversary_today",
        DATES,
        {"field": "attributes.d", "op": "anniversary_today"},
        {"today", "year_ago"},
    ),
    (
        "date anniversary_this_month",
        DATES,
        {"field": "attributes.d", "op": "anniversary_this_month"},
        {"today", "yesterday", "monday", "last_sunday", "last_monday", "first", "year_ago", "next_week"},
    ),
    (
        "date is_empty",
        DATES,
        {"field": "attributes.d", "op": "is_empty"},
        {"impossible", "datetime", "number", "absent"},
    ),
    (
        "date is_not_empty",
        DATES,
        {"field": "attributes.d", "op": "is_not_empty"},
        ALL_DATES - {"impossible", "datetime", "number", "absent"},
    ),
]

# datetime: the built-in created_at and the attribute dt hold the same instants
for _field in ("created_at", "attributes.dt"):
    _invalid = {"bad", "date_only", "absent"}
    CASES += [
        (
            f"{_field} on date",
            DATETIMES,
            {"field": _field, "op": "on", "value": "2024-03-15"},
            {"now", "midnight"},
        ),
        (
            f"{_field} on instant",
            DATETIMES,
            {"field": _field, "op": "on", "value": "2024-03-15T13:00:00+01:00"},
            {"now"},
        ),
        (
            f"{_field} not_on",
            DATETIMES,
            {"field": _field, "op": "not_on", "value": "2024-03-15"},
            ALL_DATETIMES - {"now", "midnight"},
        ),
        (
            f"{_field} before date",
            DATETIMES,
            {"field": _field, "op": "before", "value": "2024-03-15"},
            {"late_yesterday", "week_ago", "week_ago_minus", "feb"},
        ),
        (
            f"{_field} before instant",
            DATETIMES,
            {"field": _field, "op": "before", "value": "2024-03-08T12:00:00Z"},
            {"week_ago_minus", "feb"},
        ),
        (
            f"{_field} after date",
            DATETIMES,
            {"field": _field, "op": "after", "value": "2024-03-14"},
            {"now", "midnight", "soon"},
        ),
        (
            f"{_field} after instant is strict",
            DATETIMES,
            {"field": _field, "op": "after", "value": "2024-03-15T12:00:00Z"},
            {"soon"},
        ),
        (
            f"{_field} between dates",
            DATETIMES,
            {"field": _field, "op": "between", "value": ["2024-03-14", "2024-03-15"]},
            {"now", "midnight", "late_yesterday"},
        ),
        (
            f"{_field} between instants",
            DATETIMES,
            {"field": _field, "op": "between", "value": ["2024-03-08T12:00:00Z", "2024-03-15T00:00:00Z"]},
            {"midnight", "late_yesterday", "week_ago"},
        ),
        (
            f"{_field} in_last_days exact",
            DATETIMES,
            {"field": _field, "op": "in_last_days", "value": 7},
            {"now", "midnight", "late_yesterday", "week_ago"},
        ),
        (
            f"{_field} older_than_days exact",
            DATETIMES,
            {"field": _field, "op": "older_than_days", "value": 7},
            {"week_ago_minus", "feb"},
        ),
        (
            f"{_field} in_next_days",
            DATETIMES,
            {"field": _field, "op": "in_next_days", "value": 5},
            {"now", "soon"},
        ),
        (f"{_field} is_today", DATETIMES, {"field": _field, "op": "is_today"}, {"now", "midnight"}),
        (f"{_field} is_yesterday", DATETIMES, {"field": _field, "op": "is_yesterday"}, {"late_yesterday"}),
        (
            f"{_field} this_week",
            DATETIMES,
            {"field": _field, "op": "this_week"},
            {"now", "midnight", "late_yesterday"},
        ),
        (
            f"{_field} last_week",
            DATETIMES,
            {"field": _field, "op": "last_week"},
            {"week_ago", "week_ago_minus"},
        ),
        (
            f"{_field} this_month",
            DATETIMES,
            {"field": _field, "op": "this_month"},
            ALL_DATETIMES - _invalid - {"feb"},
        ),
        (f"{_field} last_month", DATETIMES, {"field": _field, "op": "last_month"}, {"feb"}),
        (
            f"{_field} anniversary_today",
            DATETIMES,
            {"field": _field, "op": "anniversary_today"},
            {"now", "midnight"},
        ),
        (
            f"{_field} anniversary_this_month",
            DATETIMES,
            {"field": _field, "op": "anniversary_this_month"},
            ALL_DATETIMES - _invalid - {"feb"},
        ),
        (f"{_field} is_empty", DATETIMES, {"field": _field, "op": "is_empty"}, _invalid),
        (
            f"{_field} is_not_empty",
            DATETIMES,
            {"field": _field, "op": "is_not_empty"},
            ALL_DATETIMES - _invalid,
        ),
    ]

# groups
CASES += [
    ("all of nothing matches everyone", TAGS, {"all": []}, set(TAGS)),
    ("any of nothing matches nobody", TAGS, {"any": []}, set()),
    (
        "not of a negative operator",
        NAMES,
        {"not": {"field": "name", "op": "neq", "value": "strasse"}},
        {"strasse", "STRASSE"},
    ),
    (
        "nested groups",
        TAGS,
        {
            "any": [
                {
                    "all": [
                        {"field": "tags", "op": "has", "value": "vip"},
                        {"not": {"field": "tags", "op": "has", "value": "lead"}},
                    ]
                },
                {"field": "tags", "op": "has_any_of", "value": ["ß", "İ"]},
            ]
        },
        {"vip", "eszett", "dotted"},
    ),
]


@pytest.fixture(scope="module")
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(pg_dsn)
    yield c
    await c.close()


@pytest.mark.parametrize(("people", "doc", "expected"), [pytest.param(p, d, e, id=i) for i, p, d, e in CASES])
async def test_operator_in_both_evaluators(
    conn: asyncpg.Connection, people: Mapping[str, dict[str, Any]], doc: dict[str, Any], expected: set[str]
) -> None:
    assert expected <= set(people)
    ws = new_workspace()
    states = [make_state(ws, cid, **fields) for cid, fields in people.items()]
    python, sql = await evaluate_both(conn, doc, states, CTX)
    assert python == expected
    assert sql == expected


def test_every_operator_of_every_type_has_a_case() -> None:
    covered = {(CATALOG.fields[d["field"]].type, d["op"]) for _, _, d, _ in CASES if "field" in d}
    wanted = {(t, op) for t, ops in OPERATORS.items() for op in ops}
    assert wanted - covered == set()
    assert {t for t, _ in covered} == set(FieldType)


@pytest.mark.parametrize(
    "doc",
    [
        {"field": "tags", "op": "has", "value": "VIP"},
        {"field": "tags", "op": "has_any_of", "value": ["vip", "lead"]},
        {"field": "tags", "op": "has_all_of", "value": ["vip", "lead"]},
        {
            "all": [
                {"field": "tags", "op": "has", "value": "vip"},
                {"field": "email", "op": "neq", "value": "z"},
            ]
        },
    ],
)
async def test_tag_rules_can_use_the_gin_index(conn: asyncpg.Connection, doc: dict[str, Any]) -> None:
    where, params = compile_json(doc).sql_where(CTX)
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM customers c WHERE {where}", *params)
    assert "customers_tags" in plan
