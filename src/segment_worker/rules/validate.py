"""Rule JSON -> AST, checked against a workspace's ``Catalog`` (CONTRACT §4, §10 "Operands").

Every problem found is reported with the JSON path of the offending part (``$.any[1].all[0].value``),
not only the first. Operands are normalised into the AST: text, select values and tags folded
(``text.fold``), numbers as float, dates as ``date``, datetimes as aware UTC ``datetime``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .. import limits
from ..errors import ValidationFailed
from ..text import fold
from ..timeutil import DATE_RE, parse_rfc3339
from .model import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    NO_OPERAND_OPERATORS,
    OPERATORS,
    All,
    AnyOf,
    Catalog,
    Condition,
    FieldDef,
    FieldType,
    Not,
    Rule,
)

# Operators in the order of CONTRACT §4's table, for messages.
OPERATOR_ORDER: tuple[str, ...] = tuple(
    "eq neq contains not_contains starts_with ends_with gt gte lt lte between in not_in "
    "is_true is_false on not_on before after in_last_days older_than_days in_next_days is_today "
    "is_yesterday this_week last_week this_month last_month anniversary_today anniversary_this_month "
    "contains_any contains_all not_contains_any not_contains_all has not_has has_any_of has_all_of "
    "has_any_tag has_no_tags is_empty is_not_empty".split()
)
MAX_NUMBER = 2**53
MAX_DAYS = 36500
# Date operands must leave room for a day on either side in any timezone (Python's date range).
MIN_DATE = date(2, 1, 1)
MAX_DATE = date(9998, 12, 31)
LIST_OPERATORS = frozenset(
    "in not_in has_any_of has_all_of contains_any contains_all not_contains_any not_contains_all".split()
)
DAYS_OPERATORS = frozenset(("in_last_days", "older_than_days", "in_next_days"))
_CONDITION_KEYS = ("field", "op", "value")
_GROUP_KEYS = ("all", "any", "not")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One thing wrong with a rule: where (JSON path) and why."""

    path: str
    message: str


class RuleError(ValidationFailed):
    """A rule is invalid (HTTP 422); ``problems`` lists every problem found. Retrying cannot help."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems: list[RuleProblem] = list(problems)
        summary = "; ".join(f"{p.path}: {p.message}" for p in self.problems)
        super().__init__(
            f"invalid rule: {summary}",
            details=[{"path": p.path, "message": p.message} for p in self.problems],
        )


def child_path(path: str, key: str | int) -> str:
    """The JSON path of ``key`` (an object key or an array index) under ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def operand_limit(fd: FieldDef) -> int | None:
    """The longest folded text a stored value of ``fd`` can have (None: no text limit): 3 × the
    field's limit (``limits``), since folding turns one character into at most three (measured
    over every code point). A longer operand could never match, so rules refuse it (422)."""
    if fd.key == "tags":
        return 3 * limits.TAG_MAX_CHARS
    if fd.is_attribute:
        return 3 * limits.ATTRIBUTE_TEXT_MAX_CHARS
    n = limits.TEXT_FIELD_MAX_CHARS.get(fd.key)
    return None if n is None else 3 * n


def valid_operators(ft: FieldType) -> list[str]:
    """The operators of a field type, in the contract's order."""
    return [op for op in OPERATOR_ORDER if op in OPERATORS[ft]]


