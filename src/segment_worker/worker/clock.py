"""The worker's clock: injectable so tests move time without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the worker and the ticker read "now" (an aware UTC datetime)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current instant, UTC."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """The instant last set."""
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant`` (forwards or backwards)."""
        if instant.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = instant.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta``; return the new instant."""
        self._now += delta
        return self._now


class ShiftedClock:
    """The real clock moved by a fixed amount: time runs at its real rate from an instant the test
    chooses (for timers that must fire at the real moments of a far-away boundary, e.g. midnight)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._shift = timedelta(0)
        if start is not None:
            self.set(start)

    def now(self) -> datetime:
        """The real instant plus the shift."""
        return datetime.now(UTC) + self._shift

    def set(self, instant: datetime) -> None:
        """Read ``instant`` now, and run on from it."""
        if instant.tzinfo is None:
            raise ValueError("ShiftedClock needs an aware datetime")
        self._shift = instant - datetime.now(UTC)
