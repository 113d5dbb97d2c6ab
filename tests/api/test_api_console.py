"""The web console's files (CONTRACT §8: ``GET /console``, no token to load), served from the
package, out of the OpenAPI schema, with a strict content security policy."""

from __future__ import annotations

import re

import httpx


async def test_console_loads_without_a_token(http: httpx.AsyncClient) -> None:
    r = await http.get("/console")
    assert r.status_code == 307 and r.headers["location"] == "console/"
    page = await http.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Every asset the page names is served (no CDN: nothing outside the package).
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "js/app.js" in assets and "console.css" in assets
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), asset
        assert (await http.get(f"/console/{asset}")).status_code == 200, asset


async def test_every_module_is_served_as_javascript(http: httpx.AsyncClient) -> None:
    app = (await http.get("/console/js/app.js")).text
    modules = {"app.js", *re.findall(r'from "\./([a-z]+\.js)"', app)}
    assert {"segments.js", "editor.js", "members.js", "customer.js", "workspace.js"} <= modules
    for name in modules:
        r = await http.get(f"/console/js/{name}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], name


async def test_console_is_not_in_the_openapi_schema(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]
