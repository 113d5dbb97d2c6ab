"""The web console (CONTRACT §8, issue #15): static files under ``/console/``, no token to load.

The console is a build-step-free single page app (vanilla ES modules, see docs/DESIGN.md
"Console"); it calls only the public ``/v1`` routes with the token the person enters. Nothing
here reads the database: these routes serve files, so they need no token and stay out of the
OpenAPI schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

CONSOLE_DIR = Path(__file__).with_name("console")

# Every asset is ours and same-origin: a strict policy costs nothing and stops injected markup
# from running script (member names and attributes are customer-supplied text).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


class _ConsoleFiles(StaticFiles):
    """StaticFiles with the console's security headers and no caching of index.html (so a new
    release's module graph is picked up on reload)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CSP.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                headers.append((b"cache-control", b"no-cache"))
                message["headers"] = headers
            await send(message)

        await super().__call__(scope, receive, with_headers)


def mount_console(app: FastAPI) -> None:
    """``GET /console`` (redirects to ``/console/``) and the console's files under it."""

    @app.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        # Relative, so the console also works behind a proxy that serves the API under a prefix.
        return RedirectResponse("console/", status_code=307)

    app.mount("/console", _ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")
