"""The pure engine: a batch of parsed events + the customers' records + each workspace's compiled
segments → new states (in place) and the enter/exit transitions, in event order.

After each applied event only the dynamic segments whose rules read a changed field are evaluated
(every dynamic segment when the customer was created or re-created). ``customer.deleted`` exits
every segment the customer is in, static included. Time-derived rule values are bound once per
batch (``rule.bind(ctx)``) so every customer of a batch is judged against the same instant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from uuid import UUID

from .apply import apply_event, exists
from .events import AnyInputEvent
from .partitioning import customer_partition
from .rules.model import Catalog, FieldDef, FieldType
from .rules.timectx import TimeContext
from .state import CustomerKey, CustomerRecord, CustomerState, Transition, intern_segment
from .timeutil import utc_ms


class CompiledRuleLike(Protocol):
    """What the engine needs of a compiled rule; ``rules.compiled.CompiledRule`` is the real one
    (the protocol lets tests wrap it, e.g. to count evaluations)."""

    @property
    def fields(self) -> frozenset[str]: ...

    @property
    def time_relative(self) -> bool: ...

    def bind(self, ctx: TimeContext) -> tuple[object, ...]: ...

    @property
    def matches(self) -> Callable[[CustomerState, tuple[object, ...]], bool]: ...


@dataclass(frozen=True, slots=True)
class SegmentDef:
    """A segment as the engine sees it; ``rule`` is None for static segments."""

    id: UUID
    workspace_id: str
    name: str
    type: Literal["static", "dynamic"]
    rule: CompiledRuleLike | None = None


class _Slot:
    """A dynamic segment as ``process`` walks it: identity-hashed, with its interned key, its
    predicate and its position (of its bound values in a batch)."""

    __slots__ = ("key", "matches", "pos", "rule", "seg")

    def __init__(self, seg: SegmentDef, rule: CompiledRuleLike, pos: int) -> None:
        self.seg = seg
        self.rule = rule
        self.matches = rule.matches
        self.key = intern_segment(seg.id)
        self.pos = pos


@dataclass(frozen=True, slots=True)
class WorkspaceView:
    """One workspace's catalogue and segments, indexed by the rule fields that can change them."""

    workspace_id: str
    catalog: Catalog
    attrs: Mapping[str, FieldDef]  # declared attributes by name (``tier``), for apply_event
    default_region: str | None
    segments: Mapping[UUID, SegmentDef]
    index: Mapping[str, tuple[UUID, ...]]  # field key → dynamic segments whose rule reads it
    all_dynamic: tuple[UUID, ...]
    # The same, as ``process`` reads it (built by ``build_view``): no UUID hashing per event.
    _slots: tuple[_Slot, ...] = ()
    _slot_index: Mapping[str, tuple[_Slot, ...]] = field(default_factory=dict)
    _by_key: Mapping[int, SegmentDef] = field(default_factory=dict)
    _combos: dict[frozenset[str], tuple[_Slot, ...]] = field(default_factory=dict)
    # Change keys (``attributes.<name>``) of the attributes declared date or datetime: the ones
    # ``customer_times`` mirrors.
    _time_keys: frozenset[str] = frozenset()

    def candidates(self, changed: frozenset[str]) -> tuple[_Slot, ...]:
        """The dynamic segments reading any of ``changed``, in segment order (memoised)."""
        got = self._combos.get(changed)
        if got is None:
            wanted = {slot for k in changed for slot in self._slot_index.get(k, ())}
            got = tuple(slot for slot in self._slots if slot in wanted)
            if len(self._combos) >= 4096:
                self._combos.clear()
            self._combos[changed] = got
        return got


def build_view(
    workspace_id: str,
    catalog: Catalog,
    segments: Iterable[SegmentDef],
    default_region: str | None = None,
) -> WorkspaceView:
    """Index ``segments`` (kept in the given order) for ``process``."""
    by_id: dict[UUID, SegmentDef] = {}
    index: dict[str, list[UUID]] = {}
    dynamic: list[UUID] = []
    for seg in segments:
        by_id[seg.id] = seg
        if seg.type == "dynamic" and seg.rule is not None:
            dynamic.append(seg.id)
            for key in sorted(seg.rule.fields):
                index.setdefault(key, []).append(seg.id)
    attrs = {fd.attribute_name: fd for fd in catalog.fields.values() if fd.is_attribute}
    slots = tuple(_Slot(by_id[sid], rule, n) for n, sid in enumerate(dynamic) if (rule := by_id[sid].rule))
    slot_of = {slot.seg.id: slot for slot in slots}
    return WorkspaceView(
        workspace_id=workspace_id,
        catalog=catalog,
        attrs=attrs,
        default_region=default_region,
        segments=by_id,
        index={k: tuple(v) for k, v in index.items()},
        all_dynamic=tuple(dynamic),
        _slots=slots,
        _slot_index={k: tuple(slot_of[sid] for sid in v) for k, v in index.items()},
        _by_key={intern_segment(sid): seg for sid, seg in by_id.items()},
        _time_keys=frozenset(
            fd.key for fd in attrs.values() if fd.type in (FieldType.DATE, FieldType.DATETIME)
        ),
    )


