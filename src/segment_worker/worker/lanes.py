"""``segment-worker run``: one process, ``SEGMENT_WORKER_LANES`` workers (lanes) on one event loop.

Why lanes: a worker's batch is serial (load, evaluate, write, send) and waits on PostgreSQL about
half the time. Each lane is a whole ``Worker`` — its own consumer in the group, so its own
partitions, lock, connections, epochs and outbox — so lanes never share a customer and keep every
guarantee of separate processes, while one lane computes as another waits on PostgreSQL. They share
the process's metrics and its record-cache budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace

from ..config import Settings
from .gcpacing import GcPacer, configure_collector
from .loop import Worker, WorkerOptions
from .metrics import WorkerMetrics

log = logging.getLogger(__name__)


async def run_until_signalled(
    settings: Settings, *, options: WorkerOptions | None = None, metrics_port: int | None = None
) -> None:
    """``segment-worker run``: serve metrics, run the worker's lanes until SIGINT/SIGTERM, stop
    cleanly."""
    import signal

    from .metrics import serve

    # The record cache holds many small long-lived objects: with the default thresholds the cyclic
    # GC rescans them constantly (about two thirds of the time spent loading records, measured);
    # the thresholds and the pacer keep them out of the collections' way (gcpacing).
    configure_collector()
    stop = asyncio.Event()
    pacer = asyncio.create_task(GcPacer().run(stop))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = WorkerMetrics()
    lanes = make_lanes(settings, options=options, metrics=metrics)
    if metrics_port is not None:
        serve(metrics_port, metrics.registry, health=lambda: lanes_liveness(lanes),
              ready=lambda: lanes_readiness(lanes))
    try:
        await run_lanes(lanes, stop)
    finally:
        stop.set()
        await pacer
    log.info("worker %s stopped", ", ".join(w.owner for w in lanes))


def make_lanes(
    settings: Settings, *, options: WorkerOptions | None = None, metrics: WorkerMetrics | None = None
) -> list[Worker]:
    """``settings.lanes`` workers for one process, sharing its metrics and its record-cache budget
    (split evenly); an explicit ``options.owner`` gets a ``/<lane>`` suffix per lane."""
    options = options or WorkerOptions()
    n = settings.lanes
    lane_settings = settings.model_copy(update={"record_cache_mb": max(1, settings.record_cache_mb // n)})
    metrics = metrics or WorkerMetrics()
    base = options.owner
    return [
        Worker(lane_settings, metrics=metrics,
               options=replace(options, owner=f"{base}/{i}" if base and n > 1 else base))
        for i in range(n)
    ]


async def run_lanes(lanes: list[Worker], stop: asyncio.Event) -> None:
    """Run every lane until ``stop``; if one fails, stop the others and raise its error."""
    tasks = [asyncio.create_task(w.run(stop)) for w in lanes]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop.set()  # one lane ending (failure or cancellation) ends the process: its supervisor restarts it
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def lanes_liveness(lanes: list[Worker]) -> tuple[bool, str]:
    """``/healthz`` of a process: every lane's batch loop keeps coming round."""
    failed = _failed(w.liveness() for w in lanes)
    return (False, failed) if failed else (True, "ok")


def lanes_readiness(lanes: list[Worker]) -> tuple[bool, str]:
    """``/readyz`` of a process: every lane started and none stopping; the detail counts the
    partitions the process owns."""
    failed = _failed(w.readiness() for w in lanes)
    if failed:
        return False, failed
    return True, f"{sum(len(w.owned) for w in lanes)} partitions owned"


def _failed(checks: Iterable[tuple[bool, str]]) -> str:
    """The failing lanes' details, each named by its lane ("" when every lane passes)."""
    return "; ".join(f"lane {i}: {detail}" for i, (ok, detail) in enumerate(checks) if not ok)
