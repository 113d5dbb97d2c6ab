"""Input events (CONTRACT §2, §10): the service's Kafka input boundary.

``parse_event`` turns a record value into one frozen pydantic model of the ``InputEvent`` union
or raises ``EventError`` with a human-readable reason that names the offending field (it becomes
the DLQ ``error`` header). Output CloudEvents live in ``membership_events`` (re-exported here).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from . import limits
from .errors import BadInput
from .membership_events import SOURCE as SOURCE
from .membership_events import CloudEvent as CloudEvent
from .membership_events import SegmentDeletedEvent as SegmentDeletedEvent
from .membership_events import render_segment_deleted as render_segment_deleted
from .membership_events import render_transition as render_transition
from .membership_events import segment_deleted_id as segment_deleted_id
from .membership_events import segment_deleted_key as segment_deleted_key
from .membership_events import transition_id as transition_id
from .membership_events import transition_key as transition_key
from .text import id_problem, workspace_id_problem
from .timeutil import DATETIME_RE, parse_rfc3339

MAX_EVENT_BYTES = 1_048_576  # 1 MB, binary (CONTRACT §10)
MAX_SAFE_NUMBER = limits.MAX_SAFE_NUMBER

# ISO 3166-1 alpha-2 officially assigned codes, plus XK (Kosovo), which phone metadata and most
# CRMs use although ISO reserves it as user-assigned.
ISO_COUNTRIES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC
    EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK
    HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB
    LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU
    RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN
    TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW""".split()
)


# Why a record went to the DLQ (the ``reason`` label of ``segment_worker_dlq_records``; a bounded
# set agreed across the project): ``invalid_json`` (no value, not JSON), ``invalid_event`` (schema:
# type, fields, ids, timestamps), ``limit`` (beyond limits.py), ``invalid_value`` (a value that does
# not fit the workspace's declared attribute), ``oversized`` (over 1 MB), ``poison`` (parsed, but
# failed alone in the worker: worker/batch.py).
DLQ_REASONS: tuple[str, ...] = (
    "invalid_json", "invalid_event", "limit", "invalid_value", "oversized", "poison"
)


class EventError(BadInput):
    """A record that can never be processed; ``reason`` is the DLQ ``error`` header, ``kind`` one
    of ``DLQ_REASONS``."""

    def __init__(self, reason: str, kind: str = "invalid_event") -> None:
        super().__init__(reason, retriable=False, context={"reason": reason, "kind": kind})
        self.reason = reason
        self.kind = kind


def _bad(reason: str) -> PydanticCustomError:
    # The reason travels in the context: a template must not contain user text (braces).
    return PydanticCustomError("sw", "{reason}", {"reason": reason})


def _over_limit(reason: str) -> PydanticCustomError:
    """A value beyond a documented limit (``limits``): DLQ reason label ``limit``."""
    return PydanticCustomError("sw_limit", "{reason}", {"reason": reason})


