"""Lists: pages (CONTRACT §10): ``limit`` 1–500 (default 50) and an opaque ``cursor``.

A cursor is the sort key of the last item of the previous page, as URL-safe base64 of a JSON
array. Keyset pagination: stable under inserts and cheap at any depth.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

T = TypeVar("T")
CursorKey = Sequence[str | int | float | None]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: the items, the cursor of the next page (None at the end), the total."""

    items: tuple[T, ...]
    next_cursor: str | None
    total: int


def check_limit(limit: int) -> int:
    """``limit`` if within 1–500; ValidationFailed otherwise."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(
            f"limit must be between 1 and {MAX_LIMIT}",
            details=[{"path": "$.limit", "message": f"must be between 1 and {MAX_LIMIT}"}],
        )
    return limit


def encode_cursor(key: CursorKey) -> str:
    """The opaque cursor of a sort key."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[str | int | float | None] | None:
    """The sort key inside ``cursor`` (None for the first page); ValidationFailed when it is not ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == arity):
        raise cursor_error()
    if not all(v is None or isinstance(v, str | int | float) for v in key):
        raise cursor_error()
    return key


def cursor_error() -> ValidationFailed:
    """The error of a cursor that is not one this list gave out."""
    return ValidationFailed(
        "cursor is not valid for this list",
        details=[{"path": "$.cursor", "message": "not a cursor of this list; start again without one"}],
    )


def page_of(rows: Sequence[T], limit: int, total: int, key_of: Callable[[T], CursorKey]) -> Page[T]:
    """A page from up to ``limit + 1`` fetched rows (the extra one only says a next page exists)."""
    items = tuple(rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_cursor(key_of(items[-1])) if more else None, total)


def like_pattern(text: str) -> str:
    """A LIKE pattern (default escape ``\\``) matching values that contain ``text`` literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
