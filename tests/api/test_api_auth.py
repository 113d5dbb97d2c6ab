"""Auth, error shapes and the operational endpoints of the HTTP API."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from segment_worker.api import create_app
from segment_worker.config import Settings
from segment_worker.errors import ConfigError
from segment_worker.service.context import ServiceContext
from segment_worker.service.tokens import create_token, hash_token


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    err: dict[str, object] = body["error"]
    return err


async def test_no_token_or_unknown_token_is_401(http: httpx.AsyncClient, workspace_id: str) -> None:
    url = f"/v1/workspaces/{workspace_id}/segments"
    r = await http.get(url)
    _error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    _error(await http.get(url, headers={"Authorization": "Bearer nope"}), 401)
    _error(await http.get(url, headers={"Authorization": "Basic abc"}), 401)


async def test_a_token_sees_only_its_workspace(
    http: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str, token: str
) -> None:
    mine = {"Authorization": f"Bearer {token}"}
    other = workspace_id + "-b"
    other_token = await create_token(ctx.pool, other)
    r = await http.post(
        f"/v1/workspaces/{workspace_id}/segments", json={"name": "A", "type": "static"}, headers=mine
    )
    assert r.status_code == 201
    sid = r.json()["id"]
    # Token A on B's resources: 404 (not 403): B's resources do not exist for A.
    _error(await http.get(f"/v1/workspaces/{other}/segments", headers=mine), 404, "not_found")
    _error(
        await http.post(
            f"/v1/workspaces/{other}/segments", json={"name": "x", "type": "static"}, headers=mine
        ),
        404,
    )
    # Token B on A's segment id under B's path: not found either.
    b = {"Authorization": f"Bearer {other_token}"}
    _error(await http.get(f"/v1/workspaces/{other}/segments/{sid}", headers=b), 404)
    assert (await http.get(f"/v1/workspaces/{other}/segments", headers=b)).json() == {
        "items": [],
        "next_cursor": None,
        "total": 0,
    }


async def test_a_star_token_sees_every_workspace(http: httpx.AsyncClient, ctx: ServiceContext) -> None:
    star = await create_token(ctx.pool, "*")
    for ws in ("ws-star-1", "ws-star-2"):
        r = await http.get(f"/v1/workspaces/{ws}/segments", headers={"Authorization": f"Bearer {star}"})
        assert r.status_code == 200
    stored = await ctx.pool.fetchval(
        "SELECT workspace_id FROM api_tokens WHERE token_hash = $1", hash_token(star)
    )
    assert stored == "*"
    assert await ctx.pool.fetchval("SELECT count(*) FROM api_tokens WHERE token_hash = $1", star) == 0


async def test_static_tokens_from_settings(service_settings: Settings, ctx: ServiceContext) -> None:
    app = create_app(service_settings.model_copy(update={"api_tokens": "s3cret=team-a, all=*"}), context=ctx)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        ok = await client.get("/v1/workspaces/team-a/segments", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        _error(
            await client.get("/v1/workspaces/team-b/segments", headers={"Authorization": "Bearer s3cret"}),
            404,
        )
        assert (
            await client.get("/v1/workspaces/team-b/segments", headers={"Authorization": "Bearer all"})
        ).is_success
    with pytest.raises(ConfigError):
        create_app(service_settings.model_copy(update={"api_tokens": "no-equals-sign"}), context=ctx)


async def test_invalid_workspace_id_is_422(http: httpx.AsyncClient, ctx: ServiceContext) -> None:
    star = await create_token(ctx.pool, "*")
    r = await http.get("/v1/workspaces/a:b/segments", headers={"Authorization": f"Bearer {star}"})
    _error(r, 422)


async def test_malformed_json_is_400_and_schema_errors_422_with_paths(api: httpx.AsyncClient) -> None:
    err = _error(
        await api.post("/segments", content=b'{"name": ', headers={"content-type": "application/json"}),
        400,
        "malformed_json",
    )
    assert "JSON" in str(err["message"])
    err = _error(await api.post("/segments", json={"name": "x", "type": "weird"}), 422, "validation_failed")
    assert {"path": "$.type"}.items() <= next(iter(err["details"])).items()  # type: ignore[call-overload]
    err = _error(await api.post("/segments", json={"name": "x", "type": "static", "extra": 1}), 422)
    assert any(d["path"] == "$.extra" for d in err["details"])  # type: ignore[attr-defined]
    err = _error(await api.get("/segments", params={"limit": 501}), 422)
    assert any(d["path"] == "$.limit" for d in err["details"])  # type: ignore[attr-defined]
    err = _error(
        await api.post(
            "/segments",
            json={
                "name": "x",
                "type": "dynamic",
                "rules": {"any": [{"field": "tags", "op": "gt", "value": 1}]},
            },
        ),
        422,
    )
    assert err["details"][0]["path"] == "$.rules.any[0].op"  # type: ignore[index]


async def test_unknown_routes_and_methods_use_the_error_shape(api: httpx.AsyncClient) -> None:
    _error(await api.get("/nothing-here"), 404, "not_found")
    _error(await api.put("/segments"), 405, "method_not_allowed")


async def test_health_ready_metrics_docs_need_no_token(
    http: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    await api.get("/segments")
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'segment_worker_api_requests_total{method="GET",route="/v1/workspaces/{ws}/segments",status="200"}'
        in (metrics.text)
    )
    assert (await http.get("/docs")).status_code == 200
    spec = (await http.get("/openapi.json")).json()
    assert "/v1/workspaces/{ws}/segments/{segment_id}/members" in spec["paths"]


async def test_readyz_names_what_is_down(service_settings: Settings, ctx: ServiceContext) -> None:
    from redis.asyncio import Redis

    broken = ServiceContext(pool=ctx.pool, redis=Redis(host="127.0.0.1", port=1), settings=service_settings)
    app: FastAPI = create_app(service_settings, context=broken)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        r = await client.get("/readyz")
    err = _error(r, 503, "unavailable")
    assert err["details"]["postgres"] == "ok" and err["details"]["redis"] != "ok"  # type: ignore[index]
    await broken.redis.aclose()
