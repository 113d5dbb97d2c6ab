"""The JSON Schema of a rule (CONTRACT §4): published as ``schemas/rule.json`` and used by the
OpenAPI document for every rule body (``api.models.Rules``) instead of "any value".

It is the shape only: a condition ``{"field", "op", "value"?}`` or a group ``{"all": [...]}``,
``{"any": [...]}``, ``{"not": rule}``, recursively. What depends on a workspace (which attributes
exist, their types, the operators valid for a type, the operand a given operator takes) and the
limits (5 levels, 50 conditions) are checked by ``rules.validate`` and answered with a 422 naming
the JSON path; the descriptions say so.
"""

from __future__ import annotations

from typing import Any

from .model import BUILTIN_FIELDS, MAX_CONDITIONS, MAX_DEPTH, NO_OPERAND_OPERATORS, OPERATORS
from .validate import DAYS_OPERATORS, LIST_OPERATORS, MAX_DAYS, OPERATOR_ORDER

ATTRIBUTE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}"  # service.attributes.NAME_RE
_SCALAR: list[dict[str, Any]] = [{"type": "string", "minLength": 1}, {"type": "number"}, {"type": "boolean"}]


def rule_defs(ref: str = "#/$defs/") -> dict[str, Any]:
    """The schema's definitions (``Rule``, ``Condition``, ``AllGroup``, ``AnyGroup``, ``NotGroup``),
    their references under ``ref`` (``#/components/schemas/`` in an OpenAPI document)."""
    fields = "|".join(sorted(BUILTIN_FIELDS))
    ops = [op for op in OPERATOR_ORDER if any(op in by_type for by_type in OPERATORS.values())]
    rule = {"$ref": f"{ref}Rule"}
    operand_help = (
        f"The operand. Absent for {', '.join(sorted(NO_OPERAND_OPERATORS))}; a non-empty array for "
        f"{', '.join(sorted(LIST_OPERATORS))}; [lo, hi] for between; an integer 0–{MAX_DAYS} for "
        f"{', '.join(sorted(DAYS_OPERATORS))}; otherwise one value of the field's type (dates "
        "YYYY-MM-DD, datetimes RFC 3339). Checked against the workspace's fields (422 with its path)."
    )
    return {
        "Rule": {
            "title": "Rule",
            "description": (
                "A condition or a group (all / any / not), nested up to "
                f"{MAX_DEPTH} levels with at most {MAX_CONDITIONS} conditions (CONTRACT §4)."
            ),
            "anyOf": [{"$ref": f"{ref}{name}"} for name in ("Condition", "AllGroup", "AnyGroup", "NotGroup")],
        },
        "Condition": {
            "title": "Condition",
            "type": "object",
            "properties": {
                "field": {
                    "type": "string",
                    "pattern": f"^({fields}|attributes\\.{ATTRIBUTE_NAME})$",
                    "description": "A built-in field or attributes.<name> of a declared attribute",
                    "examples": ["tags", "language", "attributes.tier"],
                },
                "op": {"type": "string", "enum": ops,
                       "description": "An operator valid for the field's type"},
                "value": {
                    "description": operand_help,
                    "anyOf": [*_SCALAR, {"type": "array", "minItems": 1, "items": {"anyOf": _SCALAR}},
                              {"type": "null"}],
                },
            },
            "required": ["field", "op"],
            "additionalProperties": False,
            "examples": [{"field": "tags", "op": "has", "value": "VIP"}],
        },
        "AllGroup": {
            "title": "AllGroup",
            "description": "Every rule matches ([] matches every customer)",
            "type": "object",
            "properties": {"all": {"type": "array", "items": rule}},
            "required": ["all"],
            "additionalProperties": False,
        },
        "AnyGroup": {
            "title": "AnyGroup",
            "description": "At least one rule matches ([] matches none)",
            "type": "object",
            "properties": {"any": {"type": "array", "items": rule}},
            "required": ["any"],
            "additionalProperties": False,
        },
        "NotGroup": {
            "title": "NotGroup",
            "description": "The rule does not match",
            "type": "object",
            "properties": {"not": rule},
            "required": ["not"],
            "additionalProperties": False,
        },
    }


EXAMPLE = {
    "any": [
        {"all": [{"field": "tags", "op": "has", "value": "VIP"},
                 {"field": "language", "op": "eq", "value": "ar"}]},
        {"field": "attributes.tier", "op": "in", "value": ["gold", "platinum"]},
    ]
}


def rule_json_schema() -> dict[str, Any]:
    """The standalone schema document (``schemas/rule.json`` adds ``$schema``, title, description)."""
    return {"$ref": "#/$defs/Rule", "$defs": rule_defs(), "examples": [EXAMPLE]}
