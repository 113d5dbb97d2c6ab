"""Property (issue 13): events near every documented limit — texts at the limit and one past it in
the widest characters (up to 12 UTF-8 bytes each once folded), instants at the ends of years
1–9999 in various offsets, numbers at ±2^53 and NaN — through one real worker: each record is either
applied (within the limits, and then it must fit every index; the limits assume no compression
of index entries, which PostgreSQL applies: measured, a 5,180-byte folded tag of random astral
characters still fits, so this shows values at the limit apply, not how much lower it could be)
or dead-lettered once with an edge reason (beyond them), and no partition ever stalls.
``SEGMENT_WORKER_HYPOTHESIS_EXAMPLES`` sets the number of batches (default 10)."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import create_workspace, wait_caught_up
from segment_worker import limits
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg

pytestmark = pytest.mark.timeout(600)

EXAMPLES = int(os.environ.get("SEGMENT_WORKER_HYPOTHESIS_EXAMPLES", 10))
# One ASCII letter; ß (folds to "ss"); a CJK character (3 bytes); U+1D160 (NFC: three 4-byte code
# points: the widest folded character there is).
WIDE = ("a", "ß", "字", "\U0001d160", "random", "random")
# (RFC 3339 text, whether its UTC value is inside years 1-9999)
INSTANTS = (
    ("9999-12-31T23:59:59.999999Z", True),
    ("9999-12-31T23:59:59+00:00", True),
    ("9999-12-31T12:00:00-11:59", True),
    ("9999-12-31T12:00:00-12:00", False),
    ("9999-12-31T23:59:59-00:01", False),
    ("9999-12-31T23:59:59-23:59", False),
    ("9999-12-28T00:00:00Z", True),
    ("0001-01-01T00:00:00Z", True),
    ("0001-01-01T00:00:00+00:00", True),
    ("0001-01-01T00:00:00+00:01", False),
    ("0001-01-01T00:59:59+01:00", False),
    ("0001-01-01T01:00:00+01:00", True),
    ("0001-01-01T00:00:00+01:00", False),
    ("0001-01-02T00:00:00+23:59", True),
)
NAN = "__nan__"  # replaced by a bare NaN token in the JSON text (orjson cannot write one)
SEGMENTS = {
    "VIP": {"field": "tags", "op": "has", "value": "vip"},
    "Recent": {"field": "created_at", "op": "in_last_days", "value": 7},
    "Interacted on this day": {"field": "last_interaction_at", "op": "anniversary_today"},
    "Named": {"field": "name", "op": "contains", "value": "a"},
    "Renews": {"field": "attributes.when", "op": "in_next_days", "value": 36500},
}


@dataclass(frozen=True)
class Case:
    """One event's type, data and occurred_at, and whether it is within the limits."""

    type: str
    data: dict[str, Any]
    occurred_at: str
    ok: bool


# Characters whose folded form (NFC) is three 4-byte code points.
EXPANDING = tuple(chr(c) for c in (*range(0x1D15E, 0x1D165), *range(0x1D1BB, 0x1D1C1)))


