"""A one-line, human summary of a rule, for segment lists: ``Tags has "VIP" AND Language = ar``.

Works on the stored (canonical) JSON; it never fails: anything it does not understand is shown as
``?`` rather than raising, because a list page must render whatever is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .model import Catalog, FieldType

FIELD_LABELS: Mapping[str, str] = {
    "phone": "Phone",
    "name": "Name",
    "email": "Email",
    "language": "Language",
    "country": "Country",
    "platform": "Platform",
    "created_at": "Created",
    "last_interaction_at": "Last interaction",
    "last_incoming_at": "Last incoming message",
    "marketing_opt_out": "Opt-out",
    "tags": "Tags",
}

OP_LABELS: Mapping[str, str] = {
    "eq": "=",
    "neq": "≠",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "is_empty": "is empty",
    "is_not_empty": "is not empty",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "between": "between",
    "is_true": "is true",
    "is_false": "is false",
    "on": "is on",
    "not_on": "is not on",
    "before": "is before",
    "after": "is after",
    "in_last_days": "in the last",
    "older_than_days": "older than",
    "in_next_days": "in the next",
    "is_today": "is today",
    "is_yesterday": "is yesterday",
    "this_week": "is this week",
    "last_week": "is last week",
    "this_month": "is this month",
    "last_month": "is last month",
    "anniversary_today": "anniversary is today",
    "anniversary_this_month": "anniversary is this month",
    "in": "is one of",
    "not_in": "is none of",
    "contains_any": "contains any of",
    "contains_all": "contains all of",
    "not_contains_any": "contains none of",
    "not_contains_all": "does not contain all of",
    "has": "has",
    "not_has": "does not have",
    "has_any_of": "has any of",
    "has_all_of": "has all of",
    "has_any_tag": "has any tag",
    "has_no_tags": "has no tags",
}

_QUOTED_TYPES = frozenset((FieldType.TEXT, FieldType.TAGS))
_BUILTIN_TYPES: Mapping[str, FieldType] = {
    "phone": FieldType.TEXT,
    "name": FieldType.TEXT,
    "email": FieldType.TEXT,
    "tags": FieldType.TAGS,
}


def _field_label(key: str) -> str:
    return FIELD_LABELS.get(key) or key.removeprefix("attributes.")


def _scalar(value: object, quoted: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if quoted else value
    if isinstance(value, int | float):
        return json.dumps(value)
    return "?"


def _condition(node: Mapping[str, object], catalog: Catalog | None) -> str:
    key, op = node.get("field"), node.get("op")
    if not isinstance(key, str) or not isinstance(op, str):
        return "?"
    fd = catalog.fields.get(key) if catalog is not None else None
    ftype = fd.type if fd is not None else _BUILTIN_TYPES.get(key)
    # Without a catalogue an attribute's type is unknown: quote its strings, as for text.
    quoted = ftype in _QUOTED_TYPES or (ftype is None and key.startswith("attributes."))
    head = f"{_field_label(key)} {OP_LABELS.get(op, op)}"
    if "value" not in node:
        return head
    value = node["value"]
    if op == "between" and isinstance(value, list) and len(value) == 2:
        return f"{head} {_scalar(value[0], quoted)} and {_scalar(value[1], quoted)}"
    if op.endswith("_days"):
        return f"{head} {_scalar(value, False)} days"
    if isinstance(value, list):
        return f"{head} ({', '.join(_scalar(v, quoted) for v in value)})"
    return f"{head} {_scalar(value, quoted)}"


def _render(node: object, catalog: Catalog | None, top: bool) -> str:
    if not isinstance(node, Mapping):
        return "?"
    if "not" in node:
        inner = node["not"]
        text = _render(inner, catalog, False)
        return f"NOT ({text})" if _is_compound(inner) else f"NOT {text}"
    for key, joiner in (("all", " AND "), ("any", " OR ")):
        if key in node:
            children = node[key]
            if not isinstance(children, list):
                return "?"
            if not children:
                if key == "all":
                    return "No filters" if top else "everyone"
                return "Nobody" if top else "nobody"
            if len(children) == 1:
                return _render(children[0], catalog, top)
            parts = []
            for child in children:
                text = _render(child, catalog, False)
                kind = _compound_kind(child)
                parts.append(f"({text})" if kind is not None and kind != key else text)
            return joiner.join(parts)
    return _condition(node, catalog)


def _compound_kind(node: object) -> str | None:
    """"all"/"any" when ``node`` renders as two or more joined parts (single-child groups are
    transparent), else None: such text needs parentheses inside a group of the other kind."""
    if not isinstance(node, Mapping) or "not" in node:
        return None
    for key in ("all", "any"):
        children = node.get(key)
        if isinstance(children, list):
            if len(children) == 1:
                return _compound_kind(children[0])
            return key if len(children) > 1 else None
    return None


def _is_compound(node: object) -> bool:
    return _compound_kind(node) is not None


def summarize(rule_json: object, catalog: Catalog | None = None) -> str:
    """A human filter summary of stored rule JSON, e.g. ``(A OR B) AND NOT C``; ``No filters`` for
    ``{"all": []}``. With ``catalog``, select/date values are shown bare and text values quoted."""
    return _render(rule_json, catalog, True)
