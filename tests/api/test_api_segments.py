"""HTTP API: workspace settings, attributes, segments (CRUD, duplicate, defaults), edit previews
and explanations — each route's success and documented errors."""

from __future__ import annotations

import re
from typing import Any

import httpx

from helpers.service import attrs, seed, tags, upsert
from segment_worker.service.context import ServiceContext

MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
VIP = {"field": "tags", "op": "has", "value": "VIP"}


def _code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    code: str = r.json()["error"]["code"]
    return code


async def test_workspace_settings(api: httpx.AsyncClient, workspace_id: str) -> None:
    root = f"http://api/v1/workspaces/{workspace_id}"
    assert (await api.get(root)).json() == {"id": workspace_id, "timezone": "UTC", "default_region": None}
    r = await api.put(root, json={"timezone": "Asia/Muscat", "default_region": "om"})
    assert r.json() == {"id": workspace_id, "timezone": "Asia/Muscat", "default_region": "OM"}
    r = await api.put(root, json={"default_region": None})
    assert r.json() == {"id": workspace_id, "timezone": "Asia/Muscat", "default_region": None}
    assert (await api.get(root)).json()["timezone"] == "Asia/Muscat"
    _code(await api.put(root, json={"timezone": "Nowhere/Land"}), 422)
    _code(await api.put(root, json={"default_region": "ZZ"}), 422)
    _code(await api.put(root, json={"colour": "blue"}), 422)


async def test_attributes(api: httpx.AsyncClient) -> None:
    r = await api.put("/attributes/tier", json={"type": "select", "options": ["gold", "silver"]})
    assert r.status_code == 201
    body = r.json()
    assert (body["name"], body["type"], body["options"]) == ("tier", "select", ["gold", "silver"])
    assert MS_Z.match(body["created_at"])
    r = await api.put("/attributes/tier", json={"type": "select", "options": ["gold", "silver", "bronze"]})
    assert r.status_code == 200 and r.json()["options"] == ["gold", "silver", "bronze"]
    r = await api.put(
        "/attributes",
        json={"items": [{"name": "score", "type": "number"}, {"name": "birthday", "type": "date"}]},
    )
    assert [a["name"] for a in r.json()["items"]] == ["score", "birthday"]
    listed = (await api.get("/attributes", params={"limit": 2})).json()
    assert [a["name"] for a in listed["items"]] == ["birthday", "score"] and listed["total"] == 3
    rest = (await api.get("/attributes", params={"cursor": listed["next_cursor"]})).json()
    assert [a["name"] for a in rest["items"]] == ["tier"] and rest["next_cursor"] is None
    assert (await api.get("/attributes/score")).json()["type"] == "number"
    _code(await api.get("/attributes/nope"), 404)
    _code(await api.put("/attributes/x", json={"type": "text", "options": ["a"]}), 422)
    _code(await api.put("/attributes/x", json={"type": "colour"}), 422)
    _code(await api.put("/attributes/bad%20name", json={"type": "text"}), 422)
    # In use by a segment: the type is fixed and options only grow.
    seg = {
        "name": "Gold",
        "type": "dynamic",
        "rules": {"field": "attributes.tier", "op": "eq", "value": "gold"},
    }
    assert (await api.post("/segments", json=seg)).status_code == 201
    r = await api.put("/attributes/tier", json={"type": "text"})
    assert _code(r, 409) == "conflict" and "'Gold'" in r.json()["error"]["message"]
    _code(await api.put("/attributes/tier", json={"type": "select", "options": ["gold"]}), 409)
    assert (await api.put("/attributes/tier", json={"type": "select", "options": None})).status_code == 200
    assert (await api.put("/attributes/score", json={"type": "text"})).status_code == 200  # not in use


