"""The SQL evaluator: a rule as one boolean expression over ``customers c`` with ``$n`` parameters.

Operands, attribute names and time-derived values are parameters, never SQL text; column names come
from a fixed map of the built-in fields. Every condition is wrapped so it is never NULL (three-valued
logic would break ``not``). Text compares the folded ``*_f`` columns / ``attrs_f``; typed attribute
reads go through the strict ``sw_*`` functions (migrations 001/002), which return NULL exactly where
the Python evaluator sees a missing value. Tag conditions use ``@>``/``&&``/``cardinality`` so the
GIN index on ``tags`` applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from .model import All, AnyOf, Condition, FieldType, Not, Rule
from .timectx import zone_table

# Built-in field -> column of ``customers c`` (folded copies for text).
BUILTIN_COLUMNS: Mapping[str, str] = {
    "phone": "c.phone_f",
    "name": "c.name_f",
    "email": "c.email_f",
    "language": "c.language_f",
    "country": "c.country_f",
    "platform": "c.platform_f",
    "created_at": "c.created_at",
    "last_interaction_at": "c.last_interaction_at",
    "last_incoming_at": "c.last_incoming_at",
    "marketing_opt_out": "c.marketing_opt_out",
    "tags": "c.tags",
}

_ATTR_READERS: Mapping[FieldType, str] = {
    FieldType.TEXT: "sw_str",
    FieldType.SELECT: "sw_str",
    FieldType.NUMBER: "sw_num",
    FieldType.DATE: "sw_try_date",
    FieldType.DATETIME: "sw_try_timestamptz",
    FieldType.MULTI_SELECT: "sw_str_array",
}

_COMPARE = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def escape_like(s: str) -> str:
    """``s`` with LIKE's wildcards and escape character (backslash) escaped."""
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def to_param(value: object) -> object:
    """A bound or operand value in the form asyncpg encodes for the casts used here."""
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, ZoneInfo):
        return value.key
    return value


class _Params:
    def __init__(self, first: int) -> None:
        self.first = first
        self.values: list[object] = []
        self._names: dict[str, str] = {}

    def add(self, value: object, pgtype: str) -> str:
        self.values.append(to_param(value))
        return f"${self.first + len(self.values) - 1}::{pgtype}"

    def attr_name(self, name: str) -> str:
        if name not in self._names:
            self._names[name] = self.add(name, "text")
        return self._names[name]


# Built-in columns declared NOT NULL: a comparison on them is never NULL.
_NOT_NULL_COLUMNS = frozenset(("c.tags", "c.marketing_opt_out"))