class _Validator:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.problems: list[RuleProblem] = []
        self.count = 0

    def problem(self, path: str, message: str) -> None:
        self.problems.append(RuleProblem(path, message))

    def node(self, doc: object, path: str, depth: int, too_deep: bool) -> Rule | None:
        if depth > MAX_DEPTH and not too_deep:
            too_deep = True
            self.problem(
                path,
                f"nested too deeply: this part is at depth {depth}, at most {MAX_DEPTH} levels are "
                "allowed (the top-level rule is depth 1; each all/any/not adds one)",
            )
        if not isinstance(doc, dict):
            self.problem(
                path,
                'must be an object: a condition {"field", "op", "value"} or a group '
                '{"all": [...]}, {"any": [...]} or {"not": {...}}',
            )
            return None
        groups = [k for k in _GROUP_KEYS if k in doc]
        if groups:
            return self.group(doc, path, depth, too_deep, groups)
        if any(k in doc for k in _CONDITION_KEYS):
            return self.condition(doc, path)
        found = ", ".join(_q(str(k)) for k in doc) or "none"
        self.problem(
            path,
            'is neither a condition (keys "field", "op", "value") nor a group (one of "all", "any", '
            f'"not"); keys found: {found}',
        )
        return None

    def group(
        self, doc: dict[Any, Any], path: str, depth: int, too_deep: bool, groups: list[str]
    ) -> Rule | None:
        ok = True
        if len(groups) > 1:
            ok = False
            found = " and ".join(_q(g) for g in groups)
            self.problem(path, f'a group has exactly one of "all", "any" or "not"; found {found}')
        for key in doc:
            if key not in groups:
                ok = False
                self.problem(child_path(path, str(key)), f'unknown key {_q(str(key))} in a group')
        kind = groups[0]
        body = doc[kind]
        sub = child_path(path, kind)
        if kind == "not":
            child = self.node(body, sub, depth + 1, too_deep)
            return Not(child, path) if ok and child is not None else None
        if not isinstance(body, list):
            self.problem(sub, "must be an array of rules")
            return None
        children = [self.node(item, child_path(sub, i), depth + 1, too_deep) for i, item in enumerate(body)]
        if not ok or any(c is None for c in children):
            return None
        kids = tuple(c for c in children if c is not None)
        return All(kids, path) if kind == "all" else AnyOf(kids, path)

    def condition(self, doc: dict[Any, Any], path: str) -> Condition | None:
        self.count += 1
        ok = True
        for key in doc:
            if key not in _CONDITION_KEYS:
                ok = False
                self.problem(
                    child_path(path, str(key)),
                    f'unknown key {_q(str(key))}; a condition has "field", "op" and "value"',
                )
        fd = self.field(doc, child_path(path, "field"))
        op = self.operator(doc, child_path(path, "op"), fd)
        if fd is None or op is None:
            return None
        has_value = doc.get("value") is not None
        value_path = child_path(path, "value")
        if op in NO_OPERAND_OPERATORS:
            if has_value:
                self.problem(value_path, f"must be absent: operator {_q(op)} takes no value")
                return None
            return Condition(fd, op, None, None, path) if ok else None
        if not has_value:
            self.problem(value_path, f"is required: operator {_q(op)} takes a value")
            return None
        raw = doc["value"]
        before = len(self.problems)
        value = _Operands(self, fd, op).parse(raw, value_path)
        if not ok or len(self.problems) > before:
            return None
        return Condition(fd, op, value, raw, path)

    def field(self, doc: dict[Any, Any], path: str) -> FieldDef | None:
        if "field" not in doc:
            self.problem(path, "is required")
            return None
        name = doc["field"]
        if not isinstance(name, str):
            self.problem(path, "must be a string naming a field")
            return None
        fd = self.catalog.fields.get(name)
        if fd is not None:
            return fd
        if name.startswith("attributes."):
            attr = name.removeprefix("attributes.")
            self.problem(path, f"attribute {_q(attr)} is not declared in this workspace")
        else:
            self.problem(
                path,
                f"unknown field {_q(name)}; fields are "
                f"{', '.join(sorted(k for k in self.catalog.fields if '.' not in k))} "
                "or attributes.<name> of a declared attribute",
            )
        return None

    def operator(self, doc: dict[Any, Any], path: str, fd: FieldDef | None) -> str | None:
        if "op" not in doc:
            self.problem(path, "is required")
            return None
        op = doc["op"]
        if not isinstance(op, str):
            self.problem(path, "must be a string naming an operator")
            return None
        if fd is None:
            return None
        if op not in OPERATORS[fd.type]:
            self.problem(
                path,
                f"operator {_q(op)} is not valid for {fd.type.value} field {_q(fd.key)}; "
                f"valid operators: {', '.join(valid_operators(fd.type))}",
            )
            return None
        return op


