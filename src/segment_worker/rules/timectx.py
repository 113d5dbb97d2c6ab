"""The moment and place rules are evaluated at, and every time-derived value a condition needs.

Both evaluators read calendar boundaries only from ``bind_condition``: the Python predicate gets
them as a tuple, the SQL query as parameters. Boundaries are computed here with zoneinfo
(DST-correct through ``timeutil.local_day_start``), so the two evaluators cannot disagree on where
a day, week or month starts. Weeks start on Monday (CONTRACT §3).

The one place SQL needs a value's *local* calendar day is anniversaries on datetime fields. It does
not use PostgreSQL's own time zone database (``AT TIME ZONE``), which is often a different tzdata
release than Python's (an embedded PostgreSQL ships its own; they differ for over a hundred zones,
even for 2026+ instants in Africa/Casablanca): ``zone_table`` turns zoneinfo's offsets into
parameters for ``sw_local_time`` (migration 002) instead.
"""

from __future__ import annotations

import bisect
import calendar
import importlib.resources
import os
import struct
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

from ..timeutil import local_day_start, shift, shift_date, zone
from .model import Condition, FieldType

# Evaluation instants (the worker's clock) stay inside these years, so ±36500-day windows and
# calendar spans around "now" are exact; arithmetic clamps to datetime's range anyway (shift).
MIN_YEAR = 1000
MAX_YEAR = 9000
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)


def add_months(d: date, months: int) -> date:
    """The first day of the month ``months`` after ``d``'s month (clamped to date's range)."""
    index = d.year * 12 + (d.month - 1) + months
    if index // 12 > date.max.year:
        return date.max
    if index // 12 < date.min.year:
        return date.min
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class TimeContext:
    """``now`` (an aware instant) in the workspace timezone ``tz``; derived local calendar values."""

    now: datetime
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError(f"TimeContext.now must be timezone-aware, got {self.now!r}")
        if not MIN_YEAR <= self.now.astimezone(UTC).year <= MAX_YEAR:
            raise ValueError(f"TimeContext.now {self.now.isoformat()} is outside years {MIN_YEAR}–{MAX_YEAR}")

    @classmethod
    def at(cls, now: datetime, timezone: str) -> TimeContext:
        """A context for the IANA zone named ``timezone`` (ValueError when unknown)."""
        return cls(now=now, tz=zone(timezone))

    def day_start(self, d: date) -> datetime:
        """The first instant (UTC) of local calendar day ``d``."""
        return local_day_start(d, self.tz)

    @cached_property
    def now_utc(self) -> datetime:
        """``now`` in UTC (the form every bound instant takes)."""
        return self.now.astimezone(UTC)

    @cached_property
    def today(self) -> date:
        """The local calendar day of ``now``."""
        return self.now.astimezone(self.tz).date()

    @cached_property
    def week_start(self) -> date:
        """Monday of the local week of ``now``."""
        return shift_date(self.today, -timedelta(days=self.today.weekday()))

    @cached_property
    def month_start(self) -> date:
        """The first day of the local month of ``now``."""
        return self.today.replace(day=1)

    @cached_property
    def anniversary_days(self) -> frozenset[int]:
        """``month*100 + day`` values whose anniversary is today."""
        return anniversary_days(self.today)


def anniversary_days(d: date) -> frozenset[int]:
    """``month*100 + day`` values whose anniversary falls on ``d`` (29 Feb is 28 Feb in common years)."""
    if d.month == 2 and d.day == 28 and not calendar.isleap(d.year):
        return frozenset((228, 229))
    return frozenset((d.month * 100 + d.day,))


# What each (field kind, operator) binds, in order. Date fields bind local dates; datetime fields
# bind UTC instants. ``operand`` is the normalised operand (a date, an instant or an int).
def bind_condition(cond: Condition, ctx: TimeContext) -> tuple[object, ...]:
    """The time-derived values of one condition, in the order both generators expect.

    Conditions on other field types, and ``is_empty``/``is_not_empty``, bind nothing.
    """
    t = cond.field.type
    if t is FieldType.DATE:
        return _bind_date(cond.op, cond.value, ctx)
    if t is FieldType.DATETIME:
        return _bind_datetime(cond.op, cond.value, ctx)
    return ()


