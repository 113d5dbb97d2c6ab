"""Calendar semantics in a workspace timezone, in both evaluators: DST changes (New York, Berlin,
Santiago's midnight gap), week and month edges that differ from UTC's, leap-day anniversaries; and
the zone table SQL uses instead of PostgreSQL's own tzdata."""

from __future__ import annotations

import random
import zoneinfo
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from test_rules_support import evaluate_both, make_state, new_workspace

from segment_worker.rules.timectx import TimeContext, zone_table


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.fixture(scope="module")
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(pg_dsn)
    yield c
    await c.close()


async def _check(
    conn: asyncpg.Connection,
    ctx: TimeContext,
    doc: dict[str, Any],
    values: dict[str, datetime],
    expected: set[str],
) -> None:
    """Customers whose created_at and datetime attribute are ``values``; both fields must give
    ``expected`` in both evaluators."""
    for field in ("created_at", "attributes.dt"):
        ws = new_workspace()
        states = [make_state(ws, cid, created_at=v, attrs={"dt": v.isoformat()}) for cid, v in values.items()]
        python, sql = await evaluate_both(conn, {**doc, "field": field}, states, ctx)
        assert (python, sql) == (expected, expected), field


# New York, 2024-03-10: clocks jump from 02:00 to 03:00, the day lasts 23 hours.
NY = "America/New_York"


async def test_new_york_spring_forward_day_is_23_hours(conn: asyncpg.Connection) -> None:
    ctx = TimeContext.at(utc(2024, 3, 10, 12), NY)
    values = {
        "day_start": utc(2024, 3, 10, 5),  # 00:00 EST
        "before": utc(2024, 3, 10, 4, 59, 59, 999999),
        "day_end": utc(2024, 3, 11, 3, 59, 59, 999999),  # 23:59:59.999999 EDT
        "next_day": utc(2024, 3, 11, 4),  # 00:00 EDT
    }
    await _check(conn, ctx, {"op": "is_today"}, values, {"day_start", "day_end"})
    await _check(conn, ctx, {"op": "is_yesterday"}, values, {"before"})
    await _check(conn, ctx, {"op": "on", "value": "2024-03-11"}, values, {"next_day"})
    # exact instants are not calendar days: 1 day = 24 hours back from now
    await _check(conn, ctx, {"op": "in_last_days", "value": 1}, values, {"day_start", "before"})


async def test_berlin_fall_back_day_is_25_hours(conn: asyncpg.Connection) -> None:
    ctx = TimeContext.at(utc(2024, 10, 27, 23, 30), "Europe/Berlin")  # 00:30 CET on the 28th
    values = {
        "first": utc(2024, 10, 26, 22),  # 00:00 CEST on the 27th
        "repeated_hour": utc(2024, 10, 27, 1, 30),  # 02:30 CET, the second 02:30
        "last": utc(2024, 10, 27, 22, 59, 59),  # 23:59:59 CET
        "today": utc(2024, 10, 27, 23),
    }
    await _check(conn, ctx, {"op": "is_yesterday"}, values, {"first", "repeated_hour", "last"})
    await _check(conn, ctx, {"op": "is_today"}, values, {"today"})
    await _check(conn, ctx, {"op": "anniversary_today"}, values, {"today"})
    await _check(conn, ctx, {"op": "before", "value": "2024-10-27"}, values, set())


async def test_santiago_day_without_a_midnight(conn: asyncpg.Connection) -> None:
    # 2024-09-08 00:00 does not exist in Santiago: the day starts at 01:00 (-03), 04:00 UTC.
    ctx = TimeContext.at(utc(2024, 9, 8, 15), "America/Santiago")
    assert ctx.day_start(date(2024, 9, 8)) == utc(2024, 9, 8, 4)
    values = {
        "saturday_late": utc(2024, 9, 8, 3, 59, 59, 999999),  # 23:59:59.999999 (-04) on the 7th
        "first_instant": utc(2024, 9, 8, 4),
        "noon": utc(2024, 9, 8, 15),
    }
    await _check(conn, ctx, {"op": "is_today"}, values, {"first_instant", "noon"})
    await _check(conn, ctx, {"op": "is_yesterday"}, values, {"saturday_late"})
    await _check(conn, ctx, {"op": "after", "value": "2024-09-07"}, values, {"first_instant", "noon"})
    await _check(conn, ctx, {"op": "anniversary_today"}, values, {"first_instant", "noon"})
    # Sunday the 8th ends the local week: the week began Monday 2 September
    await _check(conn, ctx, {"op": "this_week"}, values, set(values))


async def test_weeks_start_monday_in_local_time(conn: asyncpg.Connection) -> None:
    # Kiritimati is UTC+14: Sunday 11:00 UTC is already Monday 01:00 there.
    ctx = TimeContext.at(utc(2024, 3, 17, 11), "Pacific/Kiritimati")
    assert ctx.week_start == date(2024, 3, 18)
    values = {
        "local_sunday_night": utc(2024, 3, 17, 9, 59, 59),  # Sunday 23:59:59 local
        "local_monday": utc(2024, 3, 17, 10),
        "previous_monday": utc(2024, 3, 10, 10),
        "before_that": utc(2024, 3, 10, 9, 59, 59),
    }
    await _check(conn, ctx, {"op": "this_week"}, values, {"local_monday"})
    await _check(conn, ctx, {"op": "last_week"}, values, {"local_sunday_night", "previous_monday"})


