"""The in-process evaluator: a rule compiled once to Python source, then ``exec``-ed.

Operands are never written into the source: they live in the function's namespace as constants
(``k0``, ``k1`` …), attribute names as ``a0`` …, and time-derived values arrive in the bound tuple
(``b0`` …, see ``timectx.bind_condition``). The source only holds identifiers and operators, so no
operand can inject code, and evaluating a rule does not walk its tree.

Value semantics (DESIGN.md "Values and normalisation"): the state holds folded text (``*_f``,
``attrs_f``); a value of the wrong type for the field counts as missing; empty is None, "" or [];
positive operators are false on empty, negative operators (``neq`` …) true.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from ..state import CustomerState
from ..timeutil import try_date, try_datetime
from .model import All, AnyOf, Condition, FieldType, Not, Rule
from .timectx import GREGORIAN_CYCLE

Predicate = Callable[[CustomerState, tuple[object, ...]], bool]

# Built-in fields and the CustomerState attribute every comparison reads (the folded copy for text).
BUILTIN_ATTRS: Mapping[str, str] = {
    "phone": "phone_f",
    "name": "name_f",
    "email": "email_f",
    "language": "language_f",
    "country": "country_f",
    "platform": "platform_f",
    "created_at": "created_at",
    "last_interaction_at": "last_interaction_at",
    "last_incoming_at": "last_incoming_at",
    "marketing_opt_out": "marketing_opt_out",
    "tags": "tags",
}


def as_text(x: object) -> str | None:
    """A text/select attribute value, or None when it is not a string."""
    return x if type(x) is str else None


def as_number(x: object) -> float | None:
    """A number attribute value as a float (booleans are not numbers), None when not a finite one."""
    if type(x) is float:
        return x if math.isfinite(x) else None
    if type(x) is int:
        try:
            return float(x)
        except OverflowError:
            return None
    return None


def as_strings(x: object) -> frozenset[str] | None:
    """A multi_select value (an array of strings) as a set, None when it is anything else."""
    if type(x) is list and all(type(e) is str for e in x):
        return frozenset(x)
    return None


# Parsing a date/datetime string costs more than the comparison that follows, and the same values
# are read by every segment of a workspace: keep recent parses.
_parse_date = lru_cache(maxsize=1 << 16)(try_date)
_parse_datetime = lru_cache(maxsize=1 << 16)(try_datetime)


def as_date(x: object) -> date | None:
    """A date attribute value (``YYYY-MM-DD``), None when it is not a valid one."""
    return _parse_date(x) if type(x) is str else None


def as_datetime(x: object) -> datetime | None:
    """A datetime attribute value (RFC 3339 with offset), None when it is not a valid one."""
    return _parse_datetime(x) if type(x) is str else None


def local_month_day(v: datetime, tz: ZoneInfo) -> int:
    """``month*100 + day`` of instant ``v``'s calendar day in ``tz``."""
    try:
        local = v.astimezone(tz)
    except OverflowError:
        # Within a day of year 1 or 9999 the local date leaves Python's range; PostgreSQL still
        # computes it. Month, day and the zone's offset (before its first and after its last
        # explicit transition) repeat every 400 years, so shift by a cycle and read them.
        local = (v + GREGORIAN_CYCLE if v.year < 5000 else v - GREGORIAN_CYCLE).astimezone(tz)
    return local.month * 100 + local.day


def local_month(v: datetime, tz: ZoneInfo) -> int:
    """The month of instant ``v``'s calendar day in ``tz``."""
    return local_month_day(v, tz) // 100


_HELPERS: dict[str, object] = {
    "_text": as_text,
    "_num": as_number,
    "_strs": as_strings,
    "_date": as_date,
    "_dt": as_datetime,
    "_lmd": local_month_day,
    "_lmonth": local_month,
}


