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
from .rules.model import Catalog, FieldDef
from .rules.timectx import TimeContext
from .state import CustomerRecord, CustomerState, Membership, Transition
from .timeutil import utc_ms

CustomerKey = tuple[str, str]  # (workspace_id, customer_id)


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
    return WorkspaceView(
        workspace_id=workspace_id,
        catalog=catalog,
        attrs=attrs,
        default_region=default_region,
        segments=by_id,
        index={k: tuple(v) for k, v in index.items()},
        all_dynamic=tuple(dynamic),
    )


@dataclass(slots=True)
class BatchResult:
    """``process``' answer. ``changed`` lists the keys whose state must be saved (first-change
    order); ``optouts`` the opt-out flips in order; ``rejected`` (event index, DLQ reason)."""

    transitions: list[Transition] = field(default_factory=list)
    changed: list[CustomerKey] = field(default_factory=list)
    optouts: list[tuple[str, str, bool]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def process(
    events: Sequence[AnyInputEvent],
    records: MutableMapping[CustomerKey, CustomerRecord],
    views: Mapping[str, WorkspaceView],
    now: datetime,
    *,
    partitions: int,
) -> BatchResult:
    """Apply ``events`` in order to ``records`` (mutated in place; a missing key is a customer
    never seen and gets a record) and compute the resulting transitions.

    ``views`` holds each workspace's segments (an absent workspace has none); ``now`` is the batch
    time: rules bind to it and transitions carry it (UTC, ms). ``partitions`` is the input topic's
    partition count, which places a new customer. The records are changed even if the caller's
    commit later fails: a caller that caches records must drop them then.
    """
    out = BatchResult()
    at = utc_ms(now)
    batch = _Batch(now, views, at, out)
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
        if res.optout_changed:
            out.optouts.append((key[0], key[1], state.marketing_opt_out))
        if res.deleted:
            batch.exit_all(view, rec, state, {"kind": "customer_deleted", "event_id": ev.event_id})
        if not exists(state):
            continue
        if res.created:
            candidates: Iterable[UUID] = view.all_dynamic
        elif not res.changed:
            continue
        elif len(res.changed) == 1:
            (only,) = res.changed
            candidates = view.index.get(only, ())
        else:
            wanted = {sid for k in res.changed for sid in view.index.get(k, ())}
            candidates = [sid for sid in view.all_dynamic if sid in wanted] if wanted else ()
        batch.evaluate(view, rec, state, candidates, {"kind": "event", "event_id": ev.event_id})
    out.changed = list(changed)
    return out


class _Batch:
    """Per-batch caches (views, bound rule values) and the transition writer."""

    __slots__ = ("_bound", "_ctx", "_empty", "_now", "_views", "at", "out")

    def __init__(self, now: datetime, views: Mapping[str, WorkspaceView], at: datetime, out: BatchResult):
        self._now = now
        self._views = views
        self._empty: dict[str, WorkspaceView] = {}
        self._ctx: dict[str, TimeContext] = {}
        self._bound: dict[UUID, tuple[object, ...]] = {}
        self.at = at
        self.out = out

    def view(self, workspace_id: str) -> WorkspaceView:
        view = self._views.get(workspace_id)
        if view is None:
            view = self._empty.get(workspace_id)
            if view is None:
                view = self._empty[workspace_id] = build_view(workspace_id, Catalog.for_workspace(), ())
        return view

    def bound(self, view: WorkspaceView, seg: SegmentDef, rule: CompiledRuleLike) -> tuple[object, ...]:
        b = self._bound.get(seg.id)
        if b is None:
            ctx = self._ctx.get(view.workspace_id)
            if ctx is None:
                ctx = self._ctx[view.workspace_id] = TimeContext.at(self._now, view.catalog.timezone)
            b = self._bound[seg.id] = rule.bind(ctx)
        return b

    def evaluate(
        self,
        view: WorkspaceView,
        rec: CustomerRecord,
        state: CustomerState,
        candidates: Iterable[UUID],
        cause: dict[str, str],
    ) -> None:
        for sid in candidates:
            seg = view.segments[sid]
            rule = seg.rule
            if rule is None:
                continue
            is_in = rule.matches(state, self.bound(view, seg, rule))
            m = rec.memberships.get(sid)
            if is_in != (m is not None and m.is_member):
                self._flip(seg, rec, state, is_in, cause)

    def exit_all(
        self, view: WorkspaceView, rec: CustomerRecord, state: CustomerState, cause: dict[str, str]
    ) -> None:
        for sid, m in list(rec.memberships.items()):
            seg = view.segments.get(sid)
            # A membership of a segment that is gone ends without an exit event (CONTRACT §10).
            if m.is_member and seg is not None:
                self._flip(seg, rec, state, False, cause)

    def _flip(
        self, seg: SegmentDef, rec: CustomerRecord, state: CustomerState, enter: bool, cause: dict[str, str]
    ) -> None:
        m = rec.memberships.get(seg.id)
        if m is None:
            m = rec.memberships[seg.id] = Membership(False, 0)
        m.is_member = enter
        m.seq += 1
        m.joined_at = self.at if enter else None
        self.out.transitions.append(
            Transition(
                workspace_id=state.workspace_id,
                segment_id=seg.id,
                segment_name=seg.name,
                customer_id=state.customer_id,
                partition=state.partition,
                seq=m.seq,
                kind="entered" if enter else "exited",
                cause=cause,
                at=self.at,
            )
        )