def binds(cond: Condition) -> bool:
    """Whether ``cond`` takes bound values (every date/datetime operator but the emptiness ones)."""
    return cond.field.type in (FieldType.DATE, FieldType.DATETIME) and cond.op not in (
        "is_empty",
        "is_not_empty",
    )


def _calendar_dates(op: str, ctx: TimeContext) -> tuple[date, date] | None:
    """[start, end) local dates of the calendar operators (is_today … last_month)."""
    today, monday, first = ctx.today, ctx.week_start, ctx.month_start
    match op:
        case "is_today":
            return today, shift_date(today, _DAY)
        case "is_yesterday":
            return shift_date(today, -_DAY), today
        case "this_week":
            return monday, shift_date(monday, _WEEK)
        case "last_week":
            return shift_date(monday, -_WEEK), monday
        case "this_month":
            return first, add_months(first, 1)
        case "last_month":
            return add_months(first, -1), first
    return None


def _bind_date(op: str, v: object, ctx: TimeContext) -> tuple[object, ...]:
    if op in ("is_empty", "is_not_empty"):
        return ()
    span = _calendar_dates(op, ctx)
    if span is not None:
        return span
    today = ctx.today
    match op:
        case "on" | "not_on" | "before" | "after":
            return (v,)
        case "between":
            assert isinstance(v, tuple)
            return v
        case "in_last_days":
            assert isinstance(v, int)
            return shift_date(today, -timedelta(days=v)), today
        case "older_than_days":
            assert isinstance(v, int)
            return (shift_date(today, -timedelta(days=v)),)
        case "in_next_days":
            assert isinstance(v, int)
            return today, shift_date(today, timedelta(days=v))
        case "anniversary_today":
            return (ctx.anniversary_days,)
        case "anniversary_this_month":
            return (today.month,)
    raise ValueError(f"operator {op!r} is not a date operator")


def _lower(v: object, ctx: TimeContext) -> datetime:
    """Inclusive lower bound: a date operand is the first instant of that local day."""
    if isinstance(v, datetime):
        return v
    assert isinstance(v, date)
    return ctx.day_start(v)


def _upper_exclusive(v: date, ctx: TimeContext) -> datetime:
    return ctx.day_start(v + timedelta(days=1))


def _bind_datetime(op: str, v: object, ctx: TimeContext) -> tuple[object, ...]:
    """Instants (UTC). A date operand stands for its whole local day; a datetime for itself."""
    if op in ("is_empty", "is_not_empty"):
        return ()
    span = _calendar_dates(op, ctx)
    if span is not None:
        return ctx.day_start(span[0]), ctx.day_start(span[1])
    now = ctx.now_utc
    match op:
        case "on" | "not_on":
            # A datetime operand: the one instant; [v, v] is compared as lo <= x <= hi.
            if isinstance(v, datetime):
                return v, v
            assert isinstance(v, date)
            return ctx.day_start(v), _upper_exclusive(v, ctx)
        case "before":
            return (_lower(v, ctx),)
        case "after":
            if isinstance(v, datetime):
                return (v,)
            assert isinstance(v, date)
            return (_upper_exclusive(v, ctx),)
        case "between":
            assert isinstance(v, tuple)
            lo, hi = v
            return _lower(lo, ctx), hi if isinstance(hi, datetime) else _upper_exclusive(hi, ctx)
        case "in_last_days":
            assert isinstance(v, int)
            return shift(now, -timedelta(days=v)), now
        case "older_than_days":
            assert isinstance(v, int)
            return (shift(now, -timedelta(days=v)),)
        case "in_next_days":
            assert isinstance(v, int)
            return now, shift(now, timedelta(days=v))
        case "anniversary_today":
            return ctx.anniversary_days, ctx.tz
        case "anniversary_this_month":
            return ctx.today.month, ctx.tz
    raise ValueError(f"operator {op!r} is not a datetime operator")


# -- the workspace zone as data for SQL -------------------------------------------------------------