class _Generator:
    """Builds one expression per rule; owns the namespace of constants."""

    def __init__(self, offsets: Mapping[int, int]) -> None:
        self.ns: dict[str, Any] = dict(_HELPERS)
        self.offsets = offsets
        self.cond_index = 0
        self.n_consts = 0
        self.n_attrs = 0

    def const(self, value: object) -> str:
        name = f"k{self.n_consts}"
        self.n_consts += 1
        self.ns[name] = value
        return name

    def attr_name(self, name: str) -> str:
        key = f"a{self.n_attrs}"
        self.n_attrs += 1
        self.ns[key] = name
        return key

    def rule(self, rule: Rule) -> str:
        if isinstance(rule, Condition):
            return self.condition(rule)
        if isinstance(rule, Not):
            return f"(not {self.rule(rule.child)})"
        if not rule.children:
            return "True" if isinstance(rule, All) else "False"
        joiner = " and " if isinstance(rule, All) else " or "
        assert isinstance(rule, All | AnyOf)
        return "(" + joiner.join(self.rule(c) for c in rule.children) + ")"

    def value_expr(self, cond: Condition) -> str:
        fd = cond.field
        if not fd.is_attribute:
            return f"s.{BUILTIN_ATTRS[fd.key]}"
        raw = f"s.attrs_f.get({self.attr_name(fd.attribute_name)})"
        match fd.type:
            case FieldType.TEXT | FieldType.SELECT:
                return f"_text({raw})"
            case FieldType.NUMBER:
                return f"_num({raw})"
            case FieldType.DATE:
                return f"_date({raw})"
            case FieldType.DATETIME:
                return f"_dt({raw})"
            case FieldType.MULTI_SELECT:
                return f"_strs({raw})"
            case _:  # boolean: compared by identity with True/False
                return raw

    def condition(self, cond: Condition) -> str:
        index = self.cond_index
        self.cond_index += 1
        value = self.value_expr(cond)
        tmp = f"v{index}"
        offset = self.offsets.get(index)
        # Names of this condition's bound values; a template uses only as many as it binds.
        bound = [f"b{offset + j}" for j in range(2)] if offset is not None else []
        return "(" + self.template(cond, value, tmp, bound) + ")"

    def template(self, cond: Condition, value: str, tmp: str, b: list[str]) -> str:
        t, op, operand = cond.field.type, cond.op, cond.value
        guarded = f"({tmp} := {value}) is not None and "
        if op == "is_empty":
            return f"type({value}) is not bool" if t is FieldType.BOOLEAN else (
                f"{value} is None" if t is FieldType.NUMBER else f"not {value}")
        if op == "is_not_empty":
            return f"type({value}) is bool" if t is FieldType.BOOLEAN else (
                f"{value} is not None" if t is FieldType.NUMBER else f"not not {value}")
        match t:
            case FieldType.TEXT | FieldType.SELECT:
                return self.text(op, value, operand)
            case FieldType.NUMBER:
                return self.number(op, value, tmp, operand)
            case FieldType.BOOLEAN:
                return f"{value} is {'True' if op == 'is_true' else 'False'}"
            case FieldType.MULTI_SELECT | FieldType.TAGS:
                return self.sets(op, value, tmp, operand)
            case FieldType.DATE:
                return self.dates(op, value, tmp, guarded, b)
            case FieldType.DATETIME:
                return self.datetimes(cond, value, tmp, guarded, b)
        raise ValueError(f"no evaluator for {t} {op}")

    def text(self, op: str, value: str, operand: object) -> str:
        if op in ("in", "not_in"):
            assert isinstance(operand, tuple)
            return f"{value} {'in' if op == 'in' else 'not in'} {self.const(frozenset(operand))}"
        k = self.const(operand)
        match op:
            case "eq":
                return f"{value} == {k}"
            case "neq":
                return f"{value} != {k}"
            case "contains":
                return f"{k} in ({value} or '')"
            case "not_contains":
                return f"{k} not in ({value} or '')"
            case "starts_with":
                return f"({value} or '').startswith({k})"
            case "ends_with":
                return f"({value} or '').endswith({k})"
        raise ValueError(f"no text evaluator for {op}")

    def number(self, op: str, value: str, tmp: str, operand: object) -> str:
        if op == "between":
            assert isinstance(operand, tuple)
            lo, hi = self.const(operand[0]), self.const(operand[1])
            return f"({tmp} := {value}) is not None and {lo} <= {tmp} <= {hi}"
        k = self.const(operand)
        symbol = {"eq": "==", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        if op in ("eq", "neq"):
            return f"{value} {symbol} {k}"
        return f"({tmp} := {value}) is not None and {tmp} {symbol} {k}"

    def sets(self, op: str, value: str, tmp: str, operand: object) -> str:
        if op == "has_any_tag":
            return f"len({value}) > 0"
        if op == "has_no_tags":
            return f"len({value}) == 0"
        if op in ("has", "not_has"):
            return f"{self.const(operand)} {'in' if op == 'has' else 'not in'} {value}"
        assert isinstance(operand, tuple)
        k = self.const(frozenset(operand))
        if op == "has_any_of":  # tags: always a set, never missing
            return f"not {k}.isdisjoint({value})"
        if op == "has_all_of":
            return f"{k} <= {value}"
        positive = f"not {k}.isdisjoint({tmp})" if op.endswith("_any") else f"{k} <= {tmp}"
        expr = f"({tmp} := {value}) is not None and {positive}"
        return f"not ({expr})" if op.startswith("not_") else expr

    def dates(self, op: str, value: str, tmp: str, guarded: str, b: list[str]) -> str:
        """Date fields: bound values are local dates (or a month-day set / a month)."""
        match op:
            case "on":
                return f"{value} == {b[0]}"
            case "not_on":
                return f"{value} != {b[0]}"
            case "before" | "older_than_days":
                return f"{guarded}{tmp} < {b[0]}"
            case "after":
                return f"{guarded}{tmp} > {b[0]}"
            case "between" | "in_last_days" | "in_next_days":
                return f"{guarded}{b[0]} <= {tmp} <= {b[1]}"
            case "anniversary_today":
                return f"{guarded}{tmp}.month * 100 + {tmp}.day in {b[0]}"
            case "anniversary_this_month":
                return f"{guarded}{tmp}.month == {b[0]}"
        # is_today … last_month: [start, end)
        return f"{guarded}{b[0]} <= {tmp} < {b[1]}"

    def datetimes(self, cond: Condition, value: str, tmp: str, guarded: str, b: list[str]) -> str:
        """Datetime fields: bound values are UTC instants; a date operand spans its local day."""
        op, operand = cond.op, cond.value
        is_instant = isinstance(operand, datetime)
        match op:
            case "on" | "not_on":
                positive = f"{value} == {b[0]}" if is_instant else f"{guarded}{b[0]} <= {tmp} < {b[1]}"
                return positive if op == "on" else f"not ({positive})"
            case "before" | "older_than_days":
                return f"{guarded}{tmp} < {b[0]}"
            case "after":
                return f"{guarded}{tmp} {'>' if is_instant else '>='} {b[0]}"
            case "between":
                assert isinstance(operand, tuple)
                upper = "<=" if isinstance(operand[1], datetime) else "<"
                return f"{guarded}{b[0]} <= {tmp} {upper} {b[1]}"
            case "in_last_days" | "in_next_days":
                return f"{guarded}{b[0]} <= {tmp} <= {b[1]}"
            case "anniversary_today":
                return f"{guarded}_lmd({tmp}, {b[1]}) in {b[0]}"
            case "anniversary_this_month":
                return f"{guarded}_lmonth({tmp}, {b[1]}) == {b[0]}"
        return f"{guarded}{b[0]} <= {tmp} < {b[1]}"


def python_source(rule: Rule, offsets: Mapping[int, int], bound_size: int) -> tuple[str, dict[str, Any]]:
    """Source of ``def matches(s, b)`` for ``rule`` and the namespace it must run in.

    ``offsets`` maps a condition's depth-first index to the position of its first bound value in
    the flat tuple ``b`` of ``bound_size`` values.
    """
    gen = _Generator(offsets)
    expr = gen.rule(rule)
    lines = ["def matches(s, b):"]
    if bound_size:
        names = ", ".join(f"b{i}" for i in range(bound_size))
        lines.append(f"    {names}, = b")
    lines.append(f"    return {expr}")
    return "\n".join(lines) + "\n", gen.ns


def build_predicate(rule: Rule, offsets: Mapping[int, int], bound_size: int) -> tuple[Predicate, str]:
    """The compiled ``matches(state, bound) -> bool`` of ``rule`` and its source (for debugging)."""
    source, ns = python_source(rule, offsets, bound_size)
    code = compile(source, "<segment-rule>", "exec")
    exec(code, ns)
    fn: Predicate = ns["matches"]
    return fn, source

