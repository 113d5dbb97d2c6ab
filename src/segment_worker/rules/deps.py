"""What a rule depends on: the fields it reads, whether time or the timezone alone can change its
result, and — for the ticker — which field values can change truth between two instants.

``flip_windows(cond, t0, t1, tz)`` answers a superset (it never misses a flip) as half-open instant
ranges on the field's value, so candidates are found with index range scans, or, for anniversaries,
as the set of month/days concerned. Calendar operators flip only when a local midnight, week or
month boundary lies between ``t0`` and ``t1``; ``in_last_days`` and friends on datetime fields move
continuously.

The same logic run forward schedules the ticker: ``flip_offsets`` says where each stored value of a
continuously moving condition flips (``v + o``), ``next_day_flip`` when a calendar-driven one can.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..timeutil import shift, shift_date
from .model import TIME_RELATIVE_OPERATORS, Condition, FieldType, Rule, conditions
from .predicate import local_month_day
from .timectx import TimeContext, add_months, anniversary_days

_US = timedelta(microseconds=1)
_CALENDAR_OPS = frozenset(("is_today", "is_yesterday", "this_week", "last_week", "this_month", "last_month"))
_ALL_MONTH_DAYS = frozenset(
    d.month * 100 + d.day for d in (date(2000, 1, 1) + timedelta(days=i) for i in range(366))
)


def fields_read(rule: Rule) -> frozenset[str]:
    """Keys of the fields ``rule`` reads (``"tags"``, ``"attributes.tier"`` …)."""
    return frozenset(c.field.key for c in conditions(rule))


def is_time_relative(cond: Condition) -> bool:
    """Whether the passage of time alone can change ``cond``'s result."""
    return cond.field.type in (FieldType.DATE, FieldType.DATETIME) and cond.op in TIME_RELATIVE_OPERATORS


def depends_on_timezone(cond: Condition) -> bool:
    """Whether changing the workspace timezone can change ``cond``'s result."""
    t, op = cond.field.type, cond.op
    if t is FieldType.DATE:
        return op in TIME_RELATIVE_OPERATORS  # "today" is a local date
    if t is not FieldType.DATETIME:
        return False
    if op in TIME_RELATIVE_OPERATORS:
        return op not in ("in_last_days", "older_than_days", "in_next_days")  # those are exact instants
    operands = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    return any(isinstance(x, date) and not isinstance(x, datetime) for x in operands)


def date_instant(d: date) -> datetime:
    """How a date value sits on the instant axis of ``FlipWindows`` (and ``customer_times``)."""
    return datetime.combine(d, time(0), UTC)


