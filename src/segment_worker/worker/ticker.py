"""Time-relative re-checks: membership that changes with the passage of time alone.

Every tick, for the partitions a worker owns, the window ``(ticked_at, now]`` (``partitions.
ticked_at``, so downtime is covered when the next owner ticks) is turned by ``rules.deps.
flip_windows`` into field-value ranges whose truth may have changed; candidates come from index
range scans on those ranges (built-in datetime columns have ``(workspace_id, col)`` btrees,
date/datetime attributes live in ``customer_times``), and ``diff_segment`` re-evaluates just them
with the SQL compiler, writing transitions with cause ``{"kind": "time"}``. A partition never
ticked before is re-checked in full. All of it is one fenced unit of work; then ``ticked_at`` moves.

When to tick: the window logic makes any tick instant correct, so ticks are scheduled at the flips
(``TickSchedule``). Each tick (inside its unit) and each re-plan after batches (``next_boundary``)
find the earliest instant at which some owned customer can flip — ``min(v + o)`` index probes for
the continuously moving conditions (``rules.deps.flip_offsets``), the next local day start for
calendar-driven ones (``next_day_flip``) — and the next tick runs just after it: never later than
``tick_seconds`` after the last tick, never sooner than ``TICK_FLOOR_SECONDS`` after it (dense flips
batch up).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from ..rules.deps import flip_offsets, flip_windows, next_day_flip
from ..rules.model import Condition, FieldDef, FieldType
from ..rules.timectx import TimeContext
from ..state import CustomerKey
from ..stores import postgres as pg
from ..stores.redis_client import RedisClient
from ..stores.unit import partition_unit
from ..timeutil import shift, utc_ms, zone
from .catalog_cache import CatalogCache, CatalogEntry
from .clock import Clock
from .failures import classify
from .metrics import WorkerMetrics

log = logging.getLogger(__name__)

TIME_CAUSE = {"kind": "time"}
# Ticks never start closer together than this (dense flips share a tick) …
TICK_FLOOR_SECONDS = 0.25
# … and start this long after the flip they are for: a leaving edge flips 1 µs after its boundary,
# and the loop's timer and the wall clock may disagree by a few milliseconds.
TICK_SLACK_SECONDS = 0.05
# Re-planning after batches (``Ticker.next_boundary``) runs at most this often: at 1M customers
# under write load its index probes took 300–650 ms each, and at every floor (per lane) they ate
# most of a PostgreSQL core. A value written due sooner waits at most this much longer.
REPLAN_SECONDS = 1.0
# Built-in datetime columns (each with a (workspace_id, col) btree): the only ones named in SQL.
_BUILTIN_TIME_COLUMNS = frozenset(("created_at", "last_interaction_at", "last_incoming_at"))


@dataclass(slots=True)
class _Params:
    """Placeholders numbered after the rule's own parameters (diff_segment shares them)."""

    next: int
    values: list[object] = field(default_factory=list)

    def add(self, value: object) -> str:
        self.values.append(value)
        ref = f"${self.next}"
        self.next += 1
        return ref


def _condition_candidates(
    cond: Condition, workspace_id: str, t0: datetime, t1: datetime, tz_name: str, params: _Params
) -> list[str]:
    """SELECTs of the customer ids whose value of ``cond``'s field lies in its flip windows."""
    windows = flip_windows(cond, t0, t1, zone(tz_name))
    if windows.empty:
        return []
    fd = cond.field
    ws = params.add(workspace_id)
    selects: list[str] = []
    if fd.is_attribute:
        attr = params.add(fd.attribute_name)
        base = f"SELECT customer_id FROM customer_times WHERE workspace_id = {ws} AND attr = {attr}"
        for lo, hi in windows.ranges:
            lo_ref, hi_ref = params.add(lo), params.add(hi)
            selects.append(f"{base} AND value >= {lo_ref}::timestamptz AND value < {hi_ref}::timestamptz")
        if windows.month_days:
            # customer_times.month_day is the UTC calendar day for datetimes: widen to cover it.
            days = windows.month_days if fd.type is FieldType.DATE else windows.utc_month_days()
            selects.append(f"{base} AND month_day = ANY({params.add(sorted(days))}::smallint[])")
        return selects
    col = fd.key
    if col not in _BUILTIN_TIME_COLUMNS:  # pragma: no cover - the catalogue has no other built-in times
        raise ValueError(f"no time index for field {col!r}")
    base = f"SELECT customer_id FROM customers WHERE workspace_id = {ws}"
    for lo, hi in windows.ranges:
        lo_ref, hi_ref = params.add(lo), params.add(hi)
        selects.append(f"{base} AND {col} >= {lo_ref}::timestamptz AND {col} < {hi_ref}::timestamptz")
    if windows.month_days:
        # The UTC calendar day, widened to every local day it can be: PostgreSQL's tzdata may differ
        # from zoneinfo's (the evaluators use zoneinfo's offsets), UTC never does.
        md = params.add(sorted(windows.utc_month_days()))
        # ±infinity (how asyncpg stores Python's first and last instants) as those instants.
        finite = (
            f"CASE WHEN {col} = '-infinity' THEN timestamptz '0001-01-01 00:00:00+00'"
            f" WHEN {col} = 'infinity' THEN timestamptz '9999-12-31 23:59:59.999999+00' ELSE {col} END"
        )
        local = f"({finite}) AT TIME ZONE 'UTC'"
        selects.append(
            f"{base} AND (extract(month FROM {local}) * 100 + extract(day FROM {local}))::int"
            f" = ANY({md}::int[])"
        )
    return selects


