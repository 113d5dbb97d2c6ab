"""The service's documented input limits (CONTRACT §10 "Limits"; DESIGN.md "Poison and limits").

One module owns them so that input events (``events``, ``apply``), the API (``api.models``) and CSV
imports (``csvimport``) refuse exactly the same values, and the JSON Schemas publish them.

Why these numbers: a PostgreSQL index entry holds at most 2,704 bytes (btree, 8 kB pages; GIN
entries 2,712 — "index row size 5016 exceeds maximum 2712 for index customers_tags" was a 5 KB
tag), and a stored text is the folded form (``text.fold``: NFC, then ``casefold``), which can take
up to 12 UTF-8 bytes per input character (U+1D160 becomes three 4-byte code points; measured over
every code point). Limits are in characters (JSON Schema ``maxLength`` counts code points) and
chosen so that even that worst case fits the index, with its other columns:

- ``tags``: GIN on the folded array, one entry per tag: 200 × 12 = 2,400 bytes.
- ``name``, ``phone``, ``language``: btree ``(workspace_id, <field>_f)``; a workspace id takes up
  to 128 × 4 = 512 bytes, so name 160 × 12 = 1,920 (+512 = 2,432), phone and language 64.
- ``email``, ``platform`` and attribute texts are not indexed: email 320 (RFC 5321's 64 + 1 + 255),
  platform 64 (a channel name), attribute texts 2,048 characters per value or array item (rows,
  API pages and explain trees stay small; an event is at most 1 MB anyway).
- Instants: Python's ``datetime`` holds years 1–9999; PostgreSQL more. An instant whose UTC value
  falls outside years 1–9999 cannot be compared, stored or turned into a version without
  ``OverflowError``, so it is bad input (a far-future *valid* value such as 9999-12-28 is fine).
- Numbers: integers beyond ±2^53 and NaN/±Infinity (exact IEEE-754 doubles on both evaluators).
"""

from __future__ import annotations

from datetime import UTC, datetime

MIN_YEAR = 1
MAX_YEAR = 9999
MAX_SAFE_NUMBER = 2**53

TAG_MAX_CHARS = 200
NAME_MAX_CHARS = 160
PHONE_MAX_CHARS = 64
EMAIL_MAX_CHARS = 320
LANGUAGE_MAX_CHARS = 64
PLATFORM_MAX_CHARS = 64
ATTRIBUTE_TEXT_MAX_CHARS = 2048

# Built-in text fields of ``customer.upserted`` (country is an ISO code, checked on its own).
TEXT_FIELD_MAX_CHARS: dict[str, int] = {
    "phone": PHONE_MAX_CHARS,
    "name": NAME_MAX_CHARS,
    "email": EMAIL_MAX_CHARS,
    "language": LANGUAGE_MAX_CHARS,
    "platform": PLATFORM_MAX_CHARS,
}

# The words of every instant-range reason (tests and the DLQ metric's ``limit`` label look for it).
INSTANT_OUT_OF_RANGE = f"instant outside years {MIN_YEAR}–{MAX_YEAR} in UTC"


class LimitError(ValueError):
    """A value beyond a documented limit; the message names the limit (not the field)."""


def instant_problem(dt: datetime) -> str | None:
    """Why aware ``dt`` is beyond the limits (its UTC value outside years 1–9999), or None."""
    try:
        dt.astimezone(UTC)  # a datetime holds years 1-9999 only: outside, this overflows
    except OverflowError:
        return INSTANT_OUT_OF_RANGE
    return None


def text_problem(value: str, max_chars: int) -> str | None:
    """Why ``value`` is too long for a field limited to ``max_chars`` characters, or None."""
    if len(value) > max_chars:
        return f"is {len(value)} characters long; the limit is {max_chars}"
    return None


def check_text(value: str, max_chars: int) -> str:
    """``value`` when within ``max_chars`` characters, else ``LimitError`` saying why."""
    problem = text_problem(value, max_chars)
    if problem is not None:
        raise LimitError(problem)
    return value