def _text(n: int, ch: str) -> str:
    """``n`` characters: ``ch`` repeated, or for ``"random"`` a seeded mix of random astral code
    points and ``EXPANDING`` ones, which PostgreSQL cannot compress away in an index entry."""
    if ch != "random":
        return ch * n
    rng = random.Random(n)
    return "".join(
        rng.choice(EXPANDING) if rng.random() < 0.5 else chr(rng.randint(0x10000, 0x10FFFF)) for _ in range(n)
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(("tag", "text", "attr_text", "attr_item", "occurred", "created", "number",
                                 "declared_dt")))
    ch = draw(st.sampled_from(WIDE))
    over = draw(st.booleans())
    at, at_ok = "2026-11-20T09:00:00Z", True
    if kind == "tag":
        n = limits.TAG_MAX_CHARS + (1 if over else 0)
        return Case("customer.tags_added", {"tags": ["vip", _text(n, ch)]}, at, not over)
    if kind == "text":
        name = draw(st.sampled_from(sorted(limits.TEXT_FIELD_MAX_CHARS)))
        n = limits.TEXT_FIELD_MAX_CHARS[name] + (1 if over else 0)
        return Case("customer.upserted", {name: _text(n, ch)}, at, not over)
    if kind in ("attr_text", "attr_item"):
        value = _text(limits.ATTRIBUTE_TEXT_MAX_CHARS + (1 if over else 0), ch)
        data = {"attributes": {"note": value if kind == "attr_text" else ["x", value]}}
        return Case("customer.attributes_set", data, at, not over)
    if kind == "number":
        value, ok = draw(st.sampled_from(((2**53, True), (-(2**53), True), (2**53 + 1, False),
                                          (-(2**53) - 1, False), (float(2**53), True), (NAN, False))))
        return Case("customer.attributes_set", {"attributes": {"score": value}}, at, ok)
    stamp, ok = draw(st.sampled_from(INSTANTS))
    if kind == "occurred":
        etype = draw(st.sampled_from(("customer.tags_added", "customer.interaction", "customer.opt_out_set")))
        data = {
            "customer.tags_added": {"tags": ["vip"]},
            "customer.interaction": {"direction": "incoming"},
            "customer.opt_out_set": {"marketing_opt_out": True},
        }[etype]
        return Case(etype, data, stamp, ok)
    if kind == "created":
        return Case("customer.upserted", {"created_at": stamp, "name": "Ana"}, at, ok)
    return Case("customer.attributes_set", {"attributes": {"when": stamp}}, at, ok and at_ok)


def _record(ws: str, cid: str, case: Case) -> tuple[bytes, bytes]:
    doc = {"event_id": f"e-{cid}", "type": case.type, "workspace_id": ws, "customer_id": cid,
           "occurred_at": case.occurred_at, "data": case.data}
    return f"{ws}:{cid}".encode(), orjson.dumps(doc).replace(f'"{NAN}"'.encode(), b"NaN")


@dataclass
class Running:
    settings: Settings
    conn: asyncpg.Connection
    harness: WorkerHarness


@pytest.fixture(scope="module")
async def running(
    kafka_bootstrap: str, pg_dsn: str, redis_url: str, unique_name: Callable[[str], str]
) -> AsyncIterator[Running]:
    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=pg_dsn,
        redis_url=redis_url,
        topic_events=unique_name("customer-events"),
        topic_membership=unique_name("segment-membership-events"),
        topic_dlq=unique_name("customer-events.dlq"),
        consumer_group=unique_name("segment-worker"),
        input_partitions=4,
        tick_seconds=0.5,
    )
    conn = await pg.connect(s.require_database_url())
    async with WorkerHarness(s) as h:
        yield Running(s, conn, h)
    await conn.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(cases(), min_size=1, max_size=24))
async def test_every_record_near_a_limit_is_applied_or_dead_lettered(
    running: Running, batch: list[Case]
) -> None:
    s, conn, h = running.settings, running.conn, running.harness
    ws = f"ws-{uuid.uuid4().hex[:12]}"
    await create_workspace(conn, ws, attributes={"when": ("datetime", None), "score": ("number", None)},
                           segments=SEGMENTS)
    records = [_record(ws, f"c{i}", case) for i, case in enumerate(batch)]
    ends = await produce(s.kafka_bootstrap, s.topic_events, records)
    await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws, limit_s=60)
    rows = await conn.fetch("SELECT customer_id FROM customers WHERE workspace_id = $1", ws)
    applied = {r["customer_id"] for r in rows}
    mine = ws.encode() + b":"
    dead = [r for r in await read_topic(s.kafka_bootstrap, s.topic_dlq) if r.key.startswith(mine)]
    good = {f"c{i}" for i, c in enumerate(batch) if c.ok}
    bad = {f"c{i}" for i, c in enumerate(batch) if not c.ok}
    assert applied == good, {c: batch[int(c[1:])] for c in applied ^ good}
    assert sorted(r.key.decode().split(":", 1)[1] for r in dead) == sorted(bad)  # each exactly once
    for r in dead:
        error = dict(r.headers)["error"].decode()
        assert not error.startswith("poison"), error  # refused at the edge, with a reason
    assert h.metric("segment_worker_dlq_records_total", {"reason": "poison"}) == 0