def candidates_sql(
    conditions: Sequence[Condition],
    workspace_id: str,
    t0: datetime,
    t1: datetime,
    tz_name: str,
    first_param: int,
) -> tuple[str | None, list[object]]:
    """One SELECT (a UNION) of every customer whose truth of some condition may flip in ``(t0, t1]``,
    with its parameters numbered from ``first_param``; None when no condition can flip."""
    params = _Params(first_param)
    selects: list[str] = []
    for cond in conditions:
        selects.extend(_condition_candidates(cond, workspace_id, t0, t1, tz_name, params))
    if not selects:
        return None, []
    return " UNION ".join(selects), params.values


# One index probe: the smallest value of a workspace's field at or after some instant.
Probe = tuple[str, FieldDef, timedelta]  # (workspace id, datetime field, flip offset)


def boundary_sql(
    probes: Sequence[Probe], after: datetime, partitions: Sequence[int], until: datetime | None = None
) -> tuple[str, list[object]]:
    """One row: for each probe ``(ws, field, o)``, the smallest value ``v >= after - o`` of ``field``
    among ``partitions``' customers of ``ws`` (NULL when none) — its first flip after ``after`` is
    ``v + o`` — and, with ``until``, only a ``v <= until - o``, whose flip comes by then (so ``v + o``
    never leaves datetime's range: 9999-12-28 + 7 days stopped every tick, issue 13). Each column is
    a min over a ``(workspace_id, …, value)`` btree: one index descent."""
    params = _Params(1)
    parts = params.add(sorted(partitions))
    columns: list[str] = []
    for workspace_id, fd, offset in probes:
        ws, lo = params.add(workspace_id), params.add(shift(after, -offset))
        hi = "" if until is None else f" AND {{v}} <= {params.add(shift(until, -offset))}::timestamptz"
        if fd.is_attribute:
            attr = params.add(fd.attribute_name)
            columns.append(
                f"(SELECT min(value) FROM customer_times WHERE workspace_id = {ws} AND attr = {attr}"
                f" AND value >= {lo}::timestamptz{hi.format(v='value')} AND partition = ANY({parts}::int[]))"
            )
            continue
        col = fd.key
        if col not in _BUILTIN_TIME_COLUMNS:  # pragma: no cover - the catalogue has no other built-in times
            raise ValueError(f"no time index for field {col!r}")
        columns.append(
            f"(SELECT min({col}) FROM customers WHERE workspace_id = {ws}"
            f" AND {col} >= {lo}::timestamptz{hi.format(v=col)} AND partition = ANY({parts}::int[]))"
        )
    return "SELECT " + ", ".join(columns), params.values