class _Generator:
    def __init__(self, bound: Sequence[object], offsets: Mapping[int, int], first_param: int) -> None:
        self.bound = bound
        self.offsets = offsets
        self.params = _Params(first_param)
        self.cond_index = 0
        self.value = ""
        self.zone_refs: dict[str, tuple[str, str, str]] = {}

    def rule(self, rule: Rule) -> str:
        if isinstance(rule, Condition):
            return self.condition(rule)
        if isinstance(rule, Not):
            return f"(NOT {self.rule(rule.child)})"
        assert isinstance(rule, All | AnyOf)
        if not rule.children:
            return "true" if isinstance(rule, All) else "false"
        joiner = " AND " if isinstance(rule, All) else " OR "
        return "(" + joiner.join(self.rule(c) for c in rule.children) + ")"

    def value_expr(self, cond: Condition) -> str:
        fd = cond.field
        if not fd.is_attribute:
            return BUILTIN_COLUMNS[fd.key]
        raw = f"(c.attrs_f -> {self.params.attr_name(fd.attribute_name)})"
        reader = _ATTR_READERS.get(fd.type)
        return f"{reader}{raw}" if reader else raw

    def condition(self, cond: Condition) -> str:
        index = self.cond_index
        self.cond_index += 1
        offset = self.offsets.get(index)
        bound = list(self.bound[offset : offset + 2]) if offset is not None else []
        self.value = self.value_expr(cond)
        return "(" + self.template(cond, self.value, bound) + ")"

    def pos(self, expr: str) -> str:
        """``expr`` (NULL only when the value is) made never-NULL: false on a missing value.

        On built-in columns the form stays a plain conjunction the planner can match to an index
        (``COALESCE`` would hide it); elsewhere ``COALESCE`` is the cheaper spelling.
        """
        v = self.value
        if v in _NOT_NULL_COLUMNS:
            return expr
        if v.startswith("c."):
            return f"({expr}) AND {v} IS NOT NULL"
        return f"COALESCE({expr}, false)"

    def neg(self, expr: str) -> str:
        """The negative operator of ``expr``'s positive one: true on a missing value."""
        return f"NOT ({self.pos(expr)})"

    def template(self, cond: Condition, v: str, bound: list[object]) -> str:
        t, op = cond.field.type, cond.op
        if op in ("is_empty", "is_not_empty"):
            empty = self.emptiness(t, v, cond.field.is_attribute)
            return empty if op == "is_empty" else f"NOT {empty}"
        match t:
            case FieldType.TEXT | FieldType.SELECT:
                return self.text(op, v, cond.value)
            case FieldType.NUMBER:
                return self.number(op, v, cond.value)
            case FieldType.BOOLEAN:
                if cond.field.is_attribute:
                    return self.pos(f"{v} = '{'true' if op == 'is_true' else 'false'}'::jsonb")
                return self.pos(v if op == "is_true" else f"NOT {v}")
            case FieldType.TAGS:
                return self.tags(op, v, cond.value)
            case FieldType.MULTI_SELECT:
                k = self.params.add(cond.value, "text[]")
                expr = f"{v} && {k}" if op.endswith("_any") else f"{v} @> {k}"
                return self.neg(expr) if op.startswith("not_") else self.pos(expr)
            case FieldType.DATE | FieldType.DATETIME:
                return self.times(cond, v, bound)
        raise ValueError(f"no SQL for {t} {op}")

    @staticmethod
    def emptiness(t: FieldType, v: str, is_attribute: bool) -> str:
        """Never-NULL 'v is empty' (null, "" or [], or a value of the wrong type)."""
        match t:
            case FieldType.TEXT | FieldType.SELECT:
                return f"(COALESCE({v}, '') = '')"
            case FieldType.MULTI_SELECT | FieldType.TAGS:
                return f"(COALESCE(cardinality({v}), 0) = 0)"
            case FieldType.BOOLEAN if is_attribute:
                return f"(COALESCE(jsonb_typeof({v}) <> 'boolean', true))"
        return f"({v} IS NULL)"

    def text(self, op: str, v: str, operand: object) -> str:
        if op in ("in", "not_in"):
            expr = f"{v} = ANY({self.params.add(operand, 'text[]')})"
            return self.pos(expr) if op == "in" else self.neg(expr)
        assert isinstance(operand, str)
        match op:
            case "eq" | "neq":
                expr = f"{v} = {self.params.add(operand, 'text')}"
            case "contains" | "not_contains":
                expr = f"strpos({v}, {self.params.add(operand, 'text')}) > 0"
            case "starts_with":
                expr = f"{v} LIKE {self.params.add(escape_like(operand) + '%', 'text')}"
            case "ends_with":
                expr = f"{v} LIKE {self.params.add('%' + escape_like(operand), 'text')}"
            case _:
                raise ValueError(f"no SQL for text {op}")
        return self.neg(expr) if op in ("neq", "not_contains") else self.pos(expr)

    def number(self, op: str, v: str, operand: object) -> str:
        if op == "between":
            assert isinstance(operand, tuple)
            lo, hi = self.params.add(operand[0], "float8"), self.params.add(operand[1], "float8")
            return self.pos(f"{v} BETWEEN {lo} AND {hi}")
        if op == "neq":
            return self.neg(f"{v} = {self.params.add(operand, 'float8')}")
        return self.pos(f"{v} {_COMPARE[op]} {self.params.add(operand, 'float8')}")

    def tags(self, op: str, v: str, operand: object) -> str:
        match op:
            case "has_any_tag":
                return self.pos(f"cardinality({v}) > 0")
            case "has_no_tags":
                return self.neg(f"cardinality({v}) > 0")
            case "has" | "not_has":
                expr = f"{v} @> {self.params.add([operand], 'text[]')}"
                return self.pos(expr) if op == "has" else self.neg(expr)
            case "has_any_of":
                return self.pos(f"{v} && {self.params.add(operand, 'text[]')}")
            case "has_all_of":
                return self.pos(f"{v} @> {self.params.add(operand, 'text[]')}")
        raise ValueError(f"no SQL for tags {op}")

    def times(self, cond: Condition, v: str, bound: list[object]) -> str:
        """Date fields compare local dates; datetime fields UTC instants (see timectx)."""
        op, operand = cond.op, cond.value
        is_dt = cond.field.type is FieldType.DATETIME
        pgtype = "timestamptz" if is_dt else "date"

        def b(i: int, cast: str = pgtype) -> str:
            return self.params.add(bound[i], cast)

        is_instant = isinstance(operand, datetime)
        match op:
            case "on" | "not_on":
                expr = f"{v} = {b(0)}" if is_instant or not is_dt else f"{v} >= {b(0)} AND {v} < {b(1)}"
                return self.pos(expr) if op == "on" else self.neg(expr)
            case "before" | "older_than_days":
                return self.pos(f"{v} < {b(0)}")
            case "after":
                return self.pos(f"{v} {'>=' if is_dt and not is_instant else '>'} {b(0)}")
            case "between":
                assert isinstance(operand, tuple)
                if is_dt and not isinstance(operand[1], datetime):
                    return self.pos(f"{v} >= {b(0)} AND {v} < {b(1)}")
                return self.pos(f"{v} BETWEEN {b(0)} AND {b(1)}")
            case "in_last_days" | "in_next_days":
                return self.pos(f"{v} BETWEEN {b(0)} AND {b(1)}")
            case "anniversary_today" | "anniversary_this_month":
                local = self.local_time(v, bound[1]) if is_dt else v
                if op == "anniversary_today":
                    md = f"(EXTRACT(MONTH FROM {local}) * 100 + EXTRACT(DAY FROM {local}))::int"
                    return self.pos(f"{md} = ANY({b(0, 'int[]')})")
                return self.pos(f"EXTRACT(MONTH FROM {local})::int = {b(0, 'int')}")
        # is_today … last_month: [start, end)
        return self.pos(f"{v} >= {b(0)} AND {v} < {b(1)}")


    def local_time(self, v: str, tz: object) -> str:
        """``v``'s local wall time in ``tz``, from zoneinfo's offsets (never PostgreSQL's tzdata)."""
        assert isinstance(tz, ZoneInfo)
        if tz.key not in self.zone_refs:  # one copy of the (large) table per query
            table = zone_table(tz)
            self.zone_refs[tz.key] = (
                self.params.add(list(table.transitions), "timestamptz[]"),
                self.params.add(list(table.offsets), "int[]"),
                self.params.add(table.cycle_start, "timestamptz"),
            )
        trans, offs, start = self.zone_refs[tz.key]
        # asyncpg sends Python's first and last instants (0001-01-01T00:00:00Z, e.g. Go's zero time,
        # and 9999-12-31T23:59:59.999999Z) as binary parameters (COPY, bounds) as -infinity /
        # infinity, whose local day is NULL: read them as the finite instants Python compares
        # (comparisons agree without this).
        finite = (
            f"CASE WHEN {v} = '-infinity' THEN timestamptz '0001-01-01 00:00:00+00'"
            f" WHEN {v} = 'infinity' THEN timestamptz '9999-12-31 23:59:59.999999+00' ELSE {v} END"
        )
        return f"sw_local_time({finite}, {trans}, {offs}, {start})"


def sql_expression(
    rule: Rule, bound: Sequence[object], offsets: Mapping[int, int], first_param: int = 1
) -> tuple[str, list[object]]:
    """``rule`` as a never-NULL boolean SQL expression over ``customers c``, and its parameters.

    ``bound`` is the flat tuple of ``CompiledRule.bind``; ``offsets`` maps a condition's
    depth-first index to its first value there. Placeholders start at ``$first_param``.
    """
    gen = _Generator(bound, offsets, first_param)
    return gen.rule(rule), gen.params.values
