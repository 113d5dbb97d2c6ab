"""Poison that parses (issue 13, item 1): records that pass ``parse_event`` but cannot be applied
or stored — instants that overflow when converted to UTC, a 5 KB tag — mixed with good records in
the same and other partitions. Each bad one is dead-lettered with a reason, nothing stalls, and
every good record (the ones after the poison included) is applied. Then hypothesis-generated
events near every limit: each is either applied or dead-lettered, consistently."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faults.run import FaultRun, scaled, wait_owning
from helpers.scenario import T0, encode, event, mixed_events
from segment_worker.config import Settings

pytestmark = pytest.mark.timeout(300)

POISON_INSTANTS = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"]


def _raw_event(
    ws: str, cid: str, etype: str, data: dict[str, Any], occurred_at: str, n: int
) -> dict[str, Any]:
    return {
        "event_id": f"poison-{n}",
        "type": etype,
        "workspace_id": ws,
        "customer_id": cid,
        "occurred_at": occurred_at,
        "data": data,
    }


def poison_mix(ws: str, total: int) -> list[tuple[bytes, bytes]]:
    """Good traffic with poison spliced in; after each poison record, good events of the same
    customer (a stalled partition would leave them unapplied)."""
    rnd = random.Random(61)
    records = [encode(e) for e in mixed_events(ws, 300, total, seed=61)]
    poisons: list[dict[str, Any]] = []
    for n in range(12):
        cid = f"c{rnd.randrange(300)}"
        kind = n % 4
        if kind < 2:
            poisons.append(
                _raw_event(ws, cid, "customer.tags_added", {"tags": ["vip"]}, POISON_INSTANTS[kind], n)
            )
        elif kind == 2:
            tag = "t" * 5 * 1024
            poisons.append(
                _raw_event(ws, cid, "customer.tags_added", {"tags": [tag]}, "2026-11-20T10:00:00Z", n)
            )
        else:
            # A far-away but valid created_at: must be applied, not refused (years 1–9999 hold).
            data = {"created_at": "9999-12-28T00:00:00Z", "name": "Far"}
            poisons.append(_raw_event(ws, cid, "customer.upserted", data, "2026-11-20T10:00:00Z", n))
    for n, p in enumerate(poisons):
        at = (n + 1) * len(records) // (len(poisons) + 2)
        follow = [
            encode(
                event(ws, p["customer_id"], "customer.tags_added", {"tags": ["vip"]}, T0 + timedelta(hours=9))
            ),
            encode(
                event(ws, p["customer_id"], "customer.upserted", {"name": "After"}, T0 + timedelta(hours=9))
            ),
        ]
        records[at:at] = [encode(p), *follow]
    return records


async def test_poison_that_parses_is_dead_lettered_and_nothing_stalls(
    unique_settings: Settings, workspace_id: str, tmp_path: Path
) -> None:
    run = await FaultRun.open(unique_settings, workspace_id, tmp_path)
    try:
        records = poison_mix(run.ws.id, scaled(4_000, 800))
        run.cluster.start(0)
        run.cluster.start(1)
        await wait_owning(run, [0, 1])
        step = max(100, len(records) // 10)
        for i in range(0, len(records), step):
            await run.produce(records[i : i + step])
        got = await run.finish(limit_s=90)
        assert got.dead >= 9  # the 9 poison records (3 of each kind); the far created_at is good
    finally:
        await run.close()


# -- hypothesis: events near every limit -------------------------------------------------------

_LENGTHS = [0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 1000, 1024, 2000, 2700, 2713, 4096]
_CHARS = ["a", "é", "字", "😀"]
_INSTANTS = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:59:59+01:00",  # year 0 in UTC
    "0001-01-01T23:59:59-23:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-00:01",  # year 10000 in UTC
    "9999-12-31T12:00:00+12:00",
    "1970-01-01T00:00:00Z",
    "2026-11-20T09:00:00.123456+05:30",
]
_NUMBERS: list[Any] = [
    2**53,
    -(2**53),
    2**53 + 1,
    -(2**53) - 1,
    1.5e308,
    5e-324,
    0.1,
    -0.0,
    9007199254740991.0,
]


def _text(length: int, ch: str) -> str:
    return (ch * length)[:length] if length else ""


@st.composite
def near_limit_event(draw: st.DrawFn, ws: str) -> bytes:
    cid = f"h{draw(st.integers(0, 60))}"
    occurred_at = draw(st.sampled_from(_INSTANTS)) if draw(st.booleans()) else "2026-11-20T10:00:00Z"
    text = _text(draw(st.sampled_from(_LENGTHS)), draw(st.sampled_from(_CHARS)))
    kind = draw(st.integers(0, 5))
    data: dict[str, Any]
    if kind == 0:
        data = {"tags": [text or "x", "vip"]}
        etype = "customer.tags_added"
    elif kind == 1:
        field = draw(st.sampled_from(["name", "email", "platform", "phone"]))
        data = {field: text, "created_at": draw(st.sampled_from(_INSTANTS))}
        etype = "customer.upserted"
    elif kind == 2:
        data = {"attributes": {"score": draw(st.sampled_from(_NUMBERS)), "note": text}}
        etype = "customer.attributes_set"
    elif kind == 3:
        data = {"attributes": {"tier": draw(st.sampled_from(["gold", "GOLD", "platinum", text]))}}
        etype = "customer.attributes_set"
    elif kind == 4:
        data = {"attributes": {"score": 1.0, "x": 0}}
        etype = "customer.attributes_set"
    else:
        data = {"direction": "incoming"}
        etype = "customer.interaction"
    ev = {
        "event_id": f"h-{draw(st.integers(0, 10**9))}",
        "type": etype,
        "workspace_id": ws,
        "customer_id": cid,
        "occurred_at": occurred_at,
        "data": data,
    }
    raw = orjson.dumps(ev)
    if kind == 4 and draw(st.booleans()):
        raw = raw.replace(b'"score":1.0', b'"score":NaN')  # NaN as a bare JSON token
    return raw


def generated_events(ws: str, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` near-limit events (deterministic: derandomised hypothesis)."""
    out: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(near_limit_event(ws))
    def collect(raw: bytes) -> None:
        out.append(raw)

    collect()
    keys = [orjson.loads(r) if b"NaN" not in r else None for r in out]
    return [
        ((f"{ws}:{k['customer_id']}" if k else f"{ws}:h0").encode(), raw)
        for k, raw in zip(keys, out, strict=True)
    ]


async def test_hypothesis_events_near_every_limit_are_applied_or_dead_lettered(
    unique_settings: Settings, workspace_id: str, tmp_path: Path
) -> None:
    run = await FaultRun.open(unique_settings, workspace_id, tmp_path)
    try:
        generated = generated_events(run.ws.id, scaled(300, 100))
        good = [encode(e) for e in mixed_events(run.ws.id, 100, scaled(1_000, 300), seed=62)]
        records = list(good)
        for i, rec in enumerate(generated):
            records.insert(i * len(good) // len(generated) + i, rec)
        run.cluster.start(0)
        await wait_owning(run, [0])
        await run.produce(records)
        got = await run.finish(limit_s=90)
        assert got.dead > 0
    finally:
        await run.close()
