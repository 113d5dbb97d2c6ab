"""Timestamps: strict RFC 3339 parsing, versions, UTC millisecond formatting, local calendar days."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# (occurred_at in µs since the epoch, event_id): the last-writer-wins order of CONTRACT §2.
Version = tuple[int, str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Strict forms, shared with the SQL functions sw_try_date / sw_try_timestamptz (migrations):
# both evaluators must accept exactly the same strings.
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
DATETIME_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-5][0-9]"
    r"(\.[0-9]{1,6})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; raise ValueError with a reason otherwise."""
    if not DATETIME_RE.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp with offset (e.g. 2026-11-22T10:00:00Z)")
    dt = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    if dt.year < 1:
        raise ValueError(f"{value!r} is out of range")
    return dt


def try_datetime(value: object) -> datetime | None:
    """A datetime attribute value as an aware datetime, or None when it is not a valid one."""
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def try_date(value: object) -> date | None:
    """A date attribute value (``YYYY-MM-DD``), or None when it is not a valid one."""
    if not isinstance(value, str) or not DATE_RE.match(value):
        return None
    try:
        d = date.fromisoformat(value)
    except ValueError:
        return None
    return d


# Python's first and last instants. Arithmetic near them clamps here instead of raising
# OverflowError (issue 13: a far-future value stopped every tick of its worker).
FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


def shift(dt: datetime, delta: timedelta) -> datetime:
    """``dt + delta``, clamped to ``[FIRST_INSTANT, LAST_INSTANT]`` (in UTC) instead of overflowing.

    Exact whenever the true result is representable; beyond, every value a datetime can hold lies
    on the same side of the clamped bound as of the true one, so a comparison against it agrees."""
    try:
        return dt + delta
    except OverflowError:
        return LAST_INSTANT if delta > timedelta(0) else FIRST_INSTANT


def shift_date(d: date, delta: timedelta) -> date:
    """``d + delta`` clamped to ``[date.min, date.max]`` instead of overflowing (as ``shift``)."""
    try:
        return d + delta
    except OverflowError:
        return date.max if delta > timedelta(0) else date.min


def to_micros(dt: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """The aware UTC datetime of ``to_micros``' value."""
    return _EPOCH + timedelta(microseconds=us)


def format_ms(dt: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: the form of CloudEvent ``time`` and ``joined_at``."""
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def utc_ms(dt: datetime) -> datetime:
    """``dt`` in UTC truncated to milliseconds (commit times are stored at this precision)."""
    u = dt.astimezone(UTC)
    return u.replace(microsecond=(u.microsecond // 1000) * 1000)


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raise ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {name!r}") from exc


def local_day_start(d: date, tz: ZoneInfo) -> datetime:
    """The first instant of local calendar day ``d`` in ``tz`` (DST gaps at midnight handled)."""
    naive = datetime.combine(d, time(0))
    aware = naive.replace(tzinfo=tz)
    # A midnight inside a DST gap does not exist; zoneinfo maps it with the pre-gap offset,
    # which lands on the first real instant of the day once normalised through UTC.
    return aware.astimezone(UTC)


def local_date(dt: datetime, tz: ZoneInfo) -> date:
    """The calendar day of instant ``dt`` in ``tz``."""
    return dt.astimezone(tz).date()