def describe_value(value: object) -> str:
    """A short JSON-ish rendering of a wrong input value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- field types -------------------------------------------------------------------------------


def id_ok(value: str) -> bool:
    """``text.id_problem(value) is None``, fast: printable and no space is exactly its acceptance
    set, because U+0020 is the only whitespace ``str.isprintable`` accepts (a test checks all)."""
    return 0 < len(value) <= 128 and value.isprintable() and " " not in value


def _check_id(value: str) -> str:
    if id_ok(value):
        return value
    raise _bad(str(id_problem(value)))  # the slow path only words the reason


def _check_workspace_id(value: str) -> str:
    # Fast path first: ``workspace_id_problem`` walks the string in Python to word its reason.
    if id_ok(value) and ":" not in value and "{" not in value and "}" not in value and "/" not in value:
        return value
    problem = workspace_id_problem(_check_id(value))
    if problem is not None:
        raise _bad(problem)
    return value


def _check_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise _bad(f"must be an RFC 3339 timestamp string, not {describe_value(value)}")
    try:
        dt = parse_rfc3339(value)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith(repr(value)):
            raise _bad(reason) from None
        raise _bad(f"{value!r} is not a valid RFC 3339 timestamp ({reason})") from None
    # Looked up on the module at each call (tests switch the edge checks off to reach the worker's
    # poison isolation with records that really fail later).
    problem = limits.instant_problem(dt)
    if problem is not None:
        raise _over_limit(f"{problem} ({value!r})")
    return dt


def _check_tag(value: object) -> str:
    if isinstance(value, str) and value.strip():
        tag = value.strip()
        problem = limits.text_problem(tag, limits.TAG_MAX_CHARS)
        if problem is not None:
            raise _over_limit(f"tag {problem}")
        return tag
    raise _bad("must be a non-empty string")


def _limited_text(max_chars: int) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is not None:
            problem = limits.text_problem(value, max_chars)
            if problem is not None:
                raise _over_limit(problem)
        return value

    return AfterValidator(check)


def _text_schema(max_chars: int) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": "string", "maxLength": max_chars}, {"type": "null"}]})


def _attr_text(value: str, where: str) -> str:
    problem = limits.text_problem(value, limits.ATTRIBUTE_TEXT_MAX_CHARS)
    if problem is not None:
        raise _over_limit(f"{where}{problem}")
    return value


def _check_attr_value(value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _attr_text(value, "")
    if isinstance(value, int):
        if -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER:
            return value
        raise _over_limit(f"{value} is beyond ±2^53 (integers must be exact as IEEE-754 doubles)")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _over_limit("NaN and Infinity are not numbers here")
        if -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER:
            return value
        raise _over_limit(f"{value!r} is beyond ±2^53")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _bad(f"arrays may hold only strings; item [{i}] is {describe_value(item)}")
            _attr_text(item, f"item [{i}] ")
        return tuple(value)
    raise _bad(
        f"must be a string, a number, true/false, an array of strings or null, not {describe_value(value)}"
    )


def _check_country(value: str | None) -> str | None:
    if value is None:
        return None
    code = value.strip().upper()
    if not code:
        return None  # "" is empty, like null (CONTRACT §10)
    if code not in ISO_COUNTRIES:
        raise _bad(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'US', 'OM')")
    return code


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[^\s]+$"}
_TS_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": DATETIME_RE.pattern,
    "description": f"RFC 3339 with an offset; its UTC value must fall within years {limits.MIN_YEAR}–"
    f"{limits.MAX_YEAR} (limit)",
}

Id = Annotated[str, AfterValidator(_check_id), WithJsonSchema(_ID_SCHEMA)]
WorkspaceId = Annotated[
    str,
    AfterValidator(_check_workspace_id),
    WithJsonSchema({**_ID_SCHEMA, "pattern": r"^[^\s:{}/]+$"}),
]
Timestamp = Annotated[datetime, PlainValidator(_check_timestamp), WithJsonSchema(_TS_SCHEMA)]
Tag = Annotated[
    str,
    PlainValidator(_check_tag),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": limits.TAG_MAX_CHARS}),
]
_ATTR_TEXT_SCHEMA = {"type": "string", "maxLength": limits.ATTRIBUTE_TEXT_MAX_CHARS}
_ATTR_VALUE_SCHEMA = {
    "anyOf": [
        _ATTR_TEXT_SCHEMA,
        {"type": "number", "minimum": -MAX_SAFE_NUMBER, "maximum": MAX_SAFE_NUMBER},
        {"type": "boolean"},
        {"type": "array", "items": _ATTR_TEXT_SCHEMA},
        {"type": "null"},
    ]
}
AttrName = Annotated[str, AfterValidator(_check_id)]
AttrValue = Annotated[
    str | float | int | bool | tuple[str, ...] | None,
    PlainValidator(_check_attr_value),
    WithJsonSchema(_ATTR_VALUE_SCHEMA),
]
Attributes = Annotated[
    dict[AttrName, AttrValue],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {k: v for k, v in _ID_SCHEMA.items() if k != "type"},
            "additionalProperties": _ATTR_VALUE_SCHEMA,
        }
    ),
]
Country = Annotated[
    str | None,
    AfterValidator(_check_country),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": "^ *[A-Za-z]{2} *$|^ *$"}, {"type": "null"}]}),
]
Lower = Annotated[str | None, AfterValidator(_lower)]


def _limited(field: str) -> tuple[AfterValidator, WithJsonSchema]:
    n = limits.TEXT_FIELD_MAX_CHARS[field]
    return _limited_text(n), _text_schema(n)


Phone = Annotated[str | None, *_limited("phone")]
Name = Annotated[str | None, *_limited("name")]
Email = Annotated[str | None, *_limited("email")]
Language = Annotated[Lower, *_limited("language")]
Platform = Annotated[Lower, *_limited("platform")]


# --- input models ------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class UpsertedData(_Frozen):
    """Built-in fields to set; a key given as null clears the field, an absent key is untouched."""

    phone: Phone = None
    name: Name = None
    email: Email = None
    language: Language = None
    country: Country = None
    platform: Platform = None
    created_at: Timestamp | None = None

    @property
    def given(self) -> frozenset[str]:
        """The keys present in the event (``model_fields_set``)."""
        return frozenset(self.model_fields_set)


class AttributesData(_Frozen):
    attributes: Attributes


class TagsData(_Frozen):
    tags: tuple[Tag, ...]


class OptOutData(_Frozen):
    marketing_opt_out: bool


class InteractionData(_Frozen):
    direction: Literal["incoming", "outgoing"]


class DeletedData(_Frozen):
    pass


class _Envelope(_Frozen):
    event_id: Id
    type: str
    workspace_id: WorkspaceId
    customer_id: Id
    occurred_at: Timestamp


class CustomerUpserted(_Envelope):
    type: Literal["customer.upserted"]
    data: UpsertedData


class CustomerAttributesSet(_Envelope):
    type: Literal["customer.attributes_set"]
    data: AttributesData


class CustomerTagsAdded(_Envelope):
    type: Literal["customer.tags_added"]
    data: TagsData


class CustomerTagsRemoved(_Envelope):
    type: Literal["customer.tags_removed"]
    data: TagsData


class CustomerOptOutSet(_Envelope):
    type: Literal["customer.opt_out_set"]
    data: OptOutData


class CustomerInteraction(_Envelope):
    type: Literal["customer.interaction"]
    data: InteractionData


class CustomerDeleted(_Envelope):
    type: Literal["customer.deleted"]
    data: DeletedData


INPUT_MODELS: tuple[type[_Envelope], ...] = (
    CustomerUpserted,
    CustomerAttributesSet,
    CustomerTagsAdded,
    CustomerTagsRemoved,
    CustomerOptOutSet,
    CustomerInteraction,
    CustomerDeleted,
)
AnyInputEvent = (
    CustomerUpserted
    | CustomerAttributesSet
    | CustomerTagsAdded
    | CustomerTagsRemoved
    | CustomerOptOutSet
    | CustomerInteraction
    | CustomerDeleted
)
InputEvent = Annotated[AnyInputEvent, Field(discriminator="type")]
EVENT_TYPES: tuple[str, ...] = tuple(get_args(m.model_fields["type"].annotation)[0] for m in INPUT_MODELS)
INPUT_ADAPTER: TypeAdapter[AnyInputEvent] = TypeAdapter(InputEvent)

_ENVELOPE_KEYS = ", ".join(_Envelope.model_fields) + ", data"
_DATA_KEYS = {
    t: ", ".join(m.model_fields["data"].annotation.model_fields)  # type: ignore[union-attr]
    for t, m in zip(EVENT_TYPES, INPUT_MODELS, strict=True)
}


def parse_event(raw: bytes | None) -> AnyInputEvent:
    """Validate one record value; raise ``EventError`` whose reason names the field and the fault."""
    if raw is None:
        raise EventError("the record has no value (null)", "invalid_json")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"value is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES} (1 MB)", "oversized")
    # PostgreSQL text cannot hold U+0000: such a record would fail its batch on every retry.
    if b"\\u0000" in raw:
        nul_path = _nul_path(raw)
        if nul_path is not None:
            raise EventError(f"{nul_path}: contains a NUL character (\\u0000), which cannot be stored")
    try:
        return INPUT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reason = _reason(errors[0])
        if len(errors) > 1:
            more = len(errors) - 1
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        first = errors[0]["type"]
        kind = {"json_invalid": "invalid_json", "sw_limit": "limit"}.get(first, "invalid_event")
        raise EventError(reason, kind) from None


def _nul_path(raw: bytes) -> str | None:
    """The JSON path of the first string (or key) holding U+0000, or None (also for invalid JSON,
    which the parser then reports)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None

    def walk(node: object, path: str) -> str | None:
        if isinstance(node, str):
            return path if "\x00" in node else None
        if isinstance(node, dict):
            for k, v in node.items():
                here = f"{path}.{k}" if path else str(k)
                if "\x00" in k:
                    return here
                found = walk(v, here)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for i, v in enumerate(node):
                found = walk(v, f"{path}[{i}]")
                if found is not None:
                    return found
        return None

    return walk(doc, "")