class _Operands:
    """Checks and normalises one condition's operand; problems go to the validator."""

    def __init__(self, v: _Validator, fd: FieldDef, op: str) -> None:
        self.v, self.fd, self.op = v, fd, op

    def parse(self, raw: object, path: str) -> object:
        t, op = self.fd.type, self.op
        if op in DAYS_OPERATORS:
            return self.days(raw, path)
        if op in LIST_OPERATORS:
            return self.string_list(raw, path)
        if op == "between":
            return self.between(raw, path)
        match t:
            case FieldType.NUMBER:
                return self.number(raw, path)
            case FieldType.DATE | FieldType.DATETIME:
                return self.when(raw, path)
            case FieldType.TAGS if isinstance(raw, list):
                self.v.problem(path, "must be one tag (a string); use has_any_of or has_all_of for several")
                return None
        return self.string(raw, path)

    def string(self, raw: object, path: str) -> str | None:
        if not isinstance(raw, str):
            self.v.problem(path, "must be a string")
            return None
        if raw == "":
            self.v.problem(path, 'must not be empty ("" is never a valid operand)')
            return None
        if "\x00" in raw:
            self.v.problem(path, "must not contain NUL characters")
            return None
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            self.v.problem(path, "must be valid Unicode text (no lone surrogates)")
            return None
        folded = fold(raw)
        limit = operand_limit(self.fd)
        if limit is not None and len(folded) > limit:
            self.v.problem(
                path,
                f"is longer than any value of {_q(self.fd.key)} can be ({limit} characters after folding:"
                " 3 × its limit), so it could never match",
            )
            return None
        options = self.fd.options
        if options is not None and self.fd.type in (FieldType.SELECT, FieldType.MULTI_SELECT):
            if folded not in {fold(o) for o in options}:
                self.v.problem(path, f"must be one of the options of {_q(self.fd.key)}: {', '.join(options)}")
                return None
        return folded

    def string_list(self, raw: object, path: str) -> tuple[str, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.v.problem(path, f"must be a non-empty array (operator {_q(self.op)})")
            return None
        items = [self.string(item, child_path(path, i)) for i, item in enumerate(raw)]
        if any(i is None for i in items):
            return None
        return tuple(dict.fromkeys(i for i in items if i is not None))

    def number(self, raw: object, path: str) -> float | None:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            self.v.problem(path, "must be a number" + (", not a boolean" if isinstance(raw, bool) else ""))
            return None
        if (isinstance(raw, float) and not math.isfinite(raw)) or abs(raw) > MAX_NUMBER:
            self.v.problem(path, f"must be a finite number within ±2^53 ({MAX_NUMBER})")
            return None
        return float(raw)

    def days(self, raw: object, path: str) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_DAYS:
            self.v.problem(path, f"must be an integer from 0 to {MAX_DAYS} (days)")
            return None
        return raw

    def when(self, raw: object, path: str) -> date | datetime | None:
        """A date operand (``YYYY-MM-DD``), or for datetime fields also an RFC 3339 datetime."""
        is_dt_field = self.fd.type is FieldType.DATETIME
        expected = "a date YYYY-MM-DD or an RFC 3339 datetime with offset" if is_dt_field else (
            "a date YYYY-MM-DD")
        if not isinstance(raw, str) or raw == "":
            self.v.problem(path, f"must be {expected}")
            return None
        if DATE_RE.match(raw):
            try:
                d = date.fromisoformat(raw)
            except ValueError:
                self.v.problem(path, f"{_q(raw)} is not a valid calendar date")
                return None
            if not MIN_DATE <= d <= MAX_DATE:
                self.v.problem(path, f"must be between {MIN_DATE} and {MAX_DATE}")
                return None
            return d
        if not is_dt_field:
            self.v.problem(path, f"must be {expected} (a date field does not take a datetime)")
            return None
        try:
            dt = parse_rfc3339(raw).astimezone(UTC)
        except (ValueError, OverflowError):
            self.v.problem(path, f"must be {expected}")
            return None
        if not MIN_DATE <= dt.date() <= MAX_DATE:
            self.v.problem(path, f"must be between {MIN_DATE} and {MAX_DATE}")
            return None
        return dt

    def between(self, raw: object, path: str) -> tuple[object, object] | None:
        t = self.fd.type
        shape = "two numbers" if t is FieldType.NUMBER else "two dates or two datetimes"
        if not isinstance(raw, list) or len(raw) != 2:
            self.v.problem(path, f"must be an array [low, high] of {shape}")
            return None
        parse = self.number if t is FieldType.NUMBER else self.when
        lo, hi = parse(raw[0], child_path(path, 0)), parse(raw[1], child_path(path, 1))
        if lo is None or hi is None:
            return None
        if isinstance(lo, datetime) != isinstance(hi, datetime):
            self.v.problem(path, "both ends must be dates or both datetimes")
            return None
        if lo > hi:  # type: ignore[operator]
            self.v.problem(
                path, f"low end {json.dumps(raw[0])} is greater than high end {json.dumps(raw[1])}"
            )
            return None
        return lo, hi


def parse_rule(doc: object, catalog: Catalog) -> Rule:
    """The checked, normalised AST of rule JSON ``doc``; ``RuleError`` lists every problem."""
    v = _Validator(catalog)
    rule = v.node(doc, "$", 1, False)
    if v.count > MAX_CONDITIONS:
        v.problem("$", f"has {v.count} conditions; at most {MAX_CONDITIONS} are allowed")
    if v.problems or rule is None:
        raise RuleError(v.problems)
    return rule


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The canonical JSON of a rule (operands as written): what is stored and echoed."""
    if isinstance(rule, Condition):
        out: dict[str, Any] = {"field": rule.field.key, "op": rule.op}
        if rule.op not in NO_OPERAND_OPERATORS:
            out["value"] = rule.raw
        return out
    if isinstance(rule, Not):
        return {"not": rule_to_json(rule.child)}
    key = "all" if isinstance(rule, All) else "any"
    return {key: [rule_to_json(c) for c in rule.children]}
