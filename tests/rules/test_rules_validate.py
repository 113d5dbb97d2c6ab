"""Rule validation: every invalid shape is refused with the JSON path and reason (CONTRACT §4, §10),
all problems at once; valid rules are normalised into the AST and echo back canonically."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from test_rules_support import CATALOG

from segment_worker.errors import ValidationFailed
from segment_worker.rules.model import All, AnyOf, Condition, Not
from segment_worker.rules.validate import RuleError, RuleProblem, parse_rule, rule_to_json

TEXT_OPS = "eq, neq, contains, not_contains, starts_with, ends_with, is_empty, is_not_empty"
OBJECT = (
    'must be an object: a condition {"field", "op", "value"} or a group {"all": [...]}, {"any": [...]} '
    'or {"not": {...}}'
)
DEEP = (
    "nested too deeply: this part is at depth 6, at most 5 levels are allowed (the top-level rule is "
    "depth 1; each all/any/not adds one)"
)


def _nest(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": "tags", "op": "has_any_tag"}
    for _ in range(depth - 1):
        rule = {"not": rule}
    return rule


INVALID: list[tuple[str, object, list[tuple[str, str]]]] = [
    ("not an object", ["tags"], [("$", OBJECT)]),
    (
        "empty object",
        {},
        [
            (
                "$",
                'is neither a condition (keys "field", "op", "value") nor a group (one of '
                '"all", "any", "not"); keys found: none',
            )
        ],
    ),
    (
        "unknown key in a condition",
        {"field": "name", "op": "eq", "value": "x", "vlaue": 1},
        [("$.vlaue", 'unknown key "vlaue"; a condition has "field", "op" and "value"')],
    ),
    ("unknown key in a group", {"all": [], "extra": 1}, [("$.extra", 'unknown key "extra" in a group')]),
    (
        "two group keys",
        {"all": [], "any": []},
        [("$", 'a group has exactly one of "all", "any" or "not"; found "all" and "any"')],
    ),
    (
        "group body not an array",
        {"any": {"field": "tags", "op": "has_any_tag"}},
        [("$.any", "must be an array of rules")],
    ),
    ("not takes one rule", {"not": []}, [("$.not", OBJECT)]),
    ("missing field", {"op": "eq", "value": "x"}, [("$.field", "is required")]),
    ("missing op", {"field": "name", "value": "x"}, [("$.op", "is required")]),
    (
        "field not a string",
        {"field": 3, "op": "eq", "value": "x"},
        [("$.field", "must be a string naming a field")],
    ),
    (
        "unknown built-in field",
        {"field": "tier", "op": "eq", "value": "x"},
        [
            (
                "$.field",
                'unknown field "tier"; fields are country, created_at, email, language, last_incoming_at, '
                "last_interaction_at, marketing_opt_out, name, phone, platform, tags or attributes.<name> of "
                "a declared attribute",
            )
        ],
    ),
    (
        "undeclared attribute",
        {"field": "attributes.tier", "op": "eq", "value": "x"},
        [("$.field", 'attribute "tier" is not declared in this workspace')],
    ),
    (
        "operator not valid for the type",
        {"field": "name", "op": "gt", "value": 3},
        [("$.op", f'operator "gt" is not valid for text field "name"; valid operators: {TEXT_OPS}')],
    ),
    (
        "unknown operator",
        {"field": "tags", "op": "includes", "value": "vip"},
        [
            (
                "$.op",
                'operator "includes" is not valid for tags field "tags"; valid operators: has, not_has, '
                "has_any_of, has_all_of, has_any_tag, has_no_tags",
            )
        ],
    ),
    (
        "missing operand",
        {"field": "name", "op": "eq"},
        [("$.value", 'is required: operator "eq" takes a value')],
    ),
    (
        "operand for an operand-less operator",
        {"field": "name", "op": "is_empty", "value": "x"},
        [("$.value", 'must be absent: operator "is_empty" takes no value')],
    ),
    (
        "empty string",
        {"field": "name", "op": "contains", "value": ""},
        [("$.value", 'must not be empty ("" is never a valid operand)')],
    ),
    (
        "text operand of the wrong type",
        {"field": "email", "op": "eq", "value": 5},
        [("$.value", "must be a string")],
    ),
    (
        "NUL in a text operand",
        {"field": "name", "op": "eq", "value": "a\x00b"},
        [("$.value", "must not contain NUL characters")],
    ),
    (
        "boolean is not a number",
        {"field": "attributes.n", "op": "gt", "value": True},
        [("$.value", "must be a number, not a boolean")],
    ),
    (
        "number beyond 2^53",
        {"field": "attributes.n", "op": "lt", "value": 2**53 + 1},
        [("$.value", "must be a finite number within ±2^53 (9007199254740992)")],
    ),
    (
        "infinite number",
        {"field": "attributes.n", "op": "eq", "value": float("inf")},
        [("$.value", "must be a finite number within ±2^53 (9007199254740992)")],
    ),
    (
        "between needs two",
        {"field": "attributes.n", "op": "between", "value": [1]},
        [("$.value", "must be an array [low, high] of two numbers")],
    ),
    (
        "between reversed",
        {"field": "attributes.n", "op": "between", "value": [5, 1]},
        [("$.value", "low end 5 is greater than high end 1")],
    ),
    (
        "between element",
        {"field": "attributes.n", "op": "between", "value": [1, "9"]},
        [("$.value[1]", "must be a number")],
    ),
    (
        "days not an integer",
        {"field": "created_at", "op": "in_last_days", "value": 7.5},
        [("$.value", "must be an integer from 0 to 36500 (days)")],
    ),
    (
        "days out of range",
        {"field": "created_at", "op": "older_than_days", "value": 36501},
        [("$.value", "must be an integer from 0 to 36500 (days)")],
    ),
    (
        "in needs a non-empty array",
        {"field": "language", "op": "in", "value": []},
        [("$.value", 'must be a non-empty array (operator "in")')],
    ),
    (
        "in element empty",
        {"field": "language", "op": "not_in", "value": ["ar", ""]},
        [("$.value[1]", 'must not be empty ("" is never a valid operand)')],
    ),
    (
        "select value not an option",
        {"field": "attributes.s", "op": "eq", "value": "Bronze"},
        [("$.value", 'must be one of the options of "attributes.s": Gold, Silver, Straße, İstanbul')],
    ),
    (
        "multi_select element not an option",
        {"field": "attributes.m", "op": "contains_any", "value": ["red", "Blue"]},
        [("$.value[1]", 'must be one of the options of "attributes.m": Red, Green, ß, é')],
    ),
    (
        "has takes one tag",
        {"field": "tags", "op": "has", "value": ["a", "b"]},
        [("$.value", "must be one tag (a string); use has_any_of or has_all_of for several")],
    ),
    (
        "has_all_of needs an array",
        {"field": "tags", "op": "has_all_of", "value": "vip"},
        [("$.value", 'must be a non-empty array (operator "has_all_of")')],
    ),
    (
        "date field takes no datetime",
        {"field": "attributes.d", "op": "on", "value": "2024-01-01T00:00:00Z"},
        [("$.value", "must be a date YYYY-MM-DD (a date field does not take a datetime)")],
    ),
    (
        "impossible date",
        {"field": "attributes.d", "op": "before", "value": "2023-02-29"},
        [("$.value", '"2023-02-29" is not a valid calendar date')],
    ),
    (
        "date out of range",
        {"field": "attributes.d", "op": "after", "value": "0001-01-01"},
        [("$.value", "must be between 0002-01-01 and 9998-12-31")],
    ),
    (
        "datetime without offset",
        {"field": "created_at", "op": "before", "value": "2024-01-01T10:00:00"},
        [("$.value", "must be a date YYYY-MM-DD or an RFC 3339 datetime with offset")],
    ),
    (
        "between mixing kinds",
        {"field": "created_at", "op": "between", "value": ["2024-01-01", "2024-02-01T00:00:00Z"]},
        [("$.value", "both ends must be dates or both datetimes")],
    ),
    (
        "between dates reversed",
        {"field": "attributes.d", "op": "between", "value": ["2024-02-01", "2024-01-01"]},
        [("$.value", 'low end "2024-02-01" is greater than high end "2024-01-01"')],
    ),
    ("too deep", _nest(6), [("$.not.not.not.not.not", DEEP)]),
    (
        "too many conditions",
        {"any": [{"field": "tags", "op": "has_any_tag"}] * 51},
        [("$", "has 51 conditions; at most 50 are allowed")],
    ),
    (
        "every problem is reported, with nested paths",
        {
            "any": [
                {"field": "tags", "op": "has", "value": "vip"},
                {
                    "all": [
                        {"field": "language", "op": "eq", "value": ""},
                        {"field": "nope", "op": "eq", "value": 1},
                    ]
                },
                {"not": {"field": "attributes.n", "op": "between", "value": [3, 1]}},
            ]
        },
        [
            ("$.any[1].all[0].value", 'must not be empty ("" is never a valid operand)'),
            (
                "$.any[1].all[1].field",
                'unknown field "nope"; fields are country, created_at, email, language, '
                "last_incoming_at, last_interaction_at, marketing_opt_out, name, phone, "
                "platform, tags or attributes.<name> of a declared attribute",
            ),
            ("$.any[2].not.value", "low end 3 is greater than high end 1"),
        ],
    ),
]


@pytest.mark.parametrize(("doc", "expected"), [pytest.param(d, e, id=i) for i, d, e in INVALID])
def test_invalid_rules_are_refused_with_path_and_reason(doc: object, expected: list[tuple[str, str]]) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(doc, CATALOG)
    assert [(p.path, p.message) for p in info.value.problems] == expected
    assert isinstance(info.value, ValidationFailed) and info.value.retriable is False
    assert info.value.details == [{"path": p, "message": m} for p, m in expected]


def test_depth_five_is_allowed_and_a_top_level_condition_is_depth_one() -> None:
    assert isinstance(parse_rule(_nest(5), CATALOG), Not)
    assert isinstance(parse_rule(_nest(1), CATALOG), Condition)
    fifty = parse_rule({"all": [{"field": "tags", "op": "has_any_tag"}] * 50}, CATALOG)
    assert isinstance(fifty, All) and len(fifty.children) == 50


def test_operands_are_normalised_into_the_ast() -> None:
    rule = parse_rule(
        {
            "all": [
                {"field": "name", "op": "contains", "value": "STRASSE"},
                {"field": "tags", "op": "has", "value": "VİP"},
                {"field": "attributes.s", "op": "in", "value": ["gold", "GOLD", "straße"]},
                {"field": "attributes.n", "op": "between", "value": [1, 2.5]},
                {"field": "attributes.d", "op": "on", "value": "2024-02-29"},
                {"field": "created_at", "op": "after", "value": "2024-03-10T02:30:00-05:00"},
                {"field": "created_at", "op": "in_last_days", "value": 7},
                {"field": "marketing_opt_out", "op": "is_true", "value": None},
            ]
        },
        CATALOG,
    )
    assert isinstance(rule, All)
    values = [c.value for c in rule.children if isinstance(c, Condition)]
    assert values == [
        "strasse",
        "vi̇p",
        ("gold", "strasse"),
        (1.0, 2.5),
        date(2024, 2, 29),
        datetime(2024, 3, 10, 7, 30, tzinfo=UTC),
        7,
        None,
    ]
    assert isinstance(values[3], tuple) and isinstance(values[3][0], float)
    assert [c.path for c in rule.children] == [f"$.all[{i}]" for i in range(8)]


def test_canonical_json_round_trips_and_keeps_operands_as_written() -> None:
    doc = {
        "any": [
            {
                "all": [
                    {"field": "tags", "op": "has", "value": "VIP"},
                    {"field": "language", "op": "eq", "value": "ar"},
                ]
            },
            {"not": {"field": "attributes.s", "op": "in", "value": ["Gold", "silver"]}},
            {"field": "marketing_opt_out", "op": "is_false", "value": None},
            {"any": []},
        ]
    }
    rule = parse_rule(doc, CATALOG)
    canonical = rule_to_json(rule)
    assert canonical == {
        "any": [
            doc["any"][0],
            doc["any"][1],
            {"field": "marketing_opt_out", "op": "is_false"},
            {"any": []},
        ]
    }
    assert parse_rule(canonical, CATALOG) == rule
    assert isinstance(parse_rule({"any": []}, CATALOG), AnyOf)


def test_rule_error_message_lists_every_problem() -> None:
    err = RuleError([RuleProblem("$.a", "x"), RuleProblem("$.b", "y")])
    assert str(err) == "invalid rule: $.a: x; $.b: y"


@pytest.mark.parametrize(
    ("field", "op", "limit"),
    [("tags", "has", 200), ("name", "contains", 160), ("attributes.t", "eq", 2048), ("email", "eq", 320)],
)
def test_an_operand_longer_than_any_stored_value_is_refused(field: str, op: str, limit: int) -> None:
    """Folding makes one character at most three, so 3 × the limit is the longest folded value."""
    longest = "ß" * (3 * limit // 2)  # folds to "ss" each: exactly 3 × limit characters folded
    parse_rule({"field": field, "op": op, "value": longest}, CATALOG)  # could still match
    with pytest.raises(RuleError) as info:
        parse_rule({"field": field, "op": op, "value": longest + "x"}, CATALOG)
    ((path, message),) = [(p.path, p.message) for p in info.value.problems]
    assert path == "$.value" and "so it could never match" in message
