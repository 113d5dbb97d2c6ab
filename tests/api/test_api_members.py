"""HTTP API: static members, CSV import (raw and multipart, size limits, encodings), the sample
file, candidates — and their documented errors."""

from __future__ import annotations

import httpx

from helpers.csvfiles import file_of_size
from helpers.service import opt_out, pg_members, redis_members, seed, tags, transitions, upsert
from segment_worker.csvimport import MAX_BYTES, SAMPLE_CSV
from segment_worker.service.context import ServiceContext


def _error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    err: dict[str, object] = r.json()["error"]
    return err


async def _static(api: httpx.AsyncClient, name: str = "List") -> str:
    r = await api.post("/segments", json={"name": name, "type": "static"})
    assert r.status_code == 201
    sid: str = r.json()["id"]
    return sid


async def test_add_list_remove_members(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    await seed(
        ctx,
        workspace_id,
        {
            "a": [upsert(name="Ann", phone="+96891234567"), tags("VIP"), opt_out()],
            "b": [upsert(name="Bob")],
        },
    )
    sid = await _static(api)
    r = await api.post(f"/segments/{sid}/members", json={"customer_ids": ["b", "ghost"]})
    assert r.json() == {"added": 1, "already_members": 0, "not_found": ["ghost"]}
    r = await api.post(f"/segments/{sid}/members", json={"customer_ids": ["a", "b"]})
    assert r.json() == {"added": 1, "already_members": 1, "not_found": []}
    page = (await api.get(f"/segments/{sid}/members")).json()
    assert page["total"] == 2 and page["next_cursor"] is None
    ann, bob = page["items"]
    assert ann["customer_id"] == "a" and bob["customer_id"] == "b"  # newest first
    assert {k: ann[k] for k in ("name", "phone", "marketing_opt_out", "tags", "attributes")} == {
        "name": "Ann",
        "phone": "+96891234567",
        "marketing_opt_out": True,
        "tags": ["VIP"],
        "attributes": {},
    }
    assert ann["joined_at"].endswith("Z") and ann["joined_at"] >= bob["joined_at"]
    r = await api.request("DELETE", f"/segments/{sid}/members", json={"customer_ids": ["a", "a", "nope"]})
    assert r.json() == {"removed": 1, "not_members": 0, "not_found": ["nope"]}
    assert await redis_members(ctx, workspace_id, sid) == {"b"} == await pg_members(ctx, sid)
    assert {r["cause"]["kind"] for r in await transitions(ctx, sid)} == {"manual"}
    _error(await api.post(f"/segments/{sid}/members", json={"customer_ids": []}), 422)
    _error(await api.post(f"/segments/{sid}/members", json={"customer_ids": ["has space"]}), 422)
    _error(
        await api.post(
            "/segments/00000000-0000-0000-0000-000000000000/members", json={"customer_ids": ["a"]}
        ),
        404,
    )
    _error(await api.get("/segments/00000000-0000-0000-0000-000000000000/members"), 404)


async def test_dynamic_segment_members_are_read_only(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    await seed(ctx, workspace_id, {"a": [tags("x")]})
    sid = (
        await api.post(
            "/segments",
            json={"name": "D", "type": "dynamic", "rules": {"field": "tags", "op": "has_any_tag"}},
        )
    ).json()["id"]
    for r in (
        await api.post(f"/segments/{sid}/members", json={"customer_ids": ["a"]}),
        await api.request("DELETE", f"/segments/{sid}/members", json={"customer_ids": ["a"]}),
        await api.post(f"/segments/{sid}/import", content=b"phone\n+96891234567\n"),
        await api.get(f"/segments/{sid}/candidates"),
    ):
        assert "membership is controlled by its rules" in str(_error(r, 409)["message"])
    assert [m["customer_id"] for m in (await api.get(f"/segments/{sid}/members")).json()["items"]] == ["a"]


async def test_import_raw_and_multipart(
    api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    await api.put(f"http://api/v1/workspaces/{workspace_id}", json={"default_region": "US"})
    sid = await _static(api)
    data = '\ufeffPHONE;Name\n(650) 253-0000;"Smith; John"\n+968 9123 4567;Aisha\nbad;x\n+16502530000;dup\n'
    r = await api.post(f"/segments/{sid}/import", content=data.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "added": 2,
        "already_members": 0,
        "created": 2,
        "invalid": [{"line": 4, "value": "bad", "reason": "not a phone number"}],
    }
    assert await redis_members(ctx, workspace_id, sid) == {"+16502530000", "+96891234567"}
    assert {r["cause"]["kind"] for r in await transitions(ctx, sid)} == {"import"}
    r = await api.post(f"/segments/{sid}/import", files={"file": ("list.csv", data.encode(), "text/csv")})
    assert r.json() == {"added": 0, "already_members": 2, "created": 0, "invalid": r.json()["invalid"]}
    _error(await api.post(f"/segments/{sid}/import", files={"other": ("x.csv", b"phone\n", "text/csv")}), 422)


async def test_import_limits_and_bad_files(api: httpx.AsyncClient) -> None:
    sid = await _static(api)
    exact = await api.post(f"/segments/{sid}/import", content=file_of_size(MAX_BYTES))
    assert exact.status_code == 200 and exact.json()["added"] == 1
    over = file_of_size(MAX_BYTES + 1)
    err = _error(await api.post(f"/segments/{sid}/import", content=over), 413)
    assert err["code"] == "invalid_csv" and "10 MB" in str(err["message"])
    _error(await api.post(f"/segments/{sid}/import", files={"file": ("big.csv", over, "text/csv")}), 413)
    assert "UTF-8" in str(
        _error(
            await api.post(
                f"/segments/{sid}/import", content="phone\n+96891234567,Jos\xe9\n".encode("latin-1")
            ),
            422,
        )["message"]
    )
    _error(await api.post(f"/segments/{sid}/import", content=b""), 422)
    assert "phone" in str(
        _error(await api.post(f"/segments/{sid}/import", content=b"mobile\n123\n"), 422)["message"]
    )
    _error(await api.post("/segments/00000000-0000-0000-0000-000000000000/import", content=b"phone\n"), 404)


async def test_sample_csv(api: httpx.AsyncClient) -> None:
    sid = await _static(api)
    r = await api.get(f"/segments/{sid}/import/sample.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text == SAMPLE_CSV and r.text.startswith("phone,name\n")
    assert "attachment" in r.headers["content-disposition"]
    imported = await api.post(f"/segments/{sid}/import", content=r.content)
    assert imported.json()["added"] == 2 and imported.json()["invalid"] == []
    _error(await api.get("/segments/00000000-0000-0000-0000-000000000000/import/sample.csv"), 404)


async def test_candidates(api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str) -> None:
    await seed(
        ctx,
        workspace_id,
        {
            "a": [upsert(name="Aisha", phone="+96891234567")],
            "b": [upsert(name="Bob", phone="+16502530000")],
        },
    )
    sid = await _static(api)
    await api.post(f"/segments/{sid}/members", json={"customer_ids": ["b"]})
    page = (await api.get(f"/segments/{sid}/candidates")).json()
    assert [c["customer_id"] for c in page["items"]] == ["a"] and page["total"] == 1
    assert (await api.get(f"/segments/{sid}/candidates", params={"q": "9123"})).json()["total"] == 1
    assert (await api.get(f"/segments/{sid}/candidates", params={"q": "bob"})).json()["total"] == 0
    _error(await api.get(f"/segments/{sid}/candidates", params={"limit": 0}), 422)
