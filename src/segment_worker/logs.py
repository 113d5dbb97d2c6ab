"""Log output of every command: ``SEGMENT_WORKER_LOG_FORMAT`` = ``text`` (default) or ``json``
(CONTRACT §1: one JSON object per line).

A JSON line has ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``, then the
context known where it was logged — ``workspace``, ``partition`` (``partitions`` for a batch over
several), ``offset``, ``event_id``, ``segment_id``, ``request_id`` — and ``exc_info`` (the traceback
as one string). Context comes from ``log_context`` (a ``contextvars`` binding set at a batch or
request boundary, inherited by the tasks started inside it) and from ``extra=`` on a log call, which
wins. A small formatter over orjson rather than a dependency: the whole job is the ~30 lines below.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The context fields a JSON line may carry, in the order they are written.
CONTEXT_FIELDS = (
    "workspace", "partition", "partitions", "offset", "event_id", "segment_id", "request_id", "error",
)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("segment_worker_log_context", default=_EMPTY)
_format: LogFormat = "text"


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (``None`` values are left out) to every log line written inside the block,
    including by tasks created inside it (they copy the context)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def partitions_context(partitions: Iterable[int]) -> AbstractContextManager[None]:
    """``log_context`` for work over input partitions: ``partition`` when there is one, else the
    sorted list as ``partitions`` (one field keeps one JSON type)."""
    parts = sorted(partitions)
    if len(parts) == 1:
        return log_context(partition=parts[0])
    return log_context(partitions=parts)


def current_context() -> Mapping[str, Any]:
    """The fields ``log_context`` bound here (for tests and error bodies)."""
    return _context.get()


def _utc_ms(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One log record → one line of JSON (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_context.get())
        attrs = record.__dict__
        for key in CONTEXT_FIELDS:
            value = attrs.get(key)
            if value is not None:
                out[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn logs (client, method, path, http version, status) as arguments: keep them apart.
            client, method, path, _version, status = record.args
            out.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def json_line(logger: str, message: str, level: int = logging.INFO, **fields: Any) -> str:
    """One JSON log line written outside ``logging`` (a command's report on stdout), ``fields``
    after the usual ones."""
    record = logging.LogRecord(logger, level, "", 0, message, None, None)
    out = orjson.loads(JsonFormatter().format(record))
    out.update(fields)
    return orjson.dumps(out, default=str).decode()


def logging_config(fmt: LogFormat, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: one stderr handler on the root logger in ``fmt``;
    uvicorn's loggers (``uvicorn.error``, ``uvicorn.access``) hand their records to it."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("segment_worker").critical("uncaught exception", exc_info=(kind, exc, tb))


def configure(fmt: LogFormat, level: str) -> None:
    """Set up logging for a command. ``text`` keeps the long-standing one-line format; ``json``
    also routes Python warnings and uncaught exceptions through the JSON handler, so nothing the
    process writes to stderr is left as plain text."""
    global _format
    _format = fmt
    if fmt == "text":
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
        return
    logging.config.dictConfig(logging_config(fmt, level))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def log_format() -> LogFormat:
    """The format ``configure`` set (``text`` before it ran)."""
    return _format


def uvicorn_options(level: str) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: in text mode none (uvicorn's own log format, as
    before), in JSON mode a ``log_config`` that sends its loggers through our handler."""
    return {} if _format == "text" else {"log_config": logging_config(_format, level)}