class TickSchedule:
    """When the next tick is due, in seconds of the event loop's monotonic clock."""

    def __init__(self, period: float, now: float) -> None:
        self.period = period
        self.floor = min(TICK_FLOOR_SECONDS, period)
        self.due = now + period
        self.not_before = now

    def ticked(self, now: float) -> None:
        """A tick just ended at ``now``: the next one is a period away unless a flip comes sooner."""
        self.due = now + self.period
        self.not_before = now + self.floor

    def flip_at(self, at: datetime | None, wall: datetime, now: float) -> None:
        """Some membership can flip at instant ``at`` (None: no flip known), ``wall`` being the
        worker clock's instant at ``now``: tick just after it (at once when it is overdue)."""
        if at is None:
            return
        seconds = (at - wall).total_seconds()
        self.due = min(self.due, max(self.not_before, now + seconds + TICK_SLACK_SECONDS))

    def until(self, wall: datetime, now: float) -> datetime:
        """The worker clock's instant when the next tick is due (``wall`` read at ``now``)."""
        return wall + timedelta(seconds=max(0.0, self.due - now))


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What a tick did."""

    now: datetime
    segments_checked: int
    transitions: int
    changed: tuple[tuple[int, CustomerKey], ...]  # (partition, customer) whose memberships moved
    seconds: float
    # The earliest instant in [now, now + plan_ahead] at which a membership can flip next.
    next_flip: datetime | None = None

    @classmethod
    def merge(cls, now: datetime, parts: Sequence[TickOutcome]) -> TickOutcome:
        """One outcome of a tick run partition by partition."""
        flips = [o.next_flip for o in parts if o.next_flip is not None]
        return cls(
            min((o.now for o in parts), default=now),
            sum(o.segments_checked for o in parts),
            sum(o.transitions for o in parts),
            tuple(c for o in parts for c in o.changed),
            sum(o.seconds for o in parts),
            min(flips, default=None),
        )


class Ticker:
    """Runs ticks for one worker (call ``tick`` between batches, under the worker's lock)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: RedisClient,
        catalogs: CatalogCache,
        clock: Clock,
        metrics: WorkerMetrics,
        *,
        on_connection: Callable[[int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._catalogs = catalogs
        self._clock = clock
        self._metrics = metrics
        self._on_connection = on_connection
        # What the last tick checked up to, and with which catalogues: where planning starts.
        self._ticked_at: datetime | None = None
        self._entries: list[CatalogEntry] = []

    async def tick(self, epochs: Mapping[int, int], *, plan_ahead: float | None = None) -> TickOutcome:
        """Re-check time-relative segments over the partitions in ``epochs`` (fenced by them); with
        ``plan_ahead`` (seconds), also find the next flip up to that far ahead (``TickOutcome.next_flip``).

        Raises ``FencedError`` when another worker claimed one of them (nothing is written), and
        transient errors. Any other failure is isolated (issue 13), so the rest always ticks: the
        tick is run again with each workspace in a savepoint, and a workspace that fails is skipped,
        logged and counted (``segment_worker_tick_failures{scope="workspace"}``); if it still fails,
        each partition ticks alone and one that fails is skipped the same way (``scope="partition"``).
        """
        try:
            return await self._tick(epochs, plan_ahead, isolate=False)
        except Exception as exc:
            if classify(exc) != "poison":
                raise
            log.warning("tick over partitions %s failed (%s: %s); ticking each workspace apart",
                        sorted(epochs), type(exc).__name__, exc)
        try:
            return await self._tick(epochs, plan_ahead, isolate=True)
        except Exception as exc:
            if classify(exc) != "poison":
                raise
            failure = exc
        outcomes: list[TickOutcome] = []
        for p in sorted(epochs):
            try:
                if len(epochs) == 1:
                    raise failure
                outcomes.append(await self._tick({p: epochs[p]}, plan_ahead, isolate=True))
            except Exception as exc:
                if classify(exc) != "poison":
                    raise
                log.error("tick of partition %d failed; skipped, the other partitions tick: %s: %s",
                          p, type(exc).__name__, exc, exc_info=exc)
                self._metrics.tick_failures.labels("partition").inc()
        return TickOutcome.merge(self._clock.now(), outcomes)

    async def _tick(
        self, epochs: Mapping[int, int], plan_ahead: float | None, *, isolate: bool
    ) -> TickOutcome:
        t_start = time.perf_counter()
        now = self._clock.now()
        at = utc_ms(now)
        parts = sorted(epochs)
        checked = 0
        changed: list[tuple[int, CustomerKey]] = []
        next_flip: datetime | None = None
        async with partition_unit(self._pool, self._redis, parts, fence=dict(epochs)) as u:
            if self._on_connection is not None:
                self._on_connection(u.conn.get_server_pid())
            ticked = await pg.get_ticked_at(u.conn, parts)
            since: dict[datetime | None, list[int]] = {}
            for p in parts:
                since.setdefault(ticked.get(p), []).append(p)
            entries = await self._catalogs.with_time_relative(u.conn)
            for t0, group in since.items():
                for entry in entries:
                    checked += len(entry.time_relative)
                    if not isolate:
                        changed.extend(await self._check(u.conn, entry, t0, now, at, group))
                        continue
                    try:
                        async with u.conn.transaction():  # a savepoint: a failed workspace leaves nothing
                            changed.extend(await self._check(u.conn, entry, t0, now, at, group))
                    except Exception as exc:
                        if classify(exc) != "poison":
                            raise
                        log.error("tick of workspace %s over partitions %s failed; skipped, the others tick:"
                                  " %s: %s", entry.workspace_id, group, type(exc).__name__, exc, exc_info=exc)
                        self._metrics.tick_failures.labels("workspace").inc()
            if plan_ahead is not None:
                # Under the tick's partition locks: exactly the values the tick saw, none that a
                # batch writes afterwards (those are the after-batch re-plans' business).
                until = shift(now, timedelta(seconds=plan_ahead))
                next_flip = await self._plan(u.conn, entries, parts, now, until)
            await pg.set_ticked_at(u.conn, parts, now)
        self._ticked_at, self._entries = now, entries
        seconds = time.perf_counter() - t_start
        self._metrics.ticks.inc()
        self._metrics.tick_duration.observe(seconds)
        if changed:
            log.info("tick at %s moved %d memberships", now.isoformat(), len(changed))
        return TickOutcome(now, checked, len(changed), tuple(changed), seconds, next_flip)

    async def next_boundary(self, partitions: Sequence[int], until: datetime) -> datetime | None:
        """The earliest instant in ``[now, until]`` at which a customer of ``partitions`` can change
        membership of a time-relative segment by time alone (None: none found) — to re-plan after
        batches, which can write values that flip before the next planned tick.

        Flips of values written before the last tick were planned by it (``tick(plan_ahead=…)``);
        this looks only from "now" on, because a batch has already evaluated the values it wrote
        at its own instant (a fresh interaction is a past "enters at v" boundary). So a batch's
        value that flips between that batch and this call waits for the planned tick. Uses the
        last tick's catalogues: a segment created since is first planned by the next tick.
        """
        if self._ticked_at is None or not partitions:
            return None
        after = max(self._ticked_at, self._clock.now())
        if after > until:
            return None
        async with self._pool.acquire() as conn:
            return await self._plan(conn, self._entries, partitions, after, until)

    async def _plan(
        self,
        conn: asyncpg.Connection,
        entries: Sequence[CatalogEntry],
        partitions: Sequence[int],
        after: datetime,
        until: datetime,
    ) -> datetime | None:
        """The earliest instant in ``[after, until]`` at which a value stored now can flip.

        A superset, like ``flip_windows``: a tick at that instant may find nothing to do, but no
        flip of these values comes earlier. One round trip of index probes (none without
        continuously moving conditions)."""
        best: datetime | None = None
        probes: dict[Probe, None] = {}  # ordered, without duplicates
        for entry in entries:
            tz = zone(entry.timezone)
            for _seg, rule in entry.time_relative:
                for cond in rule.time_conditions:
                    offsets = flip_offsets(cond)
                    for o in offsets:
                        probes[(entry.workspace_id, cond.field, o)] = None
                    day = None if offsets else next_day_flip(cond, after, until, tz)
                    if day is not None and (best is None or day < best):
                        best = day
        if probes:
            sql, params = boundary_sql(list(probes), after, partitions, until)
            row = await conn.fetchrow(sql, *params)
            assert row is not None
            for (_ws, _fd, o), v in zip(probes, row, strict=True):
                at = None if v is None else shift(v, o)
                if at is not None and at <= until and (best is None or at < best):
                    best = at
        return best

    async def _check(
        self,
        conn: asyncpg.Connection,
        entry: CatalogEntry,
        t0: datetime | None,
        now: datetime,
        at: datetime,
        partitions: list[int],
    ) -> list[tuple[int, CustomerKey]]:
        ctx = TimeContext.at(now, entry.timezone)
        moved: list[tuple[int, CustomerKey]] = []
        for seg, rule in entry.time_relative:
            where, params = rule.sql_where(ctx, 1)
            cand: str | None = None
            extra: list[object] = []
            if t0 is not None:  # never ticked: re-check every customer of the partitions
                cand, extra = candidates_sql(
                    rule.time_conditions, entry.workspace_id, t0, now, entry.timezone, len(params) + 1
                )
                if cand is None:
                    continue
            transitions = await pg.diff_segment(
                conn,
                entry.workspace_id,
                seg.id,
                seg.name,
                where,
                [*params, *extra],
                partitions=partitions,
                candidates_sql=cand,
                cause=TIME_CAUSE,
                at=at,
            )
            self._metrics.count_transitions(transitions, "time")
            moved.extend((t.partition, (t.workspace_id, t.customer_id)) for t in transitions)
        return moved
