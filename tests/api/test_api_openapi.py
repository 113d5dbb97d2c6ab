"""The OpenAPI document as client generators read it, and what it promises: operation ids that are
names, request examples the API accepts, 503 where a store can be down, the error code enum, the
rule schema (schemas/rule.json) for rule bodies, 405 answers listing every method of the path, and
/docs served without a CDN."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
from fastapi import FastAPI

import segment_worker
from segment_worker.api import errors as api_errors
from segment_worker.errors import SegmentWorkerError
from segment_worker.rules.schema import EXAMPLE, rule_json_schema

METHODS = ("get", "put", "post", "patch", "delete")
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, m, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


async def test_operation_ids_are_the_route_names_and_unique(app: FastAPI) -> None:
    doc = app.openapi()
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids)) == 29
    assert all(re.fullmatch(r"[a-z][a-z_]*", i) for i in ids), ids
    assert {"create_segment", "list_segments", "read_segment", "patch_segment", "delete_segment",
            "add_members", "search_customers", "create_audience", "explain_membership"} <= set(ids)


async def test_every_request_body_has_an_example(app: FastAPI) -> None:
    doc = app.openapi()
    components = doc["components"]["schemas"]
    for path, method, op in _operations(doc):
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        name = body["schema"]["$ref"].rsplit("/", 1)[-1]
        assert components[name].get("examples"), f"{method} {path}: {name} has no example"


async def test_the_create_example_is_accepted_as_documented(app: FastAPI, api: httpx.AsyncClient) -> None:
    examples = app.openapi()["components"]["schemas"]["SegmentCreate"]["examples"]
    for example in examples:
        r = await api.post("/segments", json=example)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == example["name"]


async def test_workspace_routes_declare_503_and_others_do_not(app: FastAPI) -> None:
    for path, method, op in _operations(app.openapi()):
        declared = "503" in op["responses"]
        if path.startswith("/v1/"):
            assert declared, f"{method} {path}"
            assert op["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorResponse"
            )
        elif path in ("/healthz", "/metrics"):
            assert not declared, path
    assert "503" in app.openapi()["paths"]["/readyz"]["get"]["responses"]


def test_the_error_code_enum_lists_every_code_an_answer_can_carry() -> None:
    for info in pkgutil.walk_packages(segment_worker.__path__, "segment_worker."):
        if not any(part in info.name for part in (".bench", ".dev", "__main__")):
            importlib.import_module(info.name)
    codes = {c.code for c in _subclasses(SegmentWorkerError)} | {"internal"}
    # Commands' and the worker's errors, never an HTTP answer.
    codes -= {"dev_failed", "bench_failed", "dead_letter_undelivered"}
    produced = codes | set(api_errors._HTTP_CODES.values()) | {"malformed_json", "store_error", "error"}
    assert set(api_errors.ERROR_CODES) == produced
    app_doc = json.dumps(FastAPI().openapi())  # sanity: the enum is ours, not FastAPI's
    assert "malformed_json" not in app_doc


async def test_error_answers_use_codes_of_the_enum(app: FastAPI, api: httpx.AsyncClient) -> None:
    enum = app.openapi()["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
    answers = [
        await api.get("/segments/not-a-uuid"),
        await api.post("/segments", content=b"{", headers={"Content-Type": "application/json"}),
        await api.post("/segments", json={"name": "x", "type": "dynamic", "rules": {"field": "nope"}}),
        await api.put("/segments"),
    ]
    assert [a.status_code for a in answers] == [404, 400, 422, 405]
    for a in answers:
        assert a.json()["error"]["code"] in enum


def test_the_published_rule_schema_is_current_and_accepts_the_contract_example() -> None:
    published = json.loads((SCHEMAS / "rule.json").read_text())
    assert {k: v for k, v in published.items() if k not in ("$schema", "title", "description")} == (
        rule_json_schema()
    )
    validator = jsonschema_rs.validator_for(published)
    assert validator.is_valid(EXAMPLE)
    assert validator.is_valid({"not": {"all": []}})
    assert validator.is_valid({"field": "attributes.birthdate", "op": "anniversary_today"})
    assert not validator.is_valid({"field": "tags", "op": "has", "value": "VIP", "extra": 1})
    assert not validator.is_valid({"all": [], "any": []})
    assert not validator.is_valid({"field": "tags", "op": "resembles", "value": "x"})
    assert not validator.is_valid({"field": "attributes.", "op": "eq", "value": "x"})


async def test_rule_bodies_reference_the_rule_schema(app: FastAPI) -> None:
    doc = app.openapi()
    schemas = doc["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/Rule"}
    assert schemas["PreviewIn"]["properties"]["rules"]["$ref"] == ref["$ref"]
    assert schemas["SearchIn"]["properties"]["rules"]["$ref"] == ref["$ref"]
    for name in ("SegmentCreate", "SegmentPatch", "SegmentOut"):
        assert schemas[name]["properties"]["rules"]["anyOf"] == [ref, {"type": "null"}], name
    assert {"Rule", "Condition", "AllGroup", "AnyGroup", "NotGroup"} <= schemas.keys()
    assert "x-segment-worker-rule" not in json.dumps(doc)
    # The document's rule definitions accept what the published schema accepts.
    in_doc = {"$ref": "#/components/schemas/Rule", "components": doc["components"]}
    validator = jsonschema_rs.validator_for(in_doc)
    assert validator.is_valid(EXAMPLE)
    assert not validator.is_valid({"all": {"field": "tags"}})


async def test_405_lists_every_method_of_the_path(app: FastAPI, http: httpx.AsyncClient) -> None:
    doc = app.openapi()
    checked = 0
    for path in doc["paths"]:
        url = path.replace("{ws}", "ws1").replace("{segment_id}", "00000000-0000-0000-0000-000000000000")
        url = url.replace("{customer_id}", "c1").replace("{name}", "tier")
        # FastAPI's GET routes do not answer HEAD, so it is not listed. Where a literal path overlaps a
        # template (…/segments/defaults, …/segments/{segment_id}) the literal one's methods are listed,
        # and only methods that no route serves are answered 405.
        expected = {m.upper() for m in doc["paths"][path] if m in METHODS}
        served = {
            m.upper()
            for template, other in doc["paths"].items()
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), url)
            for m in other
            if m in METHODS
        }
        missing = [m for m in ("PUT", "POST", "PATCH", "DELETE", "GET") if m not in served]
        for method in missing:
            r = await http.request(method, url)
            assert r.status_code == 405, (method, url, r.status_code)
            assert set(r.headers["allow"].split(", ")) == expected, (method, url, r.headers["allow"])
            assert r.json()["error"]["code"] == "method_not_allowed"
            checked += 1
    assert checked > 50


async def test_docs_are_served_without_a_cdn(http: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        r = await http.get(page)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "cdn" not in r.text.lower() and "fonts.googleapis" not in r.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
        assert urls and all(u.startswith("/") for u in urls), urls
        for url in urls:
            asset = await http.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
    bundle = await http.get("/docs/assets/swagger-ui-bundle.js")
    assert re.search(rb'"5\.\d+\.\d+"', bundle.content), "Swagger UI 5 reads OpenAPI 3.1"
    assert (await http.get("/docs/oauth2-redirect")).status_code == 200
