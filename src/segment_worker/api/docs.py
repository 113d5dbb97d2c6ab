"""``/docs`` (Swagger UI) and ``/redoc`` served from packaged assets, no CDN: the browser of an
operator behind a firewall, or offline with ``segment-worker dev``, loads nothing from the internet.
The assets (Swagger UI 5, which reads OpenAPI 3.1, and ReDoc) come from the ``fastapi-offline``
package; we use its files only, with our own routes.

Also completes the OpenAPI document: the rule schema's definitions (``rules.schema``) become
components, which the rule bodies reference (``api.models.RULE_REF``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..rules.schema import rule_defs
from .models import RULE_MARK

ASSETS_URL = "/docs/assets"
_REFS = "#/components/schemas/"


def _with_rule_refs(node: Any) -> Any:
    """``node`` with every rule marker (``api.models.RULE_MARK``) replaced by a reference to the
    ``Rule`` component (or null, for an optional rule), keeping its description and example."""
    if isinstance(node, list):
        return [_with_rule_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _with_rule_refs(v) for k, v in node.items()}
    mark = out.pop(RULE_MARK, None)
    if mark == "required":
        out["$ref"] = f"{_REFS}Rule"
    elif mark == "nullable":
        out["anyOf"] = [{"$ref": f"{_REFS}Rule"}, {"type": "null"}]
    return out


def assets_dir() -> Path:
    """The directory of the packaged Swagger UI and ReDoc files."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and the assets; extend ``app.openapi``."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(rule_defs(_REFS))
            app.openapi_schema = _with_rule_refs(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