@dataclass(slots=True)
class ProcessResult:
    """``process``' answer. ``changed`` lists the keys whose state must be saved (first-change
    order), ``times_changed`` those of them whose date or datetime attributes changed (their
    ``customer_times`` rows); ``optouts`` the opt-out flips in order; ``rejected`` (event index,
    DLQ reason)."""

    transitions: list[Transition] = field(default_factory=list)
    changed: list[CustomerKey] = field(default_factory=list)
    times_changed: set[CustomerKey] = field(default_factory=set)
    optouts: list[tuple[str, str, bool]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def process(
    events: Sequence[AnyInputEvent],
    records: MutableMapping[CustomerKey, CustomerRecord],
    views: Mapping[str, WorkspaceView],
    now: datetime,
    *,
    partitions: int,
) -> ProcessResult:
    """Apply ``events`` in order to ``records`` (mutated in place; a missing key is a customer
    never seen and gets a record) and compute the resulting transitions.

    ``views`` holds each workspace's segments (an absent workspace has none); ``now`` is the batch
    time: rules bind to it and transitions carry it (UTC, ms). ``partitions`` is the input topic's
    partition count, which places a new customer. The records are changed even if the caller's
    commit later fails: a caller that caches records must drop them then.
    """
    out = ProcessResult()
    at = utc_ms(now)
    batch = _Pass(now, views, at, out)
    changed: dict[CustomerKey, None] = {}
    for i, ev in enumerate(events):
        key = (ev.workspace_id, ev.customer_id)
        view = batch.view(ev.workspace_id)
        rec = records.get(key)
        if rec is None:
            rec = records[key] = CustomerRecord(None)
        partition = rec.state.partition if rec.state is not None else customer_partition(*key, partitions)
        res = apply_event(rec.state, ev, view.attrs, view.default_region, partition)
        if res.rejected is not None:
            out.rejected.append((i, res.rejected))
            continue
        if not res.applied or res.state is None:
            continue
        state = rec.state = res.state
        changed[key] = None
        if view._time_keys and not view._time_keys.isdisjoint(res.changed):
            out.times_changed.add(key)
        if res.optout_changed:
            out.optouts.append((key[0], key[1], state.marketing_opt_out))
        if res.deleted:
            batch.exit_all(view, rec, state, {"kind": "customer_deleted", "event_id": ev.event_id})
        if not exists(state):
            continue
        if res.created:
            candidates: tuple[_Slot, ...] = view._slots
        elif not res.changed:
            continue
        elif len(res.changed) == 1:
            (only,) = res.changed
            candidates = view._slot_index.get(only, ())
        else:
            candidates = view.candidates(res.changed)
        if candidates:
            batch.evaluate(view, rec, state, candidates, ev.event_id)
    out.changed = list(changed)
    return out


class _Pass:
    """Per-batch caches (views, bound rule values) and the transition writer."""

    __slots__ = ("_bound", "_ctx", "_empty", "_now", "_views", "at", "out")
    _bound: dict[str, list[tuple[object, ...] | None]]

    def __init__(self, now: datetime, views: Mapping[str, WorkspaceView], at: datetime, out: ProcessResult):
        self._now = now
        self._views = views
        self._empty: dict[str, WorkspaceView] = {}
        self._ctx: dict[str, TimeContext] = {}
        self._bound = {}  # workspace → bound values by slot position
        self.at = at
        self.out = out

    def view(self, workspace_id: str) -> WorkspaceView:
        view = self._views.get(workspace_id)
        if view is None:
            view = self._empty.get(workspace_id)
            if view is None:
                view = self._empty[workspace_id] = build_view(workspace_id, Catalog.for_workspace(), ())
        return view

    def bounds(self, view: WorkspaceView) -> list[tuple[object, ...] | None]:
        """The batch's bound values of ``view``'s dynamic segments, by slot position (filled lazily)."""
        got = self._bound.get(view.workspace_id)
        if got is None:
            got = self._bound[view.workspace_id] = [None] * len(view._slots)
        return got

    def bind(self, view: WorkspaceView, slot: _Slot) -> tuple[object, ...]:
        ctx = self._ctx.get(view.workspace_id)
        if ctx is None:
            ctx = self._ctx[view.workspace_id] = TimeContext.at(self._now, view.catalog.timezone)
        b = self.bounds(view)[slot.pos] = slot.rule.bind(ctx)
        return b

    def evaluate(
        self,
        view: WorkspaceView,
        rec: CustomerRecord,
        state: CustomerState,
        candidates: tuple[_Slot, ...],
        event_id: str,
    ) -> None:
        bounds = self.bounds(view)
        codes = rec.codes
        cause: dict[str, str] | None = None
        for slot in candidates:
            b = bounds[slot.pos]
            if b is None:
                b = self.bind(view, slot)
            is_in = slot.matches(state, b)
            if is_in != (codes.get(slot.key, 0) & 1):
                if cause is None:  # one dict per event that moves something, shared by its transitions
                    cause = {"kind": "event", "event_id": event_id}
                self._flip(slot.seg, slot.key, rec, state, is_in, cause)

    def exit_all(
        self, view: WorkspaceView, rec: CustomerRecord, state: CustomerState, cause: dict[str, str]
    ) -> None:
        for key, code in list(rec.codes.items()):
            seg = view._by_key.get(key)
            # A membership of a segment that is gone ends without an exit event (CONTRACT §10).
            if code & 1 and seg is not None:
                self._flip(seg, key, rec, state, False, cause)

    def _flip(
        self, seg: SegmentDef, key: int, rec: CustomerRecord, state: CustomerState, enter: bool,
        cause: dict[str, str],
    ) -> None:
        seq = (rec.codes.get(key, 0) >> 1) + 1
        rec.codes[key] = (seq << 1) | enter
        self.out.transitions.append(
            Transition(
                workspace_id=state.workspace_id,
                segment_id=seg.id,
                segment_name=seg.name,
                customer_id=state.customer_id,
                partition=state.partition,
                seq=seq,
                kind="entered" if enter else "exited",
                cause=cause,
                at=self.at,
            )
        )
