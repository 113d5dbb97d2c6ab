"""The outbox's fast CloudEvent rendering (``TransitionRenderer``, ``uuid5_url``) produces exactly
the bytes of the straightforward rendering it replaced, on varied inputs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_worker.events import render_transition
from segment_worker.membership_events import TransitionRenderer, uuid5_url
from segment_worker.state import Transition
from segment_worker.stores import TransitionRow
from segment_worker.worker.outbox import render_row


def reference(
    ws: str, seg: uuid.UUID, name: str, cid: str, seq: int, kind: str, cause: dict[str, Any], at: datetime
) -> bytes:
    """The rendering before the fast path (uuid.uuid5, strftime, one dict per event)."""
    u = at.astimezone(UTC)
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"segment-worker:{ws}:{seg}:{cid}:{seq}")),
            "source": "segment-worker",
            "type": "segment." + kind,
            "time": u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z",
            "subject": cid,
            "datacontenttype": "application/json",
            "data": {
                "workspace_id": ws,
                "segment_id": str(seg),
                "segment_name": name,
                "customer_id": cid,
                "cause": cause,
                "seq": seq,
            },
        }
    )


_text = st.text(min_size=1, max_size=40)  # any unicode: quotes, backslashes, controls, astral
_zones = st.sampled_from([UTC, timezone(timedelta(hours=4)), timezone(timedelta(hours=-9, minutes=-30))])
_instants = st.builds(
    lambda d, tz: d.replace(tzinfo=UTC).astimezone(tz),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    _zones,
)
_causes = st.one_of(
    st.fixed_dictionaries({"kind": st.sampled_from(["rules_changed", "time", "manual", "import"])}),
    st.fixed_dictionaries({"kind": st.sampled_from(["event", "customer_deleted"]), "event_id": _text}),
)
_events = st.tuples(
    _text,
    st.uuids(),
    _text,
    _text,
    st.integers(1, 2**31 - 1),
    st.sampled_from(["entered", "exited"]),
    _causes,
    _instants,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, min_size=1, max_size=8), st.data())
def test_the_renderer_writes_the_same_bytes_as_the_reference(events: list[Any], data: st.DataObject) -> None:
    renderer = TransitionRenderer()  # one renderer across events: its caches must never leak
    for ws, seg, name, cid, seq, kind, cause, at in events:
        want = reference(ws, seg, name, cid, seq, kind, cause, at)
        assert renderer.render(ws, seg, name, cid, seq, kind, cause, at) == want
        t = Transition(ws, seg, name, cid, data.draw(st.integers(0, 11)), seq, kind, cause, at)
        assert render_transition(t) == want
        row = TransitionRow(1, t.partition, ws, seg, name, cid, seq, kind, cause, at)
        assert render_row(row, renderer) == (f"{ws}:{cid}".encode(), want)


_PLUS_4 = timezone(timedelta(hours=4))


def test_the_renderer_caches_are_keyed_by_everything_they_depend_on() -> None:
    renderer = TransitionRenderer()
    seg, other = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 11, 23, 8, 0, 0, 999999, tzinfo=UTC)
    cases = [
        ("ws1", seg, "A", "c1", 1, "entered", {"kind": "manual"}, at),
        ("ws2", seg, "A", "c1", 1, "entered", {"kind": "manual"}, at),  # same segment, other workspace
        ("ws1", other, "A", "c1", 1, "entered", {"kind": "manual"}, at),
        ("ws1", seg, "A", "c1", 1, "entered", {"kind": "manual"}, at + timedelta(milliseconds=1)),
        ("ws1", seg, "A", "c1", 1, "entered", {"kind": "manual"}, at.astimezone(_PLUS_4)),
    ]
    bodies = [renderer.render(*c) for c in cases]
    assert bodies == [reference(*c) for c in cases]
    assert len({orjson.loads(b)["id"] for b in bodies}) == 3  # ws and segment are part of the id
    assert bodies[0] == bodies[4]  # the same instant in another zone: the same event


def test_the_renderer_keeps_working_past_its_cache_bound() -> None:
    renderer = TransitionRenderer()
    seg = uuid.uuid4()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(TransitionRenderer._MAX_CACHED + 10):
        at = t0 + timedelta(milliseconds=i)
        args = (f"ws{i % 7}", seg, "S", f"c{i}", i + 1, "exited", {"kind": "time"}, at)
        assert renderer.render(*args) == reference(*args)


@given(st.text(max_size=200))
def test_uuid5_url_is_uuid5(name: str) -> None:
    assert uuid5_url(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))
