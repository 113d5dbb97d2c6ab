"""Human summaries of rules, and explanations that always agree with membership."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from test_rules_support import CATALOG, compile_json, make_state

from segment_worker.rules.explain import explain
from segment_worker.rules.summary import summarize
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule

A = {"field": "tags", "op": "has", "value": "VIP"}
B = {"field": "language", "op": "eq", "value": "ar"}
C = {"field": "attributes.s", "op": "in", "value": ["Gold", "Silver"]}


@pytest.mark.parametrize(
    ("doc", "text"),
    [
        ({"all": [A, B]}, 'Tags has "VIP" AND Language = ar'),
        (
            {"all": [{"any": [A, B]}, {"not": C}]},
            '(Tags has "VIP" OR Language = ar) AND NOT s is one of (Gold, Silver)',
        ),
        ({"all": []}, "No filters"),
        ({"any": []}, "Nobody"),
        ({"not": {"all": [A, B]}}, 'NOT (Tags has "VIP" AND Language = ar)'),
        ({"any": [A, {"any": [B, C]}]}, 'Tags has "VIP" OR Language = ar OR s is one of (Gold, Silver)'),
        (
            {"all": [{"all": [{"any": [A, B]}]}, C]},
            '(Tags has "VIP" OR Language = ar) AND s is one of (Gold, Silver)',
        ),
        (
            {"field": "last_incoming_at", "op": "older_than_days", "value": 30},
            "Last incoming message older than 30 days",
        ),
        ({"field": "attributes.n", "op": "between", "value": [1, 2.5]}, "n between 1 and 2.5"),
        ({"field": "name", "op": "contains", "value": 'say "hi"'}, 'Name contains "say \\"hi\\""'),
        ({"field": "marketing_opt_out", "op": "is_false"}, "Opt-out is false"),
        ({"field": "created_at", "op": "before", "value": "2024-01-01"}, "Created is before 2024-01-01"),
        ({"field": "tags", "op": "has_no_tags"}, "Tags has no tags"),
        ("garbage", "?"),
        ({"all": [A, 7]}, 'Tags has "VIP" AND ?'),
    ],
)
def test_summaries(doc: object, text: str) -> None:
    assert summarize(doc, CATALOG) == text


def test_summary_without_a_catalog_quotes_attribute_strings() -> None:
    assert summarize({"field": "attributes.tier", "op": "eq", "value": "gold"}) == 'tier = "gold"'
    assert summarize({"all": [A, B]}) == 'Tags has "VIP" AND Language = ar'


CTX = TimeContext.at(datetime(2024, 3, 15, 12, tzinfo=UTC), "Europe/Berlin")
RULE: dict[str, Any] = {
    "any": [
        {"all": [A, B]},
        {"not": {"field": "attributes.n", "op": "gt", "value": 10}},
        {"field": "created_at", "op": "is_today"},
    ]
}


@pytest.mark.parametrize(
    "fields",
    [
        {"tags": ["VIP"], "language": "AR", "attrs": {"n": 11}},
        {"tags": ["Lead"], "attrs": {"n": 11}, "created_at": datetime(2024, 3, 14, 23, 30, tzinfo=UTC)},
        {"tags": [], "attrs": {"n": 11}, "created_at": datetime(2024, 3, 14, 22, 59, tzinfo=UTC)},
        {"attrs": {"n": "junk"}},
    ],
)
def test_explain_agrees_with_matches_at_every_node(fields: dict[str, Any]) -> None:
    state = make_state("ws", "c1", **fields)
    rule = parse_rule(RULE, CATALOG)
    out = explain(rule, CATALOG, state, CTX)
    compiled = compile_json(RULE)
    assert out["matches"] == compiled.matches(state, compiled.bind(CTX)) == out["rule"]["result"]
    tree = out["rule"]
    for node, doc in (
        (tree["any"][0], RULE["any"][0]),
        (tree["any"][1], RULE["any"][1]),
        (tree["any"][2], RULE["any"][2]),
        (tree["any"][0]["all"][0], A),
        (tree["any"][1]["not"], RULE["any"][1]["not"]),
    ):
        sub = compile_json(doc)
        assert node["result"] == sub.matches(state, sub.bind(CTX)), doc


def test_explain_shows_the_customers_values_as_they_see_them() -> None:
    state = make_state(
        "ws",
        "c1",
        tags=["VIP", "Lead"],
        language="AR",
        attrs={"n": 3},
        created_at=datetime(2024, 3, 14, 23, 30, tzinfo=UTC),
    )
    out = explain(parse_rule(RULE, CATALOG), CATALOG, state, CTX)
    assert out == {
        "matches": True,
        "rule": {
            "any": [
                {
                    "all": [
                        {
                            "field": "tags",
                            "op": "has",
                            "operand": "VIP",
                            "value": ["Lead", "VIP"],
                            "result": True,
                        },
                        {"field": "language", "op": "eq", "operand": "ar", "value": "ar", "result": True},
                    ],
                    "result": True,
                },
                {
                    "not": {"field": "attributes.n", "op": "gt", "operand": 10, "value": 3, "result": False},
                    "result": True,
                },
                {"field": "created_at", "op": "is_today", "value": "2024-03-14T23:30:00Z", "result": True},
            ],
            "result": True,
        },
    }


def test_ten_condition_rule_evaluates_fast() -> None:
    doc = {
        "all": [
            {"field": "tags", "op": "has_any_of", "value": ["vip", "lead"]},
            {"field": "language", "op": "in", "value": ["ar", "en"]},
            {"field": "name", "op": "contains", "value": "a"},
            {"field": "attributes.n", "op": "between", "value": [0, 100]},
            {"field": "attributes.s", "op": "neq", "value": "Silver"},
            {"field": "marketing_opt_out", "op": "is_false"},
            {"field": "created_at", "op": "in_last_days", "value": 30},
            {"field": "attributes.d", "op": "anniversary_this_month"},
            {"field": "attributes.m", "op": "contains_any", "value": ["Red"]},
            {"not": {"field": "email", "op": "ends_with", "value": "@example.com"}},
        ]
    }
    compiled = compile_json(doc)
    state = make_state(
        "ws",
        "c1",
        tags=["VIP"],
        language="ar",
        name="Sara",
        email="s@x.om",
        created_at=datetime(2024, 3, 10, tzinfo=UTC),
        attrs={"n": 5, "s": "Gold", "d": "1990-03-02", "m": ["red"]},
    )
    bound = compiled.bind(CTX)
    assert compiled.matches(state, bound) is True
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        compiled.matches(state, bound)
    per_second = n / (time.perf_counter() - start)
    # Generated code runs ~10^6 evaluations/s on a laptop; this bound only catches a tree-walker.
    assert per_second > 50_000, per_second
