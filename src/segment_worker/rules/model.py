"""Rule AST and the catalogue of fields a workspace's rules may read (CONTRACT §3, §4, §10).

The AST is produced only by ``rules.validate`` from JSON, so every node is already checked
against a ``Catalog`` and every operand is normalised (text folded, numbers as float, dates
parsed). Both compilers consume this AST and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    SELECT = "select"
    MULTI_SELECT = "multi_select"
    TAGS = "tags"


# Attribute types a workspace may declare (tags are built-in only).
ATTRIBUTE_TYPES: frozenset[FieldType] = frozenset(FieldType) - {FieldType.TAGS}

OPERATORS: Mapping[FieldType, frozenset[str]] = {
    FieldType.TEXT: frozenset(
        "eq neq contains not_contains starts_with ends_with is_empty is_not_empty".split()
    ),
    FieldType.NUMBER: frozenset("eq neq gt gte lt lte between is_empty is_not_empty".split()),
    FieldType.BOOLEAN: frozenset("is_true is_false is_empty is_not_empty".split()),
    FieldType.DATE: frozenset(
        "on not_on before after between in_last_days older_than_days in_next_days is_today "
        "is_yesterday this_week last_week this_month last_month anniversary_today "
        "anniversary_this_month is_empty is_not_empty".split()
    ),
    FieldType.SELECT: frozenset("eq neq in not_in is_empty is_not_empty".split()),
    FieldType.MULTI_SELECT: frozenset(
        "contains_any contains_all not_contains_any not_contains_all is_empty is_not_empty".split()
    ),
    FieldType.TAGS: frozenset("has not_has has_any_of has_all_of has_any_tag has_no_tags".split()),
}
OPERATORS = {**OPERATORS, FieldType.DATETIME: OPERATORS[FieldType.DATE]}

# Operators that a missing/empty value satisfies (besides is_empty): CONTRACT §4.
NEGATIVE_OPERATORS: frozenset[str] = frozenset(
    "neq not_contains not_in not_on not_contains_any not_contains_all not_has".split()
)
# Operators whose truth changes with the passage of time alone (date/datetime fields).
TIME_RELATIVE_OPERATORS: frozenset[str] = frozenset(
    "in_last_days older_than_days in_next_days is_today is_yesterday this_week last_week "
    "this_month last_month anniversary_today anniversary_this_month".split()
)
NO_OPERAND_OPERATORS: frozenset[str] = frozenset(
    "is_empty is_not_empty is_true is_false is_today is_yesterday this_week last_week this_month "
    "last_month anniversary_today anniversary_this_month has_any_tag has_no_tags".split()
)

MAX_DEPTH = 5
MAX_CONDITIONS = 50


@dataclass(frozen=True, slots=True)
class FieldDef:
    """A field rules can read: a built-in (``tags``) or a declared attribute (``attributes.tier``)."""

    key: str
    type: FieldType
    options: tuple[str, ...] | None = None  # select / multi_select; None = open set

    @property
    def is_attribute(self) -> bool:
        return self.key.startswith("attributes.")

    @property
    def attribute_name(self) -> str:
        """The attribute's name (``tier`` for ``attributes.tier``); only for attributes."""
        return self.key.removeprefix("attributes.")


BUILTIN_FIELDS: Mapping[str, FieldDef] = {
    f.key: f
    for f in (
        FieldDef("phone", FieldType.TEXT),
        FieldDef("name", FieldType.TEXT),
        FieldDef("email", FieldType.TEXT),
        # language/country/platform are open selects: eq/neq/in/not_in fit codes best.
        FieldDef("language", FieldType.SELECT),
        FieldDef("country", FieldType.SELECT),
        FieldDef("platform", FieldType.SELECT),
        FieldDef("created_at", FieldType.DATETIME),
        FieldDef("last_interaction_at", FieldType.DATETIME),
        FieldDef("last_incoming_at", FieldType.DATETIME),
        FieldDef("marketing_opt_out", FieldType.BOOLEAN),
        FieldDef("tags", FieldType.TAGS),
    )
}


@dataclass(frozen=True, slots=True)
class Catalog:
    """Everything validation and compilation need to know about one workspace."""

    fields: Mapping[str, FieldDef]
    timezone: str = "UTC"

    @classmethod
    def for_workspace(
        cls, attributes: Mapping[str, FieldDef] | None = None, timezone: str = "UTC"
    ) -> Catalog:
        """Built-ins plus the declared attributes (keyed ``attributes.<name>``)."""
        merged = dict(BUILTIN_FIELDS)
        for fd in (attributes or {}).values():
            merged[fd.key] = fd
        return cls(fields=merged, timezone=timezone)


# Normalised operand values (validate produces them):
#   text/select/tags single operand -> folded str; lists -> tuple[str, ...] folded
#   number -> float; between -> (lo, hi)
#   date operand -> date; datetime operand -> aware datetime (UTC)
#   *_days -> int;  no-operand operators -> None
Operand = object


@dataclass(frozen=True, slots=True)
class Condition:
    field: FieldDef
    op: str
    value: Operand = None
    raw: object = None  # the operand as written, for display and explain
    path: str = "$"  # JSON path of this node in the rule as submitted


@dataclass(frozen=True, slots=True)
class All:
    children: tuple[Rule, ...]
    path: str = "$"


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Rule, ...]
    path: str = "$"


@dataclass(frozen=True, slots=True)
class Not:
    child: Rule
    path: str = "$"


Rule = Condition | All | AnyOf | Not


def conditions(rule: Rule) -> Iterator[Condition]:
    """Every condition of ``rule``, depth first, in written order."""
    if isinstance(rule, Condition):
        yield rule
    elif isinstance(rule, Not):
        yield from conditions(rule.child)
    else:
        for child in rule.children:
            yield from conditions(child)