# 400 Gregorian years (146097 days): calendar, weekdays and zone rules after the last explicit
# transition all repeat with this period.
GREGORIAN_CYCLE = timedelta(days=146_097)
_SAMPLE_STEP = timedelta(days=7)  # no rule-based DST period of real zones is shorter
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ZoneTable:
    """zoneinfo's UTC offset of every instant, as arrays SQL can search (``sw_local_time``).

    The offset of instant ``v`` is ``offsets[i]`` where ``i`` is the number of ``transitions`` at or
    before ``v``; from ``cycle_start`` on, offsets repeat every 400 years, so ``v`` is first moved
    back into ``[cycle_start, cycle_start + 400 years)`` by whole cycles.
    """

    transitions: tuple[datetime, ...]
    offsets: tuple[int, ...]  # seconds east of UTC; one more than transitions
    cycle_start: datetime

    def offset_at(self, v: datetime) -> int:
        """The offset this table gives for ``v`` (what SQL computes; for tests and checks)."""
        if v >= self.cycle_start:
            v -= GREGORIAN_CYCLE * ((v - self.cycle_start) // GREGORIAN_CYCLE)
        return self.offsets[bisect.bisect_right(self.transitions, v)]


def _tzif_bytes(key: str) -> bytes:
    """The TZif file zoneinfo reads for ``key``: the first in ``zoneinfo.TZPATH``, else ``tzdata``."""
    for base in zoneinfo.TZPATH:
        path = os.path.join(base, key)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    resource = importlib.resources.files("tzdata").joinpath("zoneinfo", *key.split("/"))
    return resource.read_bytes()


def _tzif_transitions(data: bytes) -> list[int]:
    """Transition times (Unix seconds) of a TZif file (RFC 8536), from its 64-bit data when present."""
    if data[:4] != b"TZif":
        raise ValueError("not a TZif file")
    isut, isstd, leap, timecnt, typecnt, charcnt = struct.unpack(">6l", data[20:44])
    if data[4] == 0:
        return list(struct.unpack(f">{timecnt}l", data[44 : 44 + 4 * timecnt]))
    start = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut
    timecnt = struct.unpack(">6l", data[start + 20 : start + 44])[3]
    return list(struct.unpack(f">{timecnt}q", data[start + 44 : start + 44 + 8 * timecnt]))


def _to_unix(v: datetime) -> int:
    return (v - _EPOCH) // timedelta(seconds=1)


def _offset(tz: ZoneInfo, v: datetime) -> int:
    off = v.astimezone(tz).utcoffset()
    assert off is not None
    return int(off.total_seconds())


@lru_cache(maxsize=128)
def zone_table(tz: ZoneInfo) -> ZoneTable:
    """The offsets zoneinfo gives in ``tz``, for every instant of years 1–9999, as a ``ZoneTable``.

    Explicit transitions come from the zone's TZif file (the one zoneinfo reads); the rule-based
    part after them is sampled weekly over one 400-year cycle and each change located to the
    second. Offsets are always read back through zoneinfo itself.
    """
    if tz.key is None:
        raise ValueError("a zone table needs a zone loaded by key")
    # Transitions within Python's range (TZif files may hold a "big bang" one at -2**59).
    lowest, highest = _to_unix(datetime(1, 1, 3, tzinfo=UTC)), _to_unix(datetime(9999, 12, 29, tzinfo=UTC))
    explicit = [
        _EPOCH + timedelta(seconds=s) for s in _tzif_transitions(_tzif_bytes(tz.key)) if lowest < s < highest
    ]
    transitions: list[datetime] = []
    offsets = [_offset(tz, explicit[0] - timedelta(seconds=1)) if explicit else _offset(tz, _EPOCH)]
    for t in explicit:
        off = _offset(tz, t)
        if off != offsets[-1]:
            transitions.append(t)
            offsets.append(off)
    last = explicit[-1] if explicit else _EPOCH
    cycle_start = datetime(last.year + 2, 1, 1, tzinfo=UTC)
    a, end = last, cycle_start + GREGORIAN_CYCLE + _SAMPLE_STEP
    while a < end:
        b = a + _SAMPLE_STEP
        if _offset(tz, b) != offsets[-1]:
            lo, hi = a, b  # offset(lo) == offsets[-1] != offset(hi): bisect to the second
            while hi - lo > timedelta(seconds=1):
                mid = (lo + (hi - lo) / 2).replace(microsecond=0)
                if _offset(tz, mid) == offsets[-1]:
                    lo = mid
                else:
                    hi = mid
            transitions.append(hi)
            offsets.append(_offset(tz, hi))
            a = hi
        else:
            a = b
    return ZoneTable(tuple(transitions), tuple(offsets), cycle_start)
