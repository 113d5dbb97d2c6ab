"""Out-of-order and duplicated events are ignored as CONTRACT §2 says: every field keeps the version
of its last write, duplicates change nothing, a tombstone hides older writes, and a re-created
customer's seq numbers continue."""

from __future__ import annotations

from datetime import timedelta

import pytest

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg

pytestmark = pytest.mark.timeout(120)


def at(minutes: int) -> object:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize("versions_format", ["map", "grouped"])
async def test_stale_and_duplicate_events_change_nothing(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str, versions_format: str
) -> None:
    s, ws = unique_settings.model_copy(update={"versions_format": versions_format}), workspace_id
    conn = await pg.connect(s.require_database_url())
    try:
        w = await create_workspace(
            conn,
            ws,
            attributes={"score": ("number", None)},
            segments={
                "VIP": {"field": "tags", "op": "has", "value": "vip"},
                "High": {"field": "attributes.score", "op": "gte", "value": 50},
            },
        )
        vip, high = w.segments["VIP"], w.segments["High"]
        add_vip = event(ws, "c1", "customer.tags_added", {"tags": ["VIP"]}, at(20))
        first = [
            add_vip,
            event(ws, "c1", "customer.tags_removed", {"tags": ["vip"]}, at(10)),  # older than the add
            dict(add_vip),  # duplicate delivery
            event(ws, "c1", "customer.attributes_set", {"attributes": {"score": 80}}, at(30)),
            event(ws, "c2", "customer.tags_added", {"tags": ["vip"]}, at(1)),
            event(ws, "c2", "customer.deleted", {}, at(50)),
        ]
        second = [
            event(ws, "c1", "customer.attributes_set", {"attributes": {"score": 20}}, at(25)),  # stale
            event(ws, "c2", "customer.tags_added", {"tags": ["vip"]}, at(40)),  # before the tombstone
            event(ws, "c2", "customer.tags_added", {"tags": ["vip"]}, at(60)),  # re-creates c2
        ]
        async with WorkerHarness(s) as h:
            ends = await produce(kafka_bootstrap, s.topic_events, [encode(e) for e in first])
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            ends = await produce(kafka_bootstrap, s.topic_events, [encode(e) for e in second])
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            history = [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT customer_id, segment_id, seq, kind, cause->>'kind' FROM transitions"
                    " WHERE workspace_id = $1"
                    " ORDER BY customer_id, segment_id, seq",
                    ws,
                )
            ]
            assert h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) == 9
            formats = await conn.fetchval(
                "SELECT array_agg(DISTINCT jsonb_typeof(versions)) FROM customers WHERE workspace_id = $1", ws
            )
            assert formats == ["array" if versions_format == "grouped" else "object"]
        # Everything again, in reverse, to a worker that starts empty: it reads each customer's
        # versions back in the format written. Nothing may move.
        async with WorkerHarness(s) as h:
            ends = await produce(
                kafka_bootstrap, s.topic_events, [encode(e) for e in reversed(first + second)]
            )
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            assert h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) == 9
        again = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT customer_id, segment_id, seq, kind, cause->>'kind' FROM transitions"
                " WHERE workspace_id = $1"
                " ORDER BY customer_id, segment_id, seq",
                ws,
            )
        ]
        c1 = await conn.fetchrow(
            "SELECT tags, attrs, deleted FROM customers WHERE workspace_id = $1 AND customer_id = 'c1'", ws
        )
    finally:
        await conn.close()
    assert sorted(history) == sorted(
        [
            ("c1", vip, 1, "entered", "event"),
            ("c1", high, 1, "entered", "event"),
            ("c2", vip, 1, "entered", "event"),
            ("c2", vip, 2, "exited", "customer_deleted"),
            ("c2", vip, 3, "entered", "event"),
        ]
    )
    assert again == history
    assert (c1["tags"], c1["attrs"], c1["deleted"]) == (["vip"], {"score": 80}, False)
