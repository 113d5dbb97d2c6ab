"""Fault points: TEST-ONLY hooks that let the fault suite (``tests/faults``) crash or freeze a real
``segment-worker run`` process at an exact commit boundary. Never set these variables in
production; unset (always, outside the fault suite) every ``reach`` is a dictionary-free no-op.

It lives at the package top, importing nothing of ours, so that ``stores`` and ``worker`` can both
call it without an import cycle (``worker/__init__`` imports the loop, which imports ``stores``).

Read once, at import, from the environment:

- ``SEGMENT_WORKER_FAULT_CRASH_AT=<point>:<n>``: the n-th time ``reach(<point>)`` runs, the process
  ends at once with ``os._exit(137)`` (what SIGKILL looks like to its parent: no clean-up, no
  ``finally``, nothing flushed).
- ``SEGMENT_WORKER_FAULT_STOP_AT=<point>:<n>``: the n-th time, the process sends itself SIGSTOP,
  frozen exactly there (e.g. inside a batch transaction, holding its locks) until the test sends
  SIGCONT; then it carries on from that line as a zombie would.

Points (each one line at its call site):

- ``batch_written``: a worker batch wrote its states, transitions and offsets, its transaction
  still open (``worker/batch.py``): "inside a batch";
- ``before_pg_commit``: any unit's writes are done (a batch, a claim, a tick), its transaction is
  still open (``stores/unit.py``);
- ``after_pg_commit``: the unit committed, Redis not yet written (``stores/unit.py``);
- ``after_redis``: Redis written, the outbox not yet sent (``stores/unit.py``);
- ``after_kafka_send``: output events delivered to Kafka, not yet marked sent (``worker/outbox.py``);
- ``before_offsets_commit``: just before consumer offsets are committed to Kafka (``worker/loop.py``).
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "SEGMENT_WORKER_FAULT_CRASH_AT"
STOP_ENV = "SEGMENT_WORKER_FAULT_STOP_AT"
POINTS = frozenset(
    (
        "batch_written",
        "before_pg_commit",
        "after_pg_commit",
        "after_redis",
        "after_kafka_send",
        "before_offsets_commit",
    )
)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, n = value.partition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"bad fault point {value!r}: want <point>:<n>, point one of {sorted(POINTS)}")
    return point, int(n)


_CRASH = _parse(os.environ.get(CRASH_ENV))
_STOP = _parse(os.environ.get(STOP_ENV))
_ARMED = _CRASH is not None or _STOP is not None
_hits: dict[str, int] = {}


def reach(point: str) -> None:
    """Mark that the process reached ``point``; crash or freeze here if a test asked for it."""
    if not _ARMED:
        return
    n = _hits[point] = _hits.get(point, 0) + 1
    if _CRASH is not None and _CRASH == (point, n):
        os._exit(137)
    if _STOP is not None and _STOP == (point, n):
        os.kill(os.getpid(), signal.SIGSTOP)
