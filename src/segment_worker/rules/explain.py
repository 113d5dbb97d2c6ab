"""Why a customer is in or out of a segment: the rule tree with each node's result.

Each node's result comes from compiling that node with the same generator as ``matches`` (so an
explanation can never disagree with membership), and each condition carries the customer's value of
its field as the customer sees it (display spellings, not folded copies).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..state import CustomerState
from .compiled import compile_rule
from .model import NO_OPERAND_OPERATORS, All, AnyOf, Catalog, Condition, FieldDef, Not, Rule
from .timectx import TimeContext

# Built-in fields shown with their stored (unfolded) values.
_DISPLAY_ATTRS = {
    "phone": "phone",
    "name": "name",
    "email": "email",
    "language": "language",
    "country": "country",
    "platform": "platform",
    "created_at": "created_at",
    "last_interaction_at": "last_interaction_at",
    "last_incoming_at": "last_incoming_at",
    "marketing_opt_out": "marketing_opt_out",
}


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def customer_value(state: CustomerState, field: FieldDef) -> Any:
    """The customer's value of ``field``, JSON-able: attributes as written, tags by display label,
    datetimes in RFC 3339 UTC, None when unset."""
    if field.is_attribute:
        return state.attrs.get(field.attribute_name)
    if field.key == "tags":
        return [state.tag_labels.get(t, t) for t in sorted(state.tags)]
    value = getattr(state, _DISPLAY_ATTRS[field.key])
    return _iso(value) if isinstance(value, datetime) else value


def explain(rule: Rule, catalog: Catalog, state: CustomerState, ctx: TimeContext) -> dict[str, Any]:
    """``{"matches", "rule"}`` (the API's explain answer, CONTRACT §10): the rule tree with
    ``"result"`` on every node; ``matches`` (the root's result) equals what
    ``compile_rule(rule, catalog).matches`` gives.

    A condition node is ``{"field", "op", "operand"?, "value", "result"}``: ``value`` is the
    customer's value of the field (CONTRACT §10), so the condition's own operand (``value`` in the
    rule JSON) is shown as ``operand``. Groups keep their rule JSON shape (``all``/``any``/``not``).
    """

    def walk(node: Rule) -> dict[str, Any]:
        compiled = compile_rule(node, catalog)
        result = compiled.matches(state, compiled.bind(ctx))
        if isinstance(node, Condition):
            out: dict[str, Any] = {"field": node.field.key, "op": node.op}
            if node.op not in NO_OPERAND_OPERATORS:
                out["operand"] = node.raw
            out["value"] = customer_value(state, node.field)
            out["result"] = result
            return out
        if isinstance(node, Not):
            return {"not": walk(node.child), "result": result}
        assert isinstance(node, All | AnyOf)
        key = "all" if isinstance(node, All) else "any"
        return {key: [walk(c) for c in node.children], "result": result}

    tree = walk(rule)
    return {"matches": tree["result"], "rule": tree}
