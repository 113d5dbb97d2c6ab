"""Run workers for tests: in-process (``WorkerHarness``) or as ``segment-worker run`` subprocesses
(``WorkerProcess``), against the session's real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from prometheus_client import CollectorRegistry

from segment_worker.config import Settings
from segment_worker.worker.clock import Clock
from segment_worker.worker.loop import Worker, WorkerOptions
from segment_worker.worker.metrics import WorkerMetrics

# Short group timeouts: tests kill and restart workers, and wait for the group to notice.
# (Against Tansu a first join takes about min(session timeout / 2, 3 s), at least ~1.1 s.)
FAST = WorkerOptions(
    session_timeout_ms=2000, heartbeat_interval_ms=200, poll_timeout_ms=100, retry_backoff_seconds=0.2
)


class WorkerHarness:
    """A ``Worker`` running as a task of the test's event loop, with its own metrics registry."""

    def __init__(
        self, settings: Settings, *, clock: Clock | None = None, options: WorkerOptions | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.worker = Worker(
            settings, clock=clock, metrics=WorkerMetrics(self.registry), options=options or FAST
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, wait_assigned: bool = True, limit_s: float = 30.0) -> WorkerHarness:
        """Start the worker; by default wait until it owns partitions."""
        self._task = asyncio.create_task(self.worker.run())
        if wait_assigned:
            await self.wait_for(lambda: bool(self.worker.owned), limit_s, "no partition assigned")
        return self

    async def wait_for(self, cond: object, limit_s: float, what: str) -> None:
        """Poll ``cond()`` until true; fail (with the worker's own error, if it died) otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not cond():  # type: ignore[operator]
            if self._task is not None and self._task.done():
                self._task.result()  # raises the worker's error
                raise AssertionError("the worker stopped")
            if loop.time() > deadline:
                raise AssertionError(f"{what} after {limit_s} s")
            await asyncio.sleep(0.05)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample of the worker's registry (0 when absent)."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    async def stop(self) -> None:
        """Stop cleanly (leave the group, close everything) and surface any crash."""
        if self._task is None:
            return
        self.worker.stop()
        try:
            await asyncio.wait_for(self._task, 30)
        finally:
            self._task = None

    async def __aenter__(self) -> WorkerHarness:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()




class WorkerProcess:
    """``segment-worker run`` in a subprocess (its log goes to ``log_path``)."""

    def __init__(self, settings: Settings, log_path: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.log_path = log_path
        self.args = (
            sys.executable,
            "-m",
            "segment_worker.cli",
            "run",
            "--session-timeout-ms",
            "2000",
            *extra_args,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.settings.as_env(os.environ), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up at all (a crash)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: answers the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
