"""Customer state as the worker holds it in memory: the columns of the ``customers`` table.

Field names match the PostgreSQL columns one to one (migrations/001_initial.sql). Text built-ins
carry a folded copy (``*_f``) that every comparison reads; ``tags`` holds folded tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from .timeutil import Version


@dataclass(slots=True)
class CustomerState:
    """One customer (or tombstone) of one workspace."""

    workspace_id: str
    customer_id: str
    partition: int
    deleted: bool = False
    phone: str | None = None
    name: str | None = None
    email: str | None = None
    language: str | None = None
    country: str | None = None
    platform: str | None = None
    phone_f: str | None = None
    name_f: str | None = None
    email_f: str | None = None
    language_f: str | None = None
    country_f: str | None = None
    platform_f: str | None = None
    created_at: datetime | None = None
    last_interaction_at: datetime | None = None
    last_incoming_at: datetime | None = None
    marketing_opt_out: bool = False
    tags: set[str] = field(default_factory=set)
    tag_labels: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    attrs_f: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Version] = field(default_factory=dict)
    first_seen_us: int | None = None
    deleted_us: int | None = None
    deleted_event_id: str | None = None


@dataclass(slots=True)
class Membership:
    """A customer's standing in one segment; the row stays after an exit so ``seq`` continues."""

    is_member: bool
    seq: int
    joined_at: datetime | None = None


@dataclass(slots=True)
class CustomerRecord:
    """What the engine needs of one customer: its state (None = never seen) and memberships."""

    state: CustomerState | None
    memberships: dict[UUID, Membership] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """One enter/exit of a (segment, customer) pair, as stored in ``transitions`` and emitted."""

    workspace_id: str
    segment_id: UUID
    segment_name: str
    customer_id: str
    partition: int
    seq: int
    kind: str  # "entered" | "exited"
    cause: dict[str, str]
    at: datetime