async def test_segment_lifecycle(api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str) -> None:
    await seed(ctx, workspace_id, {"a": [tags("vip")], "b": [tags("lead")]})
    r = await api.post(
        "/segments", json={"name": "VIPs", "description": "d", "type": "dynamic", "rules": VIP}
    )
    assert r.status_code == 201
    seg = r.json()
    assert seg["member_count"] == 1 and seg["workspace_id"] == workspace_id and seg["type"] == "dynamic"
    assert seg["filter_summary"] != "No filters" and "VIP" in seg["filter_summary"]
    assert MS_Z.match(seg["created_at"]) and MS_Z.match(seg["updated_at"])
    sid = seg["id"]
    assert (await api.get(f"/segments/{sid}")).json() == seg
    _code(await api.post("/segments", json={"name": "vips", "type": "static"}), 409)
    static = (await api.post("/segments", json={"name": "List", "type": "static"})).json()
    assert static["filter_summary"] == "No filters" and static["rules"] is None

    listed = (await api.get("/segments")).json()
    assert [s["name"] for s in listed["items"]] == ["List", "VIPs"] and listed["total"] == 2
    assert listed["next_cursor"] is None
    page = (await api.get("/segments", params={"limit": 1})).json()
    assert [s["name"] for s in page["items"]] == ["List"] and page["next_cursor"]
    page2 = (await api.get("/segments", params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert [s["name"] for s in page2["items"]] == ["VIPs"]
    assert [s["name"] for s in (await api.get("/segments", params={"q": "vip"})).json()["items"]] == ["VIPs"]
    _code(await api.get("/segments", params={"cursor": "xyz"}), 422)

    r = await api.patch(
        f"/segments/{sid}", json={"rules": {"field": "tags", "op": "has_any_tag"}, "name": "Tagged"}
    )
    assert r.status_code == 200 and (r.json()["member_count"], r.json()["name"]) == (2, "Tagged")
    _code(await api.patch(f"/segments/{sid}", json={"type": "static"}), 422)
    _code(await api.patch(f"/segments/{sid}", json={"rules": {"field": "tags", "op": "has"}}), 422)
    _code(await api.patch(f"/segments/{static['id']}", json={"name": "tagged"}), 409)

    dup = await api.post(f"/segments/{sid}/duplicate", json={"name": "Tagged copy"})
    assert dup.status_code == 201
    copy = dup.json()
    assert copy["id"] != sid and copy["name"] == "Tagged copy"
    assert (copy["rules"], copy["member_count"], copy["description"]) == (
        {"field": "tags", "op": "has_any_tag"},
        2,
        "d",
    )
    _code(await api.post(f"/segments/{sid}/duplicate", json={}), 422)

    assert (await api.delete(f"/segments/{sid}")).status_code == 204
    _code(await api.get(f"/segments/{sid}"), 404)
    _code(await api.delete(f"/segments/{sid}"), 404)
    _code(await api.patch(f"/segments/{sid}", json={"name": "x"}), 404)
    _code(await api.get("/segments/not-a-uuid"), 404)


async def test_defaults(api: httpx.AsyncClient) -> None:
    r = await api.post("/segments/defaults")
    assert r.status_code == 201
    body = r.json()
    assert (
        sorted(s["name"] for s in body["created"])
        == sorted(
            [
                "Created in the last 7 days",
                "Inactive for more than 30 days",
                "Has tags",
                "Country known",
                "Language known",
            ]
        )
        and body["skipped"] == []
    )
    assert {s["type"] for s in body["created"]} == {"dynamic"}
    again = (await api.post("/segments/defaults")).json()
    assert again["created"] == [] and len(again["skipped"]) == 5


async def test_preview_edit_and_explain(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    await api.put("/attributes/tier", json={"type": "select", "options": ["gold", "silver"]})
    await seed(
        ctx,
        workspace_id,
        {
            "a": [upsert(name="Ann"), tags("vip")],
            "b": [upsert(name="Bob"), tags("vip"), attrs(tier="gold")],
            "c": [upsert(name="Cid"), attrs(tier="gold")],
        },
    )
    sid = (await api.post("/segments", json={"name": "V", "type": "dynamic", "rules": VIP})).json()["id"]
    gold = {"field": "attributes.tier", "op": "eq", "value": "gold"}
    r = await api.post(f"/segments/{sid}/preview-edit", json={"rules": gold})
    assert r.status_code == 200
    p = r.json()
    assert (p["would_enter"], p["would_exit"]) == (1, 1)
    assert [c["customer_id"] for c in p["sample_enter"]] == ["c"] and p["sample_enter"][0]["name"] == "Cid"
    assert [c["customer_id"] for c in p["sample_exit"]] == ["a"]
    assert (await api.get(f"/segments/{sid}")).json()["member_count"] == 2  # nothing saved
    err = await api.post(
        f"/segments/{sid}/preview-edit",
        json={"rules": {"field": "attributes.tier", "op": "eq", "value": "platinum"}},
    )
    _code(err, 422)
    assert err.json()["error"]["details"][0]["path"].startswith("$.rules")

    rules = {"all": [VIP, {"not": gold}]}
    await api.patch(f"/segments/{sid}", json={"rules": rules})
    ex: dict[str, Any] = (await api.get(f"/segments/{sid}/explain/b")).json()
    assert ex["matches"] is False and ex["rule"]["result"] is False
    first, negated = ex["rule"]["all"]
    assert first == {"field": "tags", "op": "has", "operand": "VIP", "value": ["vip"], "result": True}
    assert negated["result"] is False
    assert negated["not"] == {
        "field": "attributes.tier",
        "op": "eq",
        "operand": "gold",
        "value": "gold",
        "result": True,
    }
    assert (await api.get(f"/segments/{sid}/explain/a")).json()["matches"] is True
    _code(await api.get(f"/segments/{sid}/explain/nobody"), 404)
    static = (await api.post("/segments", json={"name": "S", "type": "static"})).json()["id"]
    _code(await api.get(f"/segments/{static}/explain/a"), 409)
    _code(await api.post(f"/segments/{static}/preview-edit", json={"rules": VIP}), 422)
