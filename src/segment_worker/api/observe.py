"""Request context for logs and traces: every request gets a request id (the caller's
``X-Request-ID`` when it is a sane one, else a new one), echoed in the response's ``X-Request-ID``
header and written on every log line of the request (``logs.log_context``), with ``workspace`` and
``segment_id`` read from the path; and, with the ``otel`` extra on, a SERVER span.

It wraps the whole Starlette stack, outside ``ServerErrorMiddleware``: so the log of an unexpected
500 and uvicorn's access log line (written when the response starts) carry the request id too, and
a 500 answer echoes it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import tracing
from ..logs import log_context

HEADER = "x-request-id"
# Accepted as given: what a proxy or client would generate (uuid, hex, base64-ish), bounded.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_WS_PATH = re.compile(r"^/v1/workspaces/([^/]+)(?:/segments/([^/]+))?")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` if it is 1–128 visible id characters, else a new uuid4 hex."""
    for key, value in headers:
        if key.lower() == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def path_fields(path: str) -> dict[str, str]:
    """``workspace`` (and ``segment_id``) named by a ``/v1/workspaces/{ws}[/segments/{id}]`` path
    (an ASGI path, already percent-decoded)."""
    m = _WS_PATH.match(path)
    if m is None:
        return {}
    out = {"workspace": m.group(1)}
    if m.group(2) and m.group(2) != "defaults":
        out["segment_id"] = m.group(2)
    return out


class RequestContext:
    """Pure ASGI middleware (no task boundary: the context it sets is the one the app runs in)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope.get("headers") or [])
        encoded = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", encoded)]}
            await send(message)

        path: str = scope.get("path", "")
        with log_context(request_id=rid, **path_fields(path)):
            if not tracing.enabled():
                await self.app(scope, receive, send_with_id)
                return
            await self._traced(scope, receive, send_with_id, path)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        method: str = scope.get("method", "GET")
        status: dict[str, Any] = {}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with tracing.server_span(method, path, headers) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if "code" in status:
                    span.set_attribute("http.response.status_code", status["code"])
                    if status["code"] >= 500:
                        from opentelemetry.trace import Status, StatusCode

                        span.set_status(Status(StatusCode.ERROR))


def install(app: Any) -> None:
    """Wrap ``app``'s whole middleware stack (ServerErrorMiddleware included) in ``RequestContext``."""
    build = app.build_middleware_stack
    # Starlette builds the stack once, on the first request, from this method.
    app.build_middleware_stack = lambda: RequestContext(build())
