"""The fault suite's expectation, computed from what was *produced* and nothing the run stored.

Every produced record (with the partition and offset the broker gave it) is classified and, per
customer in partition order, folded through ``apply_event`` (the pure per-field LWW update);
after every applied event *every* compiled rule of the workspace is evaluated at one fixed clock
(not the engine's dependency index), and each (segment, customer) flip is counted. Scenarios use
no time-relative rule, so the final memberships and the number of transitions per pair are fully
determined by the input, whatever crashes, replays or rebalances happened in between.

Classification of a record (CONTRACT §2, §10):

- ``bad``: not an event (``parse_event`` refuses it), refused by ``apply_event`` (declared
  attribute type/options), raising anywhere in parse/apply (a record that parses but cannot be
  applied is poison), an instant whose UTC value falls outside years 1–9999, or a text over
  ``BAD_TEXT_BYTES`` (no documented limit can be larger: the value would not fit an index entry).
  It must be in the DLQ.
- ``uncertain``: a text longer than ``SURE_TEXT_CHARS`` but within ``BAD_TEXT_BYTES`` — its fate
  depends on the documented per-field maximum. Either is right, as long as the run is consistent
  with it: ``fold(..., dead=...)`` takes the positions the DLQ reports and applies the others.
- ``good``: everything else. It must be applied, never dead-lettered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from helpers.scenario import Workspace
from segment_worker.apply import apply_event, exists
from segment_worker.events import parse_event
from segment_worker.rules.model import FieldType
from segment_worker.rules.timectx import TimeContext
from segment_worker.state import CustomerState
from segment_worker.timeutil import try_datetime

# A btree entry holds at most 2712 bytes ("index row size 5016 exceeds maximum 2712", issue 13):
# a text the service accepts must fit, so every documented limit is at most this.
BAD_TEXT_BYTES = 2712
# Every sensible documented limit admits this much (ids themselves may be 128 characters).
SURE_TEXT_CHARS = 64

Verdict = Literal["good", "bad", "uncertain"]
Position = tuple[int, int]  # (partition, offset) in the input topic


@dataclass(frozen=True, slots=True)
class Produced:
    """One record as produced: its bytes and where the broker put it."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    log: int = 0  # which incarnation of the log (a broker restarted empty starts a new one)

    @property
    def position(self) -> Position:
        return (self.partition, self.offset)


@dataclass
class Expectation:
    """The oracle's answer for one workspace."""

    members: dict[UUID, set[str]]
    optout: set[str]
    flips: dict[tuple[UUID, str], int]  # transitions per (segment, customer); absent = 0
    bad: dict[Position, str]  # must be dead-lettered (position → why the oracle says so)
    uncertain: set[Position] = field(default_factory=set)
    applied: int = 0
    # Per pair, the events that flipped it: (event_id, entered, occurred_at) — for failure messages.
    trace: dict[tuple[UUID, str], list[tuple[str, bool, str]]] = field(default_factory=dict)


def _utc_in_range(value: datetime) -> bool:
    try:
        year = value.astimezone(UTC).year
    except (OverflowError, ValueError):
        return False
    return 1 <= year <= 9999


def _walk_texts(node: object) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for k, v in node.items():
            yield str(k)
            yield from _walk_texts(v)
    elif isinstance(node, list | tuple):
        for v in node:
            yield from _walk_texts(v)


def _instants(data: Mapping[str, Any], datetime_attrs: Collection[str]) -> Iterable[datetime]:
    """The instants an event's data carries: ``created_at`` and declared datetime attributes."""
    values = [data.get("created_at")]
    attrs = data.get("attributes")
    if isinstance(attrs, Mapping):
        values.extend(v for k, v in attrs.items() if k in datetime_attrs)
    for v in values:
        got = v if isinstance(v, datetime) else try_datetime(v) if isinstance(v, str) else None
        if got is not None:
            yield got


