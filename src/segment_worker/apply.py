"""One input event applied to one customer's state: per-field last-writer-wins (DESIGN "Versions,
order, replay", CONTRACT §2).

Every write carries the event's ``Version = (occurred_at µs, event_id)`` and lands only if it is
greater than the version stored for its key in ``state.versions`` and greater than the tombstone
``(deleted_us, deleted_event_id)``. Keys: ``"f:<field>"``, ``"a:<attribute>"``, ``"t:<folded tag>"``,
and ``"s:last"`` — the latest event of any kind since the tombstone, so that an event writing
nothing else (an empty upsert) still keeps the customer alive when an older delete arrives late.

The final state is the same whatever the arrival order, and re-applying already-applied events
changes nothing, with one bounded exception to the first: ``first_seen_us`` (the default
``created_at``) is the earliest ``occurred_at`` applied since the tombstone, except when a delete
arrives after events on both sides of it. The earliest event after it may have been overwritten
and is not kept, so the customer then counts as re-created at the delete's own ``occurred_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from functools import lru_cache

from . import limits
from .events import (
    AnyInputEvent,
    CustomerAttributesSet,
    CustomerDeleted,
    CustomerInteraction,
    CustomerOptOutSet,
    CustomerTagsAdded,
    CustomerTagsRemoved,
    CustomerUpserted,
    describe_value,
)
from .phones import normalise_phone
from .rules.model import FieldDef, FieldType
from .state import CustomerState
from .text import fold
from .timeutil import Version, from_micros, to_micros, try_date, try_datetime

TEXT_FIELDS: frozenset[str] = frozenset(("phone", "name", "email", "language", "country", "platform"))
SEEN_KEY = "s:last"
_NO_CHANGE: frozenset[str] = frozenset()
_TYPE_NOUNS = {
    FieldType.TEXT: "a string",
    FieldType.NUMBER: "a number",
    FieldType.BOOLEAN: "true or false",
    FieldType.DATE: "a date (YYYY-MM-DD)",
    FieldType.DATETIME: "an RFC 3339 timestamp with offset",
    FieldType.SELECT: "a string",
    FieldType.MULTI_SELECT: "an array of strings",
}


# Not frozen: one per event, and a frozen dataclass's __init__ is ~4× slower (stores.RedisOp).
@dataclass(slots=True, unsafe_hash=True)
class ApplyResult:
    """What one event did. ``changed`` holds rule field keys (``"tags"``, ``"attributes.tier"``)
    whose value changed; ``applied`` is True when anything in the state (versions included) moved
    and the state must be saved; ``rejected`` is the DLQ reason when the event was refused."""

    state: CustomerState | None
    changed: frozenset[str] = _NO_CHANGE
    created: bool = False
    deleted: bool = False
    optout_changed: bool = False
    rejected: str | None = None
    applied: bool = False


def exists(state: CustomerState | None) -> bool:
    """Whether ``state`` is a live customer (not never-seen, not a tombstone)."""
    return state is not None and state.first_seen_us is not None


@lru_cache(maxsize=65_536)
def normalize_phone(value: str, default_region: str | None) -> str:
    """E.164 when ``value`` is a valid phone number (national numbers read in ``default_region``),
    else ``value`` trimmed — the same reading as CSV imports, so both find the same customer."""
    try:
        return normalise_phone(value, default_region)
    except ValueError:
        return value.strip()


@lru_cache(maxsize=4_096)
def _folded_options(options: tuple[str, ...]) -> frozenset[str]:
    return frozenset(fold(o) for o in options)


def declared_value_problem(name: str, value: object, fd: FieldDef) -> str | None:
    """Why ``value`` cannot be stored in declared attribute ``name`` (wrong type, or a select /
    multi_select value outside the options, compared case-insensitively), or None."""
    if value is None:
        return None
    t = fd.type
    if t is FieldType.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif t is FieldType.BOOLEAN:
        ok = isinstance(value, bool)
    elif t is FieldType.DATE:
        ok = try_date(value) is not None
    elif t is FieldType.DATETIME:
        dt = try_datetime(value)
        ok = dt is not None
        if dt is not None and (problem := limits.instant_problem(dt)) is not None:
            # A limit (CONTRACT §10), known only now: the attribute's type is the workspace's.
            return f"data.attributes.{name}: {problem} ({value!r})"
    elif t is FieldType.MULTI_SELECT:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        return (
            f"data.attributes.{name}: {describe_value(value)} is not {_TYPE_NOUNS.get(t, t.value)} "
            f"(attribute {name!r} is declared as {t.value})"
        )
    if fd.options is not None and t in (FieldType.SELECT, FieldType.MULTI_SELECT):
        allowed = _folded_options(fd.options)
        items = tuple(value) if isinstance(value, list | tuple) else (str(value),)
        for i, item in enumerate(items):
            if fold(item) not in allowed:
                where = f"{name}[{i}]" if t is FieldType.MULTI_SELECT else name
                return (
                    f"data.attributes.{where}: {item!r} is not one of the declared options "
                    f"({', '.join(fd.options)}); use null to unset"
                )
    return None


def apply_event(
    state: CustomerState | None,
    event: AnyInputEvent,
    catalog_attrs: Mapping[str, FieldDef],
    default_region: str | None,
    partition: int | None = None,
) -> ApplyResult:
    """Apply ``event`` to ``state`` in place (LWW per field; see the module docstring).

    ``catalog_attrs`` are the workspace's declared attributes by name; a value that does not fit
    its declaration rejects the whole event with the state untouched. ``partition`` (the owning
    input partition) is required when ``state`` is None and a new state is made.
    """
    if isinstance(event, CustomerAttributesSet) and catalog_attrs:
        for name, value in event.data.attributes.items():
            fd = catalog_attrs.get(name)
            problem = None if fd is None else declared_value_problem(name, value, fd)
            if problem is not None:
                return ApplyResult(state, rejected=problem)
    v: Version = (to_micros(event.occurred_at), event.event_id)
    if state is None:
        if partition is None:
            raise ValueError("apply_event needs the owning partition to create a customer state")
        state = CustomerState(event.workspace_id, event.customer_id, partition)
    elif state.deleted_us is not None and v <= (state.deleted_us, state.deleted_event_id or ""):
        return ApplyResult(state)
    old_first_seen = state.first_seen_us
    existed = old_first_seen is not None
    old_created_at = state.created_at
    old_optout = state.marketing_opt_out
    changed: set[str] = set()
    cleared = 0
    if isinstance(event, CustomerDeleted):
        cleared = _delete(state, v, changed)
        applied = True
    else:
        applied = _write_all(state, event, v, default_region, changed)
    # The derived created_at can only move with first_seen_us, or when an explicit one went away.
    recompute = state.first_seen_us != old_first_seen or isinstance(event, CustomerDeleted | CustomerUpserted)
    if recompute and "f:created_at" not in state.versions:
        state.created_at = None if state.first_seen_us is None else from_micros(state.first_seen_us)
    if state.created_at != old_created_at:
        changed.add("created_at")
    state.deleted = state.first_seen_us is None and state.deleted_us is not None
    now_exists = state.first_seen_us is not None
    # A late delete older than every write it finds supersedes nothing: in event-time order it
    # came before the customer's known life, so memberships must not exit and re-enter.
    deleted = isinstance(event, CustomerDeleted) and existed and (cleared > 0 or not now_exists)
    return ApplyResult(
        state,
        frozenset(changed),
        created=now_exists and (deleted or not existed),
        deleted=deleted,
        optout_changed=state.marketing_opt_out != old_optout,
        applied=applied,
    )


def _newer(state: CustomerState, key: str, v: Version) -> bool:
    """Claim ``key`` for version ``v`` when it is newer than the stored one."""
    old = state.versions.get(key)
    if old is not None and v <= old:
        return False
    state.versions[key] = v
    return True


def _set_text(state: CustomerState, field: str, value: str | None, changed: set[str]) -> None:
    if getattr(state, field) != value:
        setattr(state, field, value)
        setattr(state, field + "_f", None if value is None else fold(value))
        changed.add(field)


def _set_plain(state: CustomerState, field: str, value: object, changed: set[str]) -> None:
    if getattr(state, field) != value:
        setattr(state, field, value)
        changed.add(field)


def _fold_value(value: object) -> object:
    if isinstance(value, str):
        return fold(value)
    if isinstance(value, list):
        return [fold(v) for v in value]
    return value


def _set_attr(state: CustomerState, name: str, value: object, changed: set[str]) -> None:
    old = state.attrs.get(name)
    if value is None:
        if name in state.attrs:
            del state.attrs[name]
            del state.attrs_f[name]
            changed.add("attributes." + name)
        return
    stored = list(value) if isinstance(value, tuple) else value
    # type() too: 1 == True and 1 == 1.0 in Python, but rules read them differently.
    if name not in state.attrs or type(old) is not type(stored) or old != stored:
        changed.add("attributes." + name)
    state.attrs[name] = stored
    state.attrs_f[name] = _fold_value(stored)


def _write_all(
    state: CustomerState, event: AnyInputEvent, v: Version, region: str | None, changed: set[str]
) -> bool:
    applied = False
    if state.first_seen_us is None or v[0] < state.first_seen_us:
        state.first_seen_us = v[0]
        applied = True
    if _newer(state, SEEN_KEY, v):
        applied = True
    if isinstance(event, CustomerUpserted):
        data = event.data
        for key in data.model_fields_set:
            if not _newer(state, "f:" + key, v):
                continue
            applied = True
            value = getattr(data, key)
            if key == "created_at":
                state.created_at = None if value is None else value.astimezone(UTC)
            elif key == "phone" and value is not None:
                _set_text(state, key, normalize_phone(value, region), changed)
            else:
                _set_text(state, key, value, changed)
    elif isinstance(event, CustomerTagsAdded):
        for tag in event.data.tags:
            folded = fold(tag)
            if _newer(state, "t:" + folded, v):
                applied = True
                if folded not in state.tags:
                    state.tags.add(folded)
                    changed.add("tags")
                state.tag_labels[folded] = tag
    elif isinstance(event, CustomerTagsRemoved):
        for tag in event.data.tags:
            folded = fold(tag)
            if _newer(state, "t:" + folded, v):
                applied = True
                _drop_tag(state, folded, changed)
    elif isinstance(event, CustomerAttributesSet):
        for name, value in event.data.attributes.items():
            if _newer(state, "a:" + name, v):
                applied = True
                _set_attr(state, name, value, changed)
    elif isinstance(event, CustomerOptOutSet):
        if _newer(state, "f:marketing_opt_out", v):
            applied = True
            _set_plain(state, "marketing_opt_out", event.data.marketing_opt_out, changed)
    elif isinstance(event, CustomerInteraction):
        at = event.occurred_at.astimezone(UTC)
        fields = ("last_interaction_at", "last_incoming_at")
        for field in fields if event.data.direction == "incoming" else fields[:1]:
            if _newer(state, "f:" + field, v):
                applied = True
                _set_plain(state, field, at, changed)
    return applied


def _drop_tag(state: CustomerState, folded: str, changed: set[str]) -> None:
    if folded in state.tags:
        state.tags.discard(folded)
        state.tag_labels.pop(folded, None)
        changed.add("tags")


def _delete(state: CustomerState, v: Version, changed: set[str]) -> int:
    """Move the tombstone to ``v``, clear every write it supersedes; return how many it cleared."""
    state.deleted_us, state.deleted_event_id = v
    cleared = 0
    for key, version in list(state.versions.items()):
        if version > v:
            continue  # a newer write that arrived before this (late) delete survives it
        cleared += 1
        del state.versions[key]
        kind, _, name = key.partition(":")
        if kind == "a":
            _set_attr(state, name, None, changed)
        elif kind == "t":
            _drop_tag(state, name, changed)
        elif kind == "f" and name in TEXT_FIELDS:
            _set_text(state, name, None, changed)
        elif kind == "f" and name == "marketing_opt_out":
            _set_plain(state, name, False, changed)
        elif kind == "f" and name != "created_at":
            _set_plain(state, name, None, changed)
    if state.first_seen_us is not None and state.first_seen_us <= v[0]:
        # Events older than the tombstone were counted, and the earliest one after it is not
        # kept (it may have been overwritten). The tombstone's own instant is the latest value
        # no already-applied event can undercut, so a replay never moves it (CONTRACT §2).
        state.first_seen_us = v[0] if state.versions else None
    return cleared