@dataclass(frozen=True, slots=True)
class FlipWindows:
    """Field values whose truth may differ between two instants.

    ``ranges``: half-open ``[lo, hi)`` UTC instants; a date value ``d`` is ``d`` 00:00 UTC.
    ``month_days``: for anniversaries, ``month*100 + day`` of the value (datetime fields: its
    calendar day in the workspace timezone).
    """

    ranges: tuple[tuple[datetime, datetime], ...] = ()
    month_days: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        """No value can flip: nothing to look for."""
        return not self.ranges and not self.month_days

    def contains(self, value: date | datetime, tz: ZoneInfo) -> bool:
        """Whether ``value`` (a date or an aware datetime) is inside these windows."""
        if isinstance(value, datetime):
            instant, md = value, local_month_day(value, tz)
        else:
            instant, md = date_instant(value), value.month * 100 + value.day
        return md in self.month_days or any(lo <= instant < hi for lo, hi in self.ranges)

    def utc_month_days(self) -> frozenset[int]:
        """``month_days`` widened by a day on each side: a superset of the UTC month/days of the
        datetime values concerned (a local day never lies more than one day from the UTC one)."""
        out: set[int] = set()
        for md in self.month_days:
            d = date(2000, md // 100, md % 100)  # a leap year holds every month/day
            for delta in (-1, 0, 1):
                n = d + timedelta(days=delta)
                out.add(n.month * 100 + n.day)
            if md == 301:
                out.add(229)
            if md == 228:
                out.add(301)
        return frozenset(out)


def _ranges(pairs: Iterable[tuple[datetime, datetime]]) -> tuple[tuple[datetime, datetime], ...]:
    return tuple((lo, hi) for lo, hi in pairs if lo < hi)


def _calendar_span(op: str, ctx: TimeContext) -> tuple[date, date]:
    today, monday, first = ctx.today, ctx.week_start, ctx.month_start
    day, week = timedelta(days=1), timedelta(days=7)
    spans = {
        "is_today": (today, shift_date(today, day)),
        "is_yesterday": (shift_date(today, -day), today),
        "this_week": (monday, shift_date(monday, week)),
        "last_week": (shift_date(monday, -week), monday),
        "this_month": (first, add_months(first, 1)),
        "last_month": (add_months(first, -1), first),
    }
    return spans[op]


def _anniversary_days(op: str, c0: TimeContext, c1: TimeContext) -> frozenset[int]:
    d0, d1 = c0.today, c1.today
    if op == "anniversary_today":
        if d0 == d1:
            return frozenset()
        if (d1 - d0).days >= 366:
            return _ALL_MONTH_DAYS
        days: set[int] = set()
        for i in range((d1 - d0).days + 1):
            days |= anniversary_days(d0 + timedelta(days=i))
        return frozenset(days)
    if (d0.year, d0.month) == (d1.year, d1.month):
        return frozenset()
    months = {d0.month}
    m = d0.replace(day=1)
    while m < d1.replace(day=1) and len(months) < 12:
        m = add_months(m, 1)
        months.add(m.month)
    return frozenset(md for md in _ALL_MONTH_DAYS if md // 100 in months)


def flip_windows(cond: Condition, t0: datetime, t1: datetime, tz: ZoneInfo) -> FlipWindows:
    """Values of ``cond``'s field whose truth at ``t0`` may differ from their truth at ``t1``.

    A superset: every value that flips is inside; conditions time cannot change give no window.
    """
    if not is_time_relative(cond):
        return FlipWindows()
    if t1 < t0:
        t0, t1 = t1, t0
    c0, c1 = TimeContext(t0, tz), TimeContext(t1, tz)
    op = cond.op
    if op.startswith("anniversary_"):
        return FlipWindows(month_days=_anniversary_days(op, c0, c1))
    if cond.field.type is FieldType.DATE:
        return FlipWindows(_date_ranges(op, cond.value, c0, c1))
    return FlipWindows(_datetime_ranges(op, cond.value, c0, c1))


def _date_ranges(
    op: str, n: object, c0: TimeContext, c1: TimeContext
) -> tuple[tuple[datetime, datetime], ...]:
    d0, d1 = c0.today, c1.today
    if op in _CALENDAR_OPS:
        (a0, b0), (a1, b1) = _calendar_span(op, c0), _calendar_span(op, c1)
        pairs = [(a0, a1), (b0, b1)]
    else:
        assert isinstance(n, int)
        days = timedelta(days=n)
        one = timedelta(days=1)

        def s(d: date, *deltas: timedelta) -> date:
            return shift_date(d, sum(deltas, timedelta(0)))

        pairs = {
            "in_last_days": [(s(d0, -days), s(d1, -days)), (s(d0, one), s(d1, one))],
            "older_than_days": [(s(d0, -days), s(d1, -days))],
            "in_next_days": [(d0, d1), (s(d0, days, one), s(d1, days, one))],
        }[op]
    return _ranges((date_instant(lo), date_instant(hi)) for lo, hi in pairs)


def _datetime_ranges(
    op: str, n: object, c0: TimeContext, c1: TimeContext
) -> tuple[tuple[datetime, datetime], ...]:
    t0, t1 = c0.now_utc, c1.now_utc
    if op in _CALENDAR_OPS:
        (a0, b0), (a1, b1) = _calendar_span(op, c0), _calendar_span(op, c1)
        return _ranges([(c0.day_start(a0), c1.day_start(a1)), (c0.day_start(b0), c1.day_start(b1))])
    assert isinstance(n, int)
    days = timedelta(days=n)
    pairs = {
        # now - N <= v <= now: leaves at the lower edge, enters at the upper (inclusive) one
        "in_last_days": [(shift(t0, -days), shift(t1, -days)), (t0, shift(t1, _US))],
        "older_than_days": [(shift(t0, -days), shift(t1, -days))],
        "in_next_days": [(t0, t1), (shift(t0, days), shift(t1, days + _US))],
    }[op]
    return _ranges(pairs)


def flip_offsets(cond: Condition) -> tuple[timedelta, ...]:
    """Where a value ``v`` of ``cond``'s field can change truth, as offsets ``o``: only at ``v + o``
    or 1 µs after it (the ticker's next boundary is ``min(v + o)`` over the stored values).

    Only ``in_last_days``/``older_than_days``/``in_next_days`` on datetime fields move with each
    value; every other time-relative condition flips only when the local day changes
    (``next_day_flip``), and conditions time cannot change give ``()``.
    """
    if not is_time_relative(cond) or cond.field.type is not FieldType.DATETIME:
        return ()
    n = cond.value
    if cond.op not in ("in_last_days", "older_than_days", "in_next_days"):
        return ()
    assert isinstance(n, int)
    days = timedelta(days=n)
    # Mirrors _datetime_ranges: a range [t0 + s, t1 + s) of values holds the flips at v - s.
    return {
        "in_last_days": (timedelta(0), days),  # enters at v, leaves 1 µs after v + N
        "older_than_days": (days,),
        "in_next_days": (-days, timedelta(0)),  # enters at v - N, leaves 1 µs after v
    }[cond.op]


# A flip driven by the calendar needs at most this many local days to come (a month and a bit);
# past it the answer is a conservative "this day start" (ticking early is harmless).
_MAX_DAYS_AHEAD = 40


def next_day_flip(cond: Condition, after: datetime, until: datetime, tz: ZoneInfo) -> datetime | None:
    """The first local day start in ``(after, until]`` at which ``cond`` can flip, or None.

    For the time-relative conditions ``flip_offsets`` leaves out: their truth depends on "now"
    only through the local calendar day (today, its week, its month), so they flip only when it
    changes, and only where ``flip_windows`` opens.
    """
    if not is_time_relative(cond) or flip_offsets(cond):
        return None
    ctx = TimeContext(after, tz)
    start = after
    for i in range(1, _MAX_DAYS_AHEAD + 1):
        day = shift_date(ctx.today, timedelta(days=i))
        if day == date.max:
            return None  # no local day starts after the last one
        start = ctx.day_start(day)
        if start > until:
            return None
        if not flip_windows(cond, after, start, tz).empty:
            return start
    return start


# The name DESIGN.md uses.
flip_ranges = flip_windows