async def test_month_edges_follow_the_workspace_timezone(conn: asyncpg.Connection) -> None:
    # 2024-03-01 00:30 in Berlin is still February in UTC.
    ctx = TimeContext.at(utc(2024, 2, 29, 23, 30), "Europe/Berlin")
    assert ctx.month_start == date(2024, 3, 1)
    values = {
        "utc_february_local_march": utc(2024, 2, 29, 23, 0),
        "local_february_29": utc(2024, 2, 29, 22, 59, 59),
        "local_january": utc(2024, 1, 31, 22, 59, 59),
    }
    await _check(conn, ctx, {"op": "this_month"}, values, {"utc_february_local_march"})
    await _check(conn, ctx, {"op": "last_month"}, values, {"local_february_29"})
    await _check(conn, ctx, {"op": "anniversary_this_month"}, values, {"utc_february_local_march"})


LEAP = {"leap_day": "2020-02-29", "feb_28": "2019-02-28", "mar_1": "2019-03-01"}


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2025, 2, 28), {"leap_day", "feb_28"}),  # common year: 29 Feb counts as 28 Feb
        (date(2025, 3, 1), {"mar_1"}),
        (date(2024, 2, 28), {"feb_28"}),  # leap year: each day on its own
        (date(2024, 2, 29), {"leap_day"}),
    ],
)
async def test_leap_day_anniversaries(conn: asyncpg.Connection, today: date, expected: set[str]) -> None:
    tz = "Asia/Kolkata"
    ctx = TimeContext.at(TimeContext.at(utc(2024, 1, 1), tz).day_start(today) + timedelta(hours=20), tz)
    assert ctx.today == today
    ws = new_workspace()
    states = [make_state(ws, cid, attrs={"d": d}) for cid, d in LEAP.items()]
    assert await evaluate_both(conn, {"field": "attributes.d", "op": "anniversary_today"}, states, ctx) == (
        expected,
        expected,
    )
    # the same birthdays as datetimes at local noon
    local = zoneinfo.ZoneInfo(tz)
    values = {
        cid: datetime.fromisoformat(d).replace(hour=12, tzinfo=local).astimezone(UTC)
        for cid, d in LEAP.items()
    }
    await _check(conn, ctx, {"op": "anniversary_today"}, values, expected)


async def test_anniversaries_use_pythons_zone_data_not_postgresqls(conn: asyncpg.Connection) -> None:
    # Casablanca's future offsets differ between tzdata releases (PostgreSQL may ship another one);
    # the instant below is local 2026-11-22 00:30 per Python's zoneinfo.
    tz = zoneinfo.ZoneInfo("Africa/Casablanca")
    instant = datetime(2026, 11, 22, 0, 30, tzinfo=tz).astimezone(UTC)
    ctx = TimeContext(datetime(2031, 11, 22, 12, tzinfo=UTC), tz)
    await _check(conn, ctx, {"op": "anniversary_today"}, {"it": instant}, {"it"})


def test_time_context_rejects_naive_and_far_instants() -> None:
    utc_zone = zoneinfo.ZoneInfo("UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeContext(datetime(2024, 1, 1), utc_zone)
    with pytest.raises(ValueError, match="outside years"):
        TimeContext(utc(9500, 1, 1), utc_zone)
    with pytest.raises(ValueError, match="unknown IANA timezone"):
        TimeContext.at(utc(2024, 1, 1), "Mars/Olympus")


ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Africa/Casablanca",
    "Asia/Kolkata",
    "UTC",
    "Etc/GMT-14",
    "America/St_Johns",
    "Europe/Dublin",
)


@pytest.mark.parametrize("name", ZONES)
def test_zone_table_gives_zoneinfos_offsets(name: str) -> None:
    tz = zoneinfo.ZoneInfo(name)
    table = zone_table(tz)
    rnd = random.Random(name)
    probes = [utc(1, 1, 3) + timedelta(seconds=rnd.uniform(0, 315_000_000_000)) for _ in range(2000)]
    probes += [t + timedelta(seconds=s) for t in table.transitions for s in (-1, 0)]
    for t in probes:
        try:
            expected = t.astimezone(tz).utcoffset()
        except OverflowError:  # a local time outside Python's range
            continue
        assert expected is not None
        assert table.offset_at(t) == int(expected.total_seconds()), t


async def test_sql_local_time_matches_zoneinfo(conn: asyncpg.Connection) -> None:
    tz = zoneinfo.ZoneInfo("America/Santiago")
    table = zone_table(tz)
    rnd = random.Random(7)
    probes = [utc(1850, 1, 1) + timedelta(seconds=rnd.uniform(0, 25_000_000_000)) for _ in range(3000)]
    probes += [utc(9999, 12, 30), utc(1, 1, 3)]
    rows = await conn.fetch(
        "SELECT sw_local_time(t, $2::timestamptz[], $3::int[], $4::timestamptz) AS local"
        " FROM unnest($1::timestamptz[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
        probes,
        list(table.transitions),
        list(table.offsets),
        table.cycle_start,
    )
    for t, row in zip(probes, rows, strict=True):
        try:
            local = t.astimezone(tz).replace(tzinfo=None)
        except OverflowError:
            continue
        assert row["local"] == local, t


def test_fixed_offset_zones_have_no_transitions() -> None:
    table = zone_table(zoneinfo.ZoneInfo("Etc/GMT+5"))
    assert table.transitions == () and table.offsets == (-5 * 3600,)
    assert table.offset_at(datetime(2024, 1, 1, tzinfo=UTC)) == -18000
