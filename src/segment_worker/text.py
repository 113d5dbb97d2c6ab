"""Text normalisation and identifier checks shared by every evaluator and boundary (CONTRACT §10)."""

from __future__ import annotations

import re
import unicodedata

_ID_RE = re.compile(r"^[!-~\u00a1-\U0010ffff]{1,128}$")
_WS_FORBIDDEN = frozenset(":{}/")


def fold(s: str) -> str:
    """Case-insensitive comparison key: NFC normalisation, then ``str.casefold()``."""
    return unicodedata.normalize("NFC", s).casefold()


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id (1–128 printable characters, no whitespace), or None."""
    if not value:
        return "must not be empty"
    if len(value) > 128:
        return f"is {len(value)} characters long; at most 128 are allowed"
    for ch in value:
        if ch.isspace():
            return "must not contain whitespace"
        if not ch.isprintable():
            return f"contains a non-printable character (U+{ord(ch):04X})"
    return None


def workspace_id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid workspace id (an id without ``: { } /``), or None."""
    problem = id_problem(value)
    if problem is not None:
        return problem
    bad = sorted(_WS_FORBIDDEN.intersection(value))
    if bad:
        return f"must not contain {' '.join(repr(c) for c in bad)}"
    return None
