"""Every error answered as ``{"error": {"code", "message", "details"}}`` with its status
(CONTRACT §8): 400 malformed JSON, 401 no or bad token, 404, 409, 413, 422; never a 500 for bad
input. Our typed errors map by class; FastAPI's validation errors become 422 with JSON paths."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ..csvimport import CsvFileError, CsvProblem
from ..errors import BadInput, Conflict, NotFound, SegmentWorkerError, ValidationFailed
from ..stores.errors import StoreError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    503: "unavailable",
}


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
# Every ``error.code`` an answer can carry (published as the enum of ``ErrorBody.code``): the codes
# of our typed errors that reach the API, the per-status codes above and the handlers' own.
# tests/api/test_api_openapi.py holds it equal to what the classes and handlers can produce.
ERROR_CODES: tuple[str, ...] = (
    "bad_input", "bad_request", "config_error", "conflict", "error", "fenced", "forbidden", "internal",
    "invalid_csv", "lock_timeout", "malformed_json", "membership_conflict", "method_not_allowed",
    "not_found", "record_too_large", "redis_unavailable", "store_error", "store_unavailable",
    "too_large", "unauthorized", "unavailable", "unsupported_media_type", "validation_failed",
)


class Unauthorized(SegmentWorkerError):
    """No bearer token, or one that is not known."""

    code = "unauthorized"


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape."""
    body = {"error": {"code": code, "message": message, "details": details if details is not None else {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: SegmentWorkerError) -> int:
    """The HTTP status of one of our errors."""
    if isinstance(exc, CsvFileError):
        return 413 if exc.problem is CsvProblem.TOO_LARGE else 422
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, ValidationFailed | BadInput):
        return 422
    return 503 if exc.retriable else 500


def json_path(loc: Sequence[int | str]) -> str:
    """``("body", "rules", "any", 0)`` → ``$.rules.any[0]``; query and path parameters likewise."""
    path = "$"
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


async def _ours(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SegmentWorkerError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.to_dict())
    details = exc.details if isinstance(exc, ValidationFailed) else exc.context
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.code, exc.message, details, headers)


async def _store(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: store failure: %s", request.method, request.url.path, exc)
    retriable = getattr(exc, "retriable", False)
    return error_response(503 if retriable else 500, "store_error", str(exc), {"retriable": retriable})


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", bad_json.get("msg", ""))
        return error_response(400, "malformed_json", f"the request body is not valid JSON: {reason}")
    details = [{"path": json_path(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errors]
    first = details[0] if details else {"path": "$", "message": "invalid request"}
    return error_response(422, "validation_failed", f"{first['path']}: {first['message']}", details)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return error_response(exc.status_code, code, message, headers=headers)


def allowed_methods(request: Request) -> str:
    """The methods of the request's path (RFC 9110 §15.5.6), as the OpenAPI document lists them.

    Starlette answers a 405 from the first route whose path matches, listing only that route's
    methods, while a path here has one route per method (GET, PATCH and DELETE /segments/{id}).
    Where a literal path overlaps a template (``/segments/defaults`` and ``/segments/{segment_id}``,
    ``/customers/search`` and ``/customers/{customer_id}``) the literal one is the resource: the
    matching paths with the fewest parameters decide. Paths outside the document (``/docs``, …)
    list the methods of every route that serves them."""
    path = request.scope["path"]
    matching: list[tuple[int, list[str]]] = []
    for template, pattern, methods in _documented_paths(request.app):
        if pattern.fullmatch(path):
            matching.append((template.count("{"), methods))
    if matching:
        fewest = min(params for params, _ in matching)
        return ", ".join(sorted({m for params, ms in matching if params == fewest for m in ms}))
    base = {"type": "http", "path": path, "root_path": request.scope.get("root_path", ""), "headers": []}
    routes = request.app.router.routes
    allowed = [m for m in _METHODS if any(r.matches({**base, "method": m})[0] is Match.FULL for r in routes)]
    return ", ".join(allowed)


def _documented_paths(app: Any) -> list[tuple[str, re.Pattern[str], list[str]]]:
    """(template, its pattern, its methods) of every path of the app's OpenAPI document (cached)."""
    cached: list[tuple[str, re.Pattern[str], list[str]]] | None = getattr(app.state, "documented_paths", None)
    if cached is None:
        cached = []
        for template, item in app.openapi()["paths"].items():
            parts = re.split(r"(\{[^}]+\})", template)
            pattern = re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))
            cached.append((template, pattern, sorted(m.upper() for m in item if m.upper() in _METHODS)))
        app.state.documented_paths = cached
    return cached


async def _bad_text(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL text cannot hold NUL (U+0000): a request carrying one is bad input, whichever
    # field or path segment it came in (its own checks cannot list every string).
    return error_response(
        422,
        "validation_failed",
        "text values must not contain NUL (U+0000) characters",
        [{"path": "$", "message": str(exc)}],
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; see the server log")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(SegmentWorkerError, _ours)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(asyncpg.CharacterNotInRepertoireError, _bad_text)
    app.add_exception_handler(asyncpg.UntranslatableCharacterError, _bad_text)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
