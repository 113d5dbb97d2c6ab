"""Rules at the service boundary: JSON → validated, compiled rule, with errors as 422 details."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..rules.compiled import CompiledRule, compile_rule
from ..rules.model import Catalog
from ..rules.timectx import TimeContext
from ..rules.validate import RuleError, RuleProblem, parse_rule


def compile_json(rules: Any, catalog: Catalog, path: str = "$.rules") -> CompiledRule:
    """Validate ``rules`` against ``catalog`` and compile them; ``RuleError`` naming each problem's
    JSON path, prefixed with ``path`` (where the rule sits in the request)."""
    try:
        return compile_rule(parse_rule(rules, catalog), catalog)
    except RuleError as exc:
        problems = [RuleProblem(path + p.path.removeprefix("$"), p.message) for p in exc.problems]
        raise RuleError(problems) from None


def now_context(catalog: Catalog) -> TimeContext:
    """The time context of ``catalog``'s workspace at this instant."""
    return TimeContext.at(datetime.now(UTC), catalog.timezone)
