"""Customer state as the worker holds it in memory: the columns of the ``customers`` table.

Field names match the PostgreSQL columns one to one (migrations/001_initial.sql). Text built-ins
carry a folded copy (``*_f``) that every comparison reads; ``tags`` holds folded tags.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from .timeutil import Version

CustomerKey = tuple[str, str]  # (workspace_id, customer_id)


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
    """A customer's standing in one segment; the row stays after an exit so ``seq`` continues.

    Records (``CustomerRecord.memberships``) keep only ``is_member`` and ``seq``: nothing in the
    worker reads ``joined_at`` back (stores write it from the transitions), so it is None there."""

    is_member: bool
    seq: int
    joined_at: datetime | None = None


# Segment ids are interned: every record refers to one int key (``UUID.int``) per segment, whose
# hash is computed in C (``uuid.UUID.__hash__`` is a Python call), and one UUID object per segment.
# Interning saves memory only; equality never depends on identity, so clearing the tables is safe.
_KEYS: dict[int, tuple[int, UUID]] = {}
_MAX_INTERNED = 1 << 20


def intern_segment(segment_id: UUID) -> int:
    """The interned int key of ``segment_id`` (its 128-bit value)."""
    k = segment_id.int
    got = _KEYS.get(k)
    if got is None:
        if len(_KEYS) >= _MAX_INTERNED:
            _KEYS.clear()
        got = _KEYS[k] = (k, segment_id)
    return got[0]


def segment_uuid(key: int) -> UUID:
    """The segment id of an int key from ``intern_segment``."""
    got = _KEYS.get(key)
    return got[1] if got is not None else UUID(int=key)


def membership_code(is_member: bool, seq: int) -> int:
    """A membership packed into one int (``seq * 2 + is_member``): small ints are shared objects."""
    return (seq << 1) | is_member


class MembershipsView(MutableMapping[UUID, Membership]):
    """``CustomerRecord.memberships``: segment id → ``Membership``, over the record's packed codes
    (for stores and tests; the engine reads the codes)."""

    __slots__ = ("_codes",)

    def __init__(self, codes: dict[int, int]) -> None:
        self._codes = codes

    def __getitem__(self, segment_id: UUID) -> Membership:
        code = self._codes[segment_id.int]
        return Membership(bool(code & 1), code >> 1)

    def __setitem__(self, segment_id: UUID, m: Membership) -> None:
        self._codes[intern_segment(segment_id)] = membership_code(m.is_member, m.seq)

    def __delitem__(self, segment_id: UUID) -> None:
        del self._codes[segment_id.int]

    def __iter__(self) -> Iterator[UUID]:
        return (segment_uuid(k) for k in self._codes)

    def __len__(self) -> int:
        return len(self._codes)

    def __repr__(self) -> str:
        return repr(dict(self))


class CustomerRecord:
    """What the engine needs of one customer: its state (None = never seen) and memberships.

    Memberships live in ``codes`` (``intern_segment`` → ``membership_code``): a cached record holds
    no object per membership row. ``memberships`` is a mapping view of them."""

    __slots__ = ("codes", "state")

    def __init__(
        self, state: CustomerState | None, memberships: Mapping[UUID, Membership] | None = None
    ) -> None:
        self.state = state
        self.codes: dict[int, int] = {}
        if memberships:
            self.memberships.update(memberships)

    @property
    def memberships(self) -> MembershipsView:
        """Segment id → ``Membership`` (is_member, seq), read-write."""
        return MembershipsView(self.codes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CustomerRecord):
            return NotImplemented
        return self.state == other.state and self.codes == other.codes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CustomerRecord(state={self.state!r}, memberships={self.memberships!r})"


# Not frozen: one per transition, and a frozen dataclass's __init__ costs 1.15 µs here against
# 0.25 µs (stores.RedisOp says more). Nothing mutates a Transition; unsafe_hash keeps frozen hashing.
@dataclass(slots=True, unsafe_hash=True)
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