def _reason(err: ErrorDetails) -> str:
    kind, loc, value = err["type"], err["loc"], err.get("input")
    expected = ", ".join(EVENT_TYPES)
    if kind == "json_invalid":
        return f"not valid JSON: {(err.get('ctx') or {}).get('error', err['msg'])}"
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"not a JSON object (got {describe_value(value)})"
    if kind == "union_tag_not_found":
        return f"type: is required; expected one of {expected}"
    if kind == "union_tag_invalid":
        tag = value.get("type") if isinstance(value, dict) else None
        if not isinstance(tag, str):
            return f"type: must be a string, not {describe_value(tag)}; expected one of {expected}"
        return f"unknown event type {tag!r}; expected one of {expected}"
    event_type = str(loc[0])
    bad_key = loc[-1] == "[key]"  # loc is (..., "attributes", name, "[key]") for a bad dict key
    path = ""
    for part in loc[1 : -2 if bad_key else None]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    message = _message(kind, err, value, event_type, loc)
    if bad_key:
        return f"{path}: attribute name {describe_value(value)} {message}"
    return f"{path}: {message}"


def _message(kind: str, err: ErrorDetails, value: object, event_type: str, loc: tuple[Any, ...]) -> str:
    if kind in ("sw", "sw_limit"):
        return str((err.get("ctx") or {})["reason"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        if len(loc) == 2:
            return f"unknown field; an event has only {_ENVELOPE_KEYS}"
        keys = _DATA_KEYS.get(event_type)
        if not keys:
            return f"unknown field; {event_type} data must be {{}}"
        return f"unknown field; {event_type} data takes only {keys}"
    if kind == "literal_error":
        return f"must be {(err.get('ctx') or {}).get('expected')}, not {describe_value(value)}"
    nouns = {
        "string_type": "a string",
        "bool_type": "true or false",
        "dict_type": "a JSON object",
        "model_type": "a JSON object",
        "model_attributes_type": "a JSON object",
        "list_type": "an array",
        "tuple_type": "an array",
    }
    noun = nouns.get(kind)
    if noun is not None:
        nullable = " or null" if event_type == "customer.upserted" and len(loc) == 3 else ""
        return f"must be {noun}{nullable}, not {describe_value(value)}"
    return str(err["msg"])
