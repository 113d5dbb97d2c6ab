"""HTTP API: rule search, customers (state, memberships, history), edits published to Kafka,
and campaign audiences in Redis."""

from __future__ import annotations

from uuid import UUID

import httpx
import orjson

from helpers.kafka_io import read_topic
from helpers.service import opt_out, seed, tags, upsert
from segment_worker import limits
from segment_worker.api import create_app
from segment_worker.config import Settings
from segment_worker.events import parse_event, transition_id
from segment_worker.kafka import ensure_topics
from segment_worker.partitioning import customer_partition
from segment_worker.service.attributes import AttributeSpec, put_attributes
from segment_worker.service.context import ServiceContext
from segment_worker.service.tokens import create_token
from segment_worker.stores.keys import audience_key

VIP = {"field": "tags", "op": "has", "value": "vip"}


def _error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    err: dict[str, object] = r.json()["error"]
    return err


async def test_search_previews_matches_with_total(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    await seed(ctx, workspace_id, {f"c{i}": [tags("vip" if i % 2 else "lead")] for i in range(5)})
    r = await api.post("/customers/search", json={"rules": VIP, "limit": 1})
    page = r.json()
    assert page["total"] == 2 and [c["customer_id"] for c in page["items"]] == ["c1"]
    nxt = (await api.post("/customers/search", json={"rules": VIP, "cursor": page["next_cursor"]})).json()
    assert [c["customer_id"] for c in nxt["items"]] == ["c3"] and nxt["next_cursor"] is None
    everyone = (await api.post("/customers/search", json={"rules": {"all": []}})).json()
    assert everyone["total"] == 5
    assert (await api.post("/customers/search", json={"rules": {"any": []}})).json()["total"] == 0
    err = _error(
        await api.post("/customers/search", json={"rules": {"field": "tags", "op": "eq", "value": "x"}}), 422
    )
    assert err["details"][0]["path"] == "$.rules.op"  # type: ignore[index]
    _error(await api.post("/customers/search", json={"rules": VIP, "limit": 1000}), 422)
    _error(await api.post("/customers/search", json={}), 422)


async def test_customer_state_memberships_and_history(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    ws = workspace_id
    await seed(
        ctx,
        ws,
        {
            "c42": [
                upsert(name="Zoë", phone="+96891234567", country="om", language="AR"),
                tags("VIP"),
                opt_out(),
            ]
        },
    )
    vip = (await api.post("/segments", json={"name": "VIPs", "type": "dynamic", "rules": VIP})).json()
    static = (await api.post("/segments", json={"name": "List", "type": "static"})).json()
    await api.post(f"/segments/{static['id']}/members", json={"customer_ids": ["c42"]})
    await api.request("DELETE", f"/segments/{static['id']}/members", json={"customer_ids": ["c42"]})
    await api.post(f"/segments/{static['id']}/members", json={"customer_ids": ["c42"]})

    c = (await api.get("/customers/c42")).json()
    assert {
        k: c[k]
        for k in (
            "customer_id",
            "workspace_id",
            "name",
            "phone",
            "country",
            "language",
            "marketing_opt_out",
            "tags",
            "attributes",
        )
    } == {
        "customer_id": "c42",
        "workspace_id": ws,
        "name": "Zoë",
        "phone": "+96891234567",
        "country": "OM",
        "language": "ar",
        "marketing_opt_out": True,
        "tags": ["VIP"],
        "attributes": {},
    }
    assert c["created_at"].endswith("Z")
    assert {(m["segment_name"], m["type"]) for m in c["memberships"]} == {
        ("VIPs", "dynamic"),
        ("List", "static"),
    }
    assert c["memberships"][0]["segment_name"] == "List"  # most recently joined first

    h = (await api.get("/customers/c42/history")).json()
    assert h["total"] == 4
    assert [(i["segment_name"], i["type"], i["seq"], i["cause"]["kind"]) for i in h["items"]] == [
        ("List", "segment.entered", 3, "manual"),
        ("List", "segment.exited", 2, "manual"),
        ("List", "segment.entered", 1, "manual"),
        ("VIPs", "segment.entered", 1, "rules_changed"),
    ]
    first = h["items"][-1]
    assert first["id"] == transition_id(ws, UUID(vip["id"]), "c42", 1) and first["time"].endswith("Z")
    page = (await api.get("/customers/c42/history", params={"limit": 3})).json()
    rest = (await api.get("/customers/c42/history", params={"cursor": page["next_cursor"]})).json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [i["id"] for i in h["items"]]
    _error(await api.get("/customers/nobody"), 404)
    _error(await api.get("/customers/nobody/history"), 404)


async def test_audiences(api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    await seed(
        ctx,
        ws,
        {
            "a": [tags("vip")],
            "b": [tags("vip", "lead")],
            "c": [tags("lead")],
            "d": [tags("lead"), opt_out()],
            "e": [upsert(name="E")],
        },
    )
    vip = (await api.post("/segments", json={"name": "V", "type": "dynamic", "rules": VIP})).json()["id"]
    lead = (
        await api.post(
            "/segments",
            json={"name": "L", "type": "dynamic", "rules": {"field": "tags", "op": "has", "value": "lead"}},
        )
    ).json()["id"]
    r = await api.post("/audiences", json={"segment_ids": [vip, lead]})
    assert r.status_code == 201
    aud = r.json()
    assert aud["count"] == 3 and aud["redis_key"] == audience_key(ws, aud["audience_id"])
    assert {m.decode() for m in await ctx.redis.smembers(aud["redis_key"])} == {"a", "b", "c"}
    ttl = await ctx.redis.ttl(aud["redis_key"])
    assert 0 < ttl <= 86400
    every = (
        await api.post("/audiences", json={"segment_ids": [lead, vip, lead], "exclude_opted_out": False})
    ).json()
    assert every["count"] == 4 and every["audience_id"] != aud["audience_id"]
    # A snapshot: deleting a segment later leaves the audience as it was.
    assert (await api.delete(f"/segments/{vip}")).status_code == 204
    assert await ctx.redis.scard(aud["redis_key"]) == 3
    missing = "00000000-0000-0000-0000-000000000000"
    err = _error(await api.post("/audiences", json={"segment_ids": [lead, vip, missing, "junk"]}), 422)
    assert vip in str(err["message"]) and missing in str(err["message"]) and "junk" in str(err["message"])
    _error(await api.post("/audiences", json={"segment_ids": []}), 422)


async def test_patch_customer_publishes_input_events(
    unique_settings: Settings, ctx: ServiceContext, workspace_id: str
) -> None:
    ws = workspace_id
    settings = unique_settings
    await ensure_topics(settings.kafka_bootstrap, settings)
    kctx = ServiceContext(pool=ctx.pool, redis=ctx.redis, settings=settings)
    app = create_app(settings, context=kctx)
    token = await create_token(ctx.pool, ws)
    await seed(kctx, ws, {"c1": [upsert(name="One")]})
    await put_attributes(
        kctx, ws, [AttributeSpec("tier", "select", ("gold", "silver")), AttributeSpec("renews", "datetime")]
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=f"http://api/v1/workspaces/{ws}",
                headers={"Authorization": f"Bearer {token}"},
            ) as api,
        ):
            # The limits of events (CONTRACT §10 "Limits"): 422, and nothing is published.
            for refused, words in [
                ({"tags_add": ["t" * (limits.TAG_MAX_CHARS + 1)]}, "at most 200 characters"),
                ({"attributes": {"note": "n" * (limits.ATTRIBUTE_TEXT_MAX_CHARS + 1)}}, "the limit is 2048"),
                ({"attributes": {"renews": "9999-12-31T23:59:59-23:59"}}, "instant outside years 1–9999"),
                ({"attributes": {"score": 2**53 + 1}}, "beyond ±2^53"),
            ]:
                r = await api.patch("/customers/c1", json=refused)
                assert words in r.text, r.text
                _error(r, 422)
            body = {
                "attributes": {"tier": "gold", "note": None},
                "tags_add": ["VIP"],
                "tags_remove": ["old"],
                "marketing_opt_out": True,
            }
            r = await api.patch("/customers/c1", json=body)
            assert r.status_code == 202, r.text
            ids = r.json()["event_ids"]
            assert len(ids) == 4 and len(set(ids)) == 4
            _error(await api.patch("/customers/c1", json={}), 422)
            _error(await api.patch("/customers/c1", json={"attributes": {"tier": "bronze"}}), 422)
            _error(await api.patch("/customers/c1", json={"tags_add": ["x"], "tags_remove": ["X"]}), 422)
            _error(await api.patch("/customers/nobody", json={"tags_add": ["x"]}), 404)
    finally:
        await kctx.publisher.close()
    records = await read_topic(settings.kafka_bootstrap, settings.topic_events)
    assert len(records) == 4  # the refused edits published nothing
    events = [parse_event(rec.value) for rec in records]
    assert [e.event_id for e in events] == ids
    assert [e.type for e in events] == [
        "customer.attributes_set",
        "customer.tags_added",
        "customer.tags_removed",
        "customer.opt_out_set",
    ]
    assert all(rec.key == f"{ws}:c1".encode() for rec in records)
    assert {rec.partition for rec in records} == {customer_partition(ws, "c1", 4)}
    assert orjson.loads(records[0].value)["data"] == {"attributes": {"tier": "gold", "note": None}}
