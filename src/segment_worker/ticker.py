"""Time-relative re-checks: membership that changes with the passage of time alone.

Every tick, for the partitions a worker owns, the window ``(ticked_at, now]`` (``partitions.
ticked_at``, so downtime is covered when the next owner ticks) is turned by ``rules.deps.
flip_windows`` into field-value ranges whose truth may have changed; candidates come from index
range scans on those ranges (built-in datetime columns have ``(workspace_id, col)`` btrees,
date/datetime attributes live in ``customer_times``), and ``diff_segment`` re-evaluates just them
with the SQL compiler, writing transitions with cause ``{"kind": "time"}``. A partition never
ticked before is re-checked in full. All of it is one fenced unit of work; then ``ticked_at`` moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from redis.asyncio import Redis

from .catalog_cache import CatalogCache, CatalogEntry
from .clock import Clock
from .engine import CustomerKey
from .metrics import WorkerMetrics
from .rules.deps import flip_windows
from .rules.model import Condition, FieldType
from .rules.timectx import TimeContext
from .stores import postgres as pg
from .stores.unit import partition_unit
from .timeutil import utc_ms, zone

log = logging.getLogger(__name__)

TIME_CAUSE = {"kind": "time"}
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
        local = f"{col} AT TIME ZONE 'UTC'"
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


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What a tick did."""

    now: datetime
    segments_checked: int
    transitions: int
    changed: tuple[tuple[int, CustomerKey], ...]  # (partition, customer) whose memberships moved
    seconds: float


class Ticker:
    """Runs ticks for one worker (call ``tick`` between batches, under the worker's lock)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
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

    async def tick(self, epochs: Mapping[int, int]) -> TickOutcome:
        """Re-check time-relative segments over the partitions in ``epochs`` (fenced by them).

        Raises ``FencedError`` when another worker claimed one of them (nothing is written)."""
        t_start = time.perf_counter()
        now = self._clock.now()
        at = utc_ms(now)
        parts = sorted(epochs)
        checked = 0
        changed: list[tuple[int, CustomerKey]] = []
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
                    changed.extend(await self._check(u.conn, entry, t0, now, at, group))
            await pg.set_ticked_at(u.conn, parts, now)
        seconds = time.perf_counter() - t_start
        self._metrics.ticks.inc()
        self._metrics.tick_duration.observe(seconds)
        if changed:
            log.info("tick at %s moved %d memberships", now.isoformat(), len(changed))
        return TickOutcome(now, checked, len(changed), tuple(changed), seconds)

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
            for t in transitions:
                self._metrics.transitions.labels(t.kind, "time").inc()
                moved.append((t.partition, (t.workspace_id, t.customer_id)))
        return moved
