"""A validated rule compiled for both evaluators: the generated Python predicate and the SQL filter.

Usage, once per batch (or tick) per workspace::

    compiled = compile_rule(rule, catalog)          # once per segment version
    bound = compiled.bind(TimeContext(now, tz))     # once per batch
    compiled.matches(state, bound)                  # per customer
    where, params = compiled.sql_where_bound(bound, first_param=2)

Both evaluators read the same bound values (calendar boundaries computed in Python), so they agree
by construction on every day, week and month boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from .deps import depends_on_timezone, fields_read, is_time_relative
from .model import Catalog, Condition, Rule, conditions
from .predicate import Predicate, build_predicate
from .sql import sql_expression
from .timectx import TimeContext, bind_condition, binds
from .validate import RuleError, RuleProblem

# Any context gives every condition's arity (the number of values it binds does not depend on time).
_ARITY_CTX = TimeContext(datetime(2000, 1, 1, tzinfo=UTC), ZoneInfo("UTC"))


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """One rule, ready to evaluate in process (``matches``) and in PostgreSQL (``sql_where``)."""

    rule: Rule
    fields: frozenset[str]
    time_relative: bool
    timezone_dependent: bool
    time_conditions: tuple[Condition, ...]
    source: str
    # ``matches(state, bound) -> bool``: the generated function itself (no extra call layer).
    matches: Predicate = field(repr=False)
    _binding: tuple[Condition, ...] = field(repr=False)
    _offsets: dict[int, int] = field(repr=False)

    def bind(self, ctx: TimeContext) -> tuple[object, ...]:
        """The time-derived values of this rule at ``ctx`` (compute once per batch)."""
        out: list[object] = []
        for cond in self._binding:
            out.extend(bind_condition(cond, ctx))
        return tuple(out)

    def sql_where(self, ctx: TimeContext, first_param: int = 1) -> tuple[str, list[object]]:
        """A never-NULL boolean SQL expression over ``customers c`` (``$first_param``… placeholders)
        and its parameters. Callers add ``c.workspace_id = …`` and ``NOT c.deleted``."""
        return self.sql_where_bound(self.bind(ctx), first_param)

    def sql_where_bound(self, bound: tuple[object, ...], first_param: int = 1) -> tuple[str, list[object]]:
        """As ``sql_where``, from values already bound (the very ones given to ``matches``)."""
        return sql_expression(self.rule, bound, self._offsets, first_param)


def _check_catalog(rule: Rule, catalog: Catalog) -> None:
    problems = []
    for cond in conditions(rule):
        current = catalog.fields.get(cond.field.key)
        if current is None:
            problems.append(RuleProblem(cond.path + ".field", f"field {cond.field.key!r} no longer exists"))
        elif current.type is not cond.field.type:
            problems.append(
                RuleProblem(
                    cond.path + ".field",
                    f"field {cond.field.key!r} is now {current.type.value}, the rule was checked as "
                    f"{cond.field.type.value}",
                )
            )
    if problems:
        raise RuleError(problems)


def compile_rule(rule: Rule, catalog: Catalog) -> CompiledRule:
    """Compile a validated rule (``validate.parse_rule``) for ``catalog``'s workspace.

    Raises ``RuleError`` when a field the rule reads is no longer in the catalogue with its type.
    """
    _check_catalog(rule, catalog)
    conds = tuple(conditions(rule))
    offsets: dict[int, int] = {}
    binding: list[Condition] = []
    size = 0
    for i, cond in enumerate(conds):
        if binds(cond):
            offsets[i] = size
            binding.append(cond)
            size += len(bind_condition(cond, _ARITY_CTX))
    fn, source = build_predicate(rule, offsets, size)
    timed = tuple(c for c in conds if is_time_relative(c))
    return CompiledRule(
        rule=rule,
        fields=fields_read(rule),
        time_relative=bool(timed),
        timezone_dependent=any(depends_on_timezone(c) for c in conds),
        time_conditions=timed,
        source=source,
        matches=fn,
        _binding=tuple(binding),
        _offsets=offsets,
    )
