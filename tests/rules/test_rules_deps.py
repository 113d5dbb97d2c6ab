"""What rules depend on: fields read, time and timezone dependence, and the ticker's flip windows —
every value whose truth differs between t0 and t1 must lie inside the windows reported for them."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules_support import CATALOG, compile_json, make_state

from segment_worker.rules.deps import FlipWindows, flip_offsets, flip_windows, next_day_flip
from segment_worker.rules.model import TIME_RELATIVE_OPERATORS, Condition
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule

ZONES = (
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "America/Santiago",
    "Pacific/Kiritimati",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Asia/Kathmandu",
)
TIME_OPS = sorted(TIME_RELATIVE_OPERATORS)
START = datetime(2023, 12, 20, tzinfo=UTC)


def test_fields_and_time_dependence() -> None:
    compiled = compile_json(
        {
            "all": [
                {"field": "tags", "op": "has", "value": "vip"},
                {"not": {"field": "attributes.d", "op": "anniversary_today"}},
                {"field": "created_at", "op": "before", "value": "2024-01-01T00:00:00Z"},
            ]
        }
    )
    assert compiled.fields == frozenset({"tags", "attributes.d", "created_at"})
    assert compiled.time_relative and compiled.timezone_dependent
    assert [c.op for c in compiled.time_conditions] == ["anniversary_today"]

    exact = compile_json({"field": "last_incoming_at", "op": "older_than_days", "value": 30})
    assert exact.time_relative and not exact.timezone_dependent  # instants, not local days
    fixed = compile_json({"field": "created_at", "op": "on", "value": "2024-01-01"})
    assert not fixed.time_relative and fixed.timezone_dependent  # a local calendar day
    plain = compile_json({"field": "name", "op": "eq", "value": "x"})
    assert not plain.time_relative and not plain.timezone_dependent and plain.time_conditions == ()


def test_calendar_windows_open_only_when_a_boundary_is_crossed() -> None:
    tz = zoneinfo.ZoneInfo("America/New_York")
    cond = parse_rule({"field": "created_at", "op": "is_today"}, CATALOG)
    assert isinstance(cond, Condition)
    same_day = flip_windows(
        cond, datetime(2024, 3, 10, 6, tzinfo=UTC), datetime(2024, 3, 10, 20, tzinfo=UTC), tz
    )
    assert same_day == FlipWindows() and same_day.empty
    crossing = flip_windows(
        cond, datetime(2024, 3, 11, 3, tzinfo=UTC), datetime(2024, 3, 11, 5, tzinfo=UTC), tz
    )
    assert crossing.ranges == (
        (datetime(2024, 3, 10, 5, tzinfo=UTC), datetime(2024, 3, 11, 4, tzinfo=UTC)),
        (datetime(2024, 3, 11, 4, tzinfo=UTC), datetime(2024, 3, 12, 4, tzinfo=UTC)),
    )
    not_timed = parse_rule({"field": "created_at", "op": "after", "value": "2024-01-01"}, CATALOG)
    assert isinstance(not_timed, Condition)
    assert flip_windows(not_timed, START, START + timedelta(days=400), tz).empty


def test_anniversary_windows_are_month_days_and_widen_for_utc() -> None:
    tz = zoneinfo.ZoneInfo("UTC")
    cond = parse_rule({"field": "attributes.d", "op": "anniversary_today"}, CATALOG)
    assert isinstance(cond, Condition)
    w = flip_windows(cond, datetime(2025, 2, 28, 23, tzinfo=UTC), datetime(2025, 3, 1, 1, tzinfo=UTC), tz)
    assert w.month_days == frozenset({228, 229, 301}) and w.ranges == ()
    assert w.utc_month_days() >= {227, 228, 229, 301, 302}


VALUES = st.one_of(
    st.datetimes(datetime(2023, 1, 1), datetime(2026, 1, 1), timezones=st.just(UTC)),
    st.dates(date(2023, 1, 1), date(2026, 1, 1)),
)


@settings(max_examples=1000, deadline=None)
@given(
    op=st.sampled_from(TIME_OPS),
    date_field=st.booleans(),
    days=st.sampled_from((0, 1, 7, 30)),
    zone=st.sampled_from(ZONES),
    t0=st.datetimes(datetime(2024, 1, 1), datetime(2025, 1, 1), timezones=st.just(UTC)),
    step=st.one_of(
        st.timedeltas(timedelta(0), timedelta(hours=2)),
        st.timedeltas(timedelta(0), timedelta(days=3)),
        st.timedeltas(timedelta(0), timedelta(days=800)),
    ),
    value=VALUES,
    edge=st.none() | st.integers(0, 7),
    nudge=st.sampled_from((0, 1, -1)),
)
def test_every_flip_lies_inside_the_windows(
    op: str,
    date_field: bool,
    days: int,
    zone: str,
    t0: datetime,
    step: timedelta,
    value: date | datetime,
    edge: int | None,
    nudge: int,
) -> None:
    field = "attributes.d" if date_field else "created_at"
    doc = {"field": field, "op": op, **({"value": days} if op.endswith("_days") else {})}
    compiled = compile_json(doc)
    cond = compiled.rule
    assert isinstance(cond, Condition)
    tz = zoneinfo.ZoneInfo(zone)
    t1 = t0 + step
    bound0, bound1 = compiled.bind(TimeContext(t0, tz)), compiled.bind(TimeContext(t1, tz))
    # Values at the window edges of t0 and t1 (± 1 µs or 1 day) are the first to flip; for
    # anniversaries, days with the month/days (or month) looked for at t0 and t1.
    edges: list[date] = []
    for x in (*bound0, *bound1):
        if isinstance(x, date):
            edges.append(x)
        elif isinstance(x, frozenset):
            edges += [date(2000, md // 100, md % 100) for md in x]
        elif isinstance(x, int):
            edges.append(date(1999, x, 1))
    if not date_field:
        local = TimeContext(t0, tz)
        edges = [e if isinstance(e, datetime) else local.day_start(e) + timedelta(hours=12) for e in edges]
    probe: date | datetime
    if date_field:
        d = value.date() if isinstance(value, datetime) else value
        if edge is not None and edges:
            d = edges[edge % len(edges)] + timedelta(days=nudge)
        state, probe = make_state("ws", "c", attrs={"d": d.isoformat()}), d
    else:
        instant = value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time(), UTC)
        if edge is not None and edges:
            instant = edges[edge % len(edges)] + timedelta(microseconds=nudge)  # type: ignore[assignment]
        state, probe = make_state("ws", "c", created_at=instant), instant
    before = compiled.matches(state, bound0)
    after = compiled.matches(state, bound1)
    if before != after:
        assert flip_windows(cond, t0, t1, tz).contains(probe, tz), (doc, t0, t1, probe)


NEAR = st.one_of(
    st.timedeltas(timedelta(days=-32), timedelta(days=32)),
    # next to an edge that moves with "now": v ≈ t0 - N days
    st.builds(
        lambda n, d: d - timedelta(days=n),
        st.sampled_from((0, 1, 7, 30)),
        st.timedeltas(timedelta(hours=-3), timedelta(hours=3)),
    ),
)


@settings(max_examples=1500, deadline=None)
@given(
    op=st.sampled_from(TIME_OPS),
    date_field=st.booleans(),
    days=st.sampled_from((0, 1, 7, 30)),
    zone=st.sampled_from(ZONES),
    t0=st.datetimes(datetime(2024, 1, 1), datetime(2025, 1, 1), timezones=st.just(UTC)),
    step=st.one_of(
        st.timedeltas(timedelta(0), timedelta(seconds=10)),
        st.timedeltas(timedelta(0), timedelta(hours=30)),
        st.timedeltas(timedelta(0), timedelta(days=70)),
    ),
    near=NEAR,
    to_edge=st.booleans(),
)
def test_no_flip_comes_before_the_planned_boundary(
    op: str,
    date_field: bool,
    days: int,
    zone: str,
    t0: datetime,
    step: timedelta,
    near: timedelta,
    to_edge: bool,
) -> None:
    """The ticker's plan: a value's first flip after ``t0`` is one of its ``v + o`` (or 1 µs after)
    or ``next_day_flip`` — so truth at ``t0`` holds up to just before the planned boundary."""
    field = "attributes.d" if date_field else "created_at"
    doc = {"field": field, "op": op, **({"value": days} if op.endswith("_days") else {})}
    compiled = compile_json(doc)
    cond = compiled.rule
    assert isinstance(cond, Condition)
    tz = zoneinfo.ZoneInfo(zone)
    horizon = t0 + step
    instant = t0 + near
    if date_field:
        state = make_state("ws", "c", attrs={"d": instant.date().isoformat()})
        assert flip_offsets(cond) == ()
    else:
        state = make_state("ws", "c", created_at=instant)
    planned = [instant + o for o in flip_offsets(cond) if instant + o >= t0]
    day = next_day_flip(cond, t0, horizon, tz)
    assert day is None or t0 < day <= horizon
    if day is not None:
        planned.append(day)
    first = min(planned, default=None)
    t1 = horizon
    if to_edge and first is not None and t0 < first <= horizon:
        t1 = first - timedelta(microseconds=1)  # the last instant before the planned boundary
    before = compiled.matches(state, compiled.bind(TimeContext(t0, tz)))
    after = compiled.matches(state, compiled.bind(TimeContext(t1, tz)))
    if before != after:
        assert first is not None and first <= t1, (doc, zone, t0, t1, instant, first)


def test_next_day_flip_is_the_local_day_start_where_the_calendar_moves() -> None:
    tz = zoneinfo.ZoneInfo("America/New_York")
    week = parse_rule({"field": "created_at", "op": "this_week"}, CATALOG)
    today = parse_rule({"field": "attributes.d", "op": "is_today"}, CATALOG)
    moving = parse_rule({"field": "created_at", "op": "in_last_days", "value": 1}, CATALOG)
    assert isinstance(week, Condition) and isinstance(today, Condition) and isinstance(moving, Condition)
    # Saturday 7 March 2026, 23:59:58 EST: Sunday's midnight flips "today", only Monday's the week.
    sat = datetime(2026, 3, 8, 4, 59, 58, tzinfo=UTC)
    sun_midnight = datetime(2026, 3, 8, 5, tzinfo=UTC)
    mon_midnight = datetime(2026, 3, 9, 4, tzinfo=UTC)  # EDT from Sunday 2 am
    assert next_day_flip(today, sat, sat + timedelta(seconds=5), tz) == sun_midnight
    assert next_day_flip(today, sat, sat + timedelta(seconds=1), tz) is None
    assert next_day_flip(week, sat, sat + timedelta(seconds=5), tz) is None
    assert next_day_flip(week, sat, sat + timedelta(days=3), tz) == mon_midnight
    # Continuously moving conditions are planned from their values, not from the calendar.
    assert next_day_flip(moving, sat, sat + timedelta(days=3), tz) is None
    assert flip_offsets(moving) == (timedelta(0), timedelta(days=1))
