"""The marker of a field a partial update (PATCH, PUT of some settings) did not send."""

from __future__ import annotations

import enum


class Unset(enum.Enum):
    """A field the caller did not send, as distinct from an explicit null."""

    UNSET = 0


UNSET = Unset.UNSET
