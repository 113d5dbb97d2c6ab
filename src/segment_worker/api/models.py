"""Request and response bodies of the HTTP API (CONTRACT §8, §10), as pydantic models.

Requests refuse unknown fields (a typo is a 422, not a silent no-op). Timestamps are answered in
UTC with millisecond precision and a ``Z`` (the form of CloudEvent ``time``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from .. import limits
from ..timeutil import format_ms
from .errors import ERROR_CODES

Timestamp = Annotated[
    datetime,
    PlainSerializer(format_ms, return_type=str),
    Field(json_schema_extra={"example": "2026-11-22T10:00:00.120Z"}),
]
AttributeType = Literal["text", "number", "boolean", "date", "datetime", "select", "multi_select"]
SegmentType = Literal["static", "dynamic"]
# Validated by rules.validate (422 naming the JSON path), not by pydantic; documented by the rule
# schema (schemas/rule.json): api.docs replaces these markers in the OpenAPI document by references
# to its definitions (pydantic cannot emit a reference to a definition it does not own).
RULE_MARK = "x-segment-worker-rule"
Rules = Annotated[
    Any,
    WithJsonSchema({RULE_MARK: "required"}),
    Field(
        description="A condition {field, op, value?} or a group {all: [...]}, {any: [...]}, {not: rule}",
        json_schema_extra={"example": {"all": [{"field": "tags", "op": "has", "value": "VIP"}]}},
    ),
]
OptionalRules = Annotated[
    Any,
    WithJsonSchema({RULE_MARK: "nullable"}),
    Field(
        description="A condition {field, op, value?} or a group {all: [...]}, {any: [...]}, {not: rule}",
        json_schema_extra={"example": {"all": [{"field": "tags", "op": "has", "value": "VIP"}]}},
    ),
]
CustomerId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S+$")]
Tag = Annotated[str, Field(min_length=1, max_length=limits.TAG_MAX_CHARS)]

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """A page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None
    total: int


class ErrorBody(BaseModel):
    code: str = Field(json_schema_extra={"enum": list(ERROR_CODES)},
                      description="A stable, machine-readable name of the error")
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


# --- workspace and attributes ----------------------------------------------------------------


class WorkspaceUpdate(Request):
    """Fields not sent keep their current value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"timezone": "Asia/Muscat", "default_region": "OM"},
    ]})
    timezone: str | None = Field(default=None, description="IANA timezone, e.g. Asia/Muscat")
    default_region: str | None = Field(
        default=None, description="ISO 3166-1 alpha-2 region national phone numbers are read in (null: none)"
    )


class WorkspaceOut(BaseModel):
    id: str
    timezone: str
    default_region: str | None


class AttributeIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"type": "select", "options": ["gold", "silver"]},
    ]})
    type: AttributeType
    # An option longer than an attribute text (limits) could never be a value.
    options: list[Annotated[str, Field(max_length=limits.ATTRIBUTE_TEXT_MAX_CHARS)]] | None = Field(
        default=None, description="select / multi_select only; null = open"
    )


class NamedAttributeIn(AttributeIn):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "tier", "type": "text"},
    ]})
    name: str


class AttributesIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {
            "items": [
                {"name": "tier", "type": "select", "options": ["gold", "silver"]},
                {"name": "score", "type": "number"},
            ],
        },
    ]})
    items: list[NamedAttributeIn] = Field(min_length=1, max_length=500)


class AttributeOut(BaseModel):
    name: str
    type: str
    options: list[str] | None
    created_at: Timestamp
    updated_at: Timestamp


class AttributesOut(BaseModel):
    items: list[AttributeOut]


# --- segments --------------------------------------------------------------------------------


class SegmentCreate(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {
            "name": "VIP Arabic Speakers",
            "description": "VIP customers who write in Arabic",
            "type": "dynamic",
            "rules": {"all": [
                {"field": "tags", "op": "has", "value": "VIP"},
                {"field": "language", "op": "eq", "value": "ar"},
            ]},
        },
        {"name": "Newsletter Subscribers", "type": "static"},
    ]})
    name: str
    description: str | None = None
    type: SegmentType
    rules: OptionalRules = None


class SegmentPatch(Request):
    """Fields not sent are unchanged; ``type`` may only repeat the current type."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "VIP customers", "rules": {"field": "tags", "op": "has", "value": "VIP"}},
    ]})
    name: str | None = None
    description: str | None = None
    rules: OptionalRules = None
    type: SegmentType | None = None


class DuplicateIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "VIP Arabic Speakers (copy)"},
    ]})
    name: str
    description: str | None = None


class SegmentOut(BaseModel):
    id: UUID
    workspace_id: str
    name: str
    description: str | None
    type: SegmentType
    rules: Annotated[Any, WithJsonSchema({RULE_MARK: "nullable"})]
    filter_summary: str = Field(description="The rules in words, or 'No filters'")
    created_at: Timestamp
    updated_at: Timestamp
    member_count: int


class DefaultsOut(BaseModel):
    created: list[SegmentOut]
    skipped: list[str] = Field(description="Default names the workspace already had")


class MembersIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"customer_ids": ["c42", "c43"]},
    ]})
    customer_ids: list[CustomerId] = Field(min_length=1, max_length=10_000)


class AddedOut(BaseModel):
    added: int
    already_members: int
    not_found: list[str]


class RemovedOut(BaseModel):
    removed: int
    not_members: int
    not_found: list[str]


class InvalidRowOut(BaseModel):
    line: int
    value: str
    reason: str


class ImportOut(BaseModel):
    added: int
    already_members: int
    created: int
    invalid: list[InvalidRowOut]


class CustomerSummaryOut(BaseModel):
    customer_id: str
    name: str | None
    phone: str | None
    email: str | None
    marketing_opt_out: bool
    tags: list[str]
    attributes: dict[str, Any]


class MemberOut(CustomerSummaryOut):
    joined_at: Timestamp | None


class PreviewIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"rules": {"field": "attributes.tier", "op": "in", "value": ["gold", "platinum"]}},
    ]})
    rules: Rules


class PreviewOut(BaseModel):
    would_enter: int
    would_exit: int
    sample_enter: list[CustomerSummaryOut]
    sample_exit: list[CustomerSummaryOut]


class ExplainOut(BaseModel):
    matches: bool
    rule: dict[str, Any] = Field(description="The rule tree: every node has result, every condition value")


# --- customers ---------------------------------------------------------------------------------


class SearchIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"rules": {"field": "tags", "op": "has", "value": "VIP"}, "limit": 50},
    ]})
    rules: Rules
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class MembershipOut(BaseModel):
    segment_id: UUID
    segment_name: str
    type: SegmentType
    joined_at: Timestamp | None


class CustomerOut(BaseModel):
    customer_id: str
    workspace_id: str
    phone: str | None
    name: str | None
    email: str | None
    language: str | None
    country: str | None
    platform: str | None
    created_at: Timestamp | None
    last_interaction_at: Timestamp | None
    last_incoming_at: Timestamp | None
    marketing_opt_out: bool
    tags: list[str]
    attributes: dict[str, Any]
    memberships: list[MembershipOut]


class HistoryItemOut(BaseModel):
    id: str = Field(description="The CloudEvent id of the transition")
    type: Literal["segment.entered", "segment.exited"]
    segment_id: UUID
    segment_name: str
    seq: int
    cause: dict[str, Any]
    time: str


class CustomerPatch(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"attributes": {"tier": "gold", "old": None}, "tags_add": ["VIP"], "marketing_opt_out": False},
    ]})
    attributes: dict[str, Any] | None = Field(default=None, description="null unsets an attribute")
    tags_add: list[Tag] | None = None
    tags_remove: list[Tag] | None = None
    marketing_opt_out: bool | None = None


class EventIdsOut(BaseModel):
    event_ids: list[str]


# --- audiences ---------------------------------------------------------------------------------


class AudienceIn(Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"segment_ids": ["0b6c9c1e-4a8f-4d5e-9a52-0f3c7b1d2e4f"], "exclude_opted_out": True},
    ]})
    segment_ids: list[str] = Field(min_length=1, max_length=500)
    exclude_opted_out: bool = True


class AudienceOut(BaseModel):
    audience_id: UUID
    redis_key: str
    count: int
