"""Typed errors: each says what went wrong, carries the context to act on it, and whether retrying
the same operation can help (``retriable``). Boundaries (API, CLI, worker loop) map them to status
codes, exit codes, DLQ records or retries; library exceptions are translated where they enter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class SegmentWorkerError(Exception):
    """Base of our errors. ``code`` is a stable, machine-readable name (API ``error.code``)."""

    code: ClassVar[str] = "internal"
    default_retriable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, retriable: bool | None = None, context: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retriable = self.default_retriable if retriable is None else retriable
        self.context: dict[str, Any] = dict(context or {})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view for logs."""
        return {"code": self.code, "message": self.message, "retriable": self.retriable,
                "context": self.context}


class ConfigError(SegmentWorkerError):
    """Missing or invalid configuration; fix the settings, retrying will not help."""

    code = "config_error"


class BadInput(SegmentWorkerError):
    """Input that can never be processed (an event for the DLQ, a malformed request)."""

    code = "bad_input"


class RecordTooLarge(BadInput):
    """Kafka refused a record for its size (producer ``max_request_size`` or the broker's limit)."""

    code = "record_too_large"


class StoreUnavailable(SegmentWorkerError):
    """PostgreSQL, Redis or Kafka did not answer or failed transiently; retry with backoff."""

    code = "store_unavailable"
    default_retriable = True


class FencedError(SegmentWorkerError):
    """This process no longer owns the partition (a newer epoch or a rebalance): drop the unit of
    work; the new owner redoes it from the committed position."""

    code = "fenced"


class NotFound(SegmentWorkerError):
    """The named resource does not exist (or is not visible to the caller)."""

    code = "not_found"


class Conflict(SegmentWorkerError):
    """The request contradicts the current state (duplicate name, dynamic segment members …)."""

    code = "conflict"


class ValidationFailed(SegmentWorkerError):
    """A request or rule failed validation; ``details`` lists each problem (e.g. ``path``, ``message``)."""

    code = "validation_failed"

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, retriable=False, context=context)
        self.details: list[dict[str, Any]] = [dict(d) for d in details]

    def to_dict(self) -> dict[str, Any]:
        """As the base, plus ``details``."""
        return {**super().to_dict(), "details": self.details}