def classify(rec: Produced, datetime_attrs: Collection[str] = ()) -> tuple[Verdict, str]:
    """The verdict on one record from its bytes alone (``apply`` refusals are found in ``fold``)."""
    try:
        ev = parse_event(rec.value)
    except Exception as exc:  # EventError, or anything else parsing raised: poison either way
        return "bad", f"parse: {exc}"
    if not _utc_in_range(ev.occurred_at):
        return "bad", "occurred_at outside years 1-9999 in UTC"
    raw = ev.model_dump(mode="python")["data"]
    for instant in _instants(raw, datetime_attrs):
        if not _utc_in_range(instant):
            return "bad", "an instant in data outside years 1-9999 in UTC"
    longest_bytes = max((len(t.encode()) for t in _walk_texts(raw)), default=0)
    longest_chars = max((len(t) for t in _walk_texts(raw)), default=0)
    if longest_bytes > BAD_TEXT_BYTES:
        return "bad", f"a text of {longest_bytes} bytes"
    if longest_chars > SURE_TEXT_CHARS:
        return "uncertain", f"a text of {longest_chars} characters"
    return "good", ""


class Oracle:
    """Folds produced records for one workspace (records of other workspaces are ignored)."""

    def __init__(self, ws: Workspace, *, default_region: str | None = None, now: datetime | None = None):
        for sid, rule in ws.rules.items():
            assert not rule.time_relative, f"segment {sid}: the fault suite needs time-free rules"
        self.ws = ws
        self.attrs = {fd.attribute_name: fd for fd in ws.catalog.fields.values() if fd.is_attribute}
        self.region = default_region
        ctx = TimeContext.at(now or datetime.now(UTC) + timedelta(days=1), ws.timezone)
        self.datetime_attrs = frozenset(n for n, fd in self.attrs.items() if fd.type is FieldType.DATETIME)
        self.bound = {sid: (rule.matches, rule.bind(ctx)) for sid, rule in ws.rules.items()}

    def fold(self, produced: Sequence[Produced], *, dead: Collection[Position] = ()) -> Expectation:
        """The expectation for ``produced``. ``dead``: DLQ positions; only ``uncertain`` records
        are taken from it (a good record in the DLQ is a failure the checks report, not input)."""
        verdicts = {(r.log, *r.position): classify(r, self.datetime_attrs) for r in produced}
        by_partition: dict[int, list[Produced]] = defaultdict(list)
        for r in produced:
            by_partition[r.partition].append(r)
        states: dict[str, CustomerState] = {}
        member: dict[tuple[UUID, str], bool] = {}
        flips: dict[tuple[UUID, str], int] = defaultdict(int)
        trace: dict[tuple[UUID, str], list[tuple[str, bool, str]]] = defaultdict(list)
        bad: dict[Position, str] = {}
        uncertain: set[Position] = set()
        applied = 0
        for p in sorted(by_partition):
            for rec in sorted(by_partition[p], key=lambda r: (r.log, r.offset)):
                verdict, why = verdicts[(rec.log, *rec.position)]
                if verdict == "bad":
                    bad[rec.position] = why
                    continue
                if verdict == "uncertain":
                    uncertain.add(rec.position)
                    if rec.position in dead:
                        continue
                ev = parse_event(rec.value)
                if ev.workspace_id != self.ws.id:
                    continue
                try:
                    res = apply_event(states.get(ev.customer_id), ev, self.attrs, self.region, p)
                except Exception as exc:  # the worker must isolate this record, not stall on it
                    bad[rec.position] = f"apply raised {exc!r}"
                    continue
                if res.rejected is not None:
                    bad[rec.position] = f"apply: {res.rejected}"
                    uncertain.discard(rec.position)
                    continue
                if not res.applied or res.state is None:
                    continue
                applied += 1
                state = states[ev.customer_id] = res.state
                alive = exists(state)
                # A delete ends every membership (CONTRACT §2), even one that newer fields
                # re-create at once (a late, older delete): exited, then entered again.
                passes = [False, alive] if res.deleted else [alive]
                for alive_now in passes:
                    for sid, (matches, b) in self.bound.items():
                        now_in = alive_now and bool(matches(state, b))
                        pair = (sid, ev.customer_id)
                        if now_in != member.get(pair, False):
                            member[pair] = now_in
                            flips[pair] += 1
                            trace[pair].append((ev.event_id, now_in, ev.occurred_at.isoformat()))
        members: dict[UUID, set[str]] = {sid: set() for sid in self.ws.rules}
        for (sid, cid), is_in in member.items():
            if is_in:
                members[sid].add(cid)
        optout = {cid for cid, st in states.items() if exists(st) and st.marketing_opt_out}
        return Expectation(members, optout, dict(flips), bad, uncertain, applied, dict(trace))
