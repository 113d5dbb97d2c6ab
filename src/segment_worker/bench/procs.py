"""Workers under test as real ``segment-worker run`` child processes (what production runs), with
their Prometheus endpoints read for readiness and tick costs, their memory sampled, and the CPU
time of every process on the machine's critical path accounted per component.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from ..childproc import free_port, parent_death_preexec
from ..config import Settings
from .servers import BenchError


@dataclass(slots=True)
class WorkerProc:
    """One ``segment-worker run`` child."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    peak_rss: int = 0

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise ``BenchError`` with the log's tail if the worker exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise BenchError(f"a worker exited with status {self.proc.returncode}; see {self.log}",
                             context={"log_tail": tail})

    def sample_rss(self) -> int:
        """Current resident size (bytes), remembered as the peak if it is one."""
        with contextlib.suppress(psutil.Error):
            rss = int(psutil.Process(self.pid).memory_info().rss)
            self.peak_rss = max(self.peak_rss, rss)
            return rss
        return 0

    def high_water_rss(self) -> int:
        """The kernel's peak resident size of the process (``VmHWM``), else the sampled peak."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
        return self.peak_rss

    async def metrics(self, client: httpx.AsyncClient) -> dict[str, float]:
        """The worker's metrics, summed over label sets (name → value)."""
        r = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
        return out

    async def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (leave the group, close cleanly, a profiler writes its report), then SIGKILL."""
        self.high_water_rss()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        await asyncio.to_thread(self.proc.wait)


def spawn_worker(
    settings: Settings, log: Path, *, profile: Path | None = None, args: tuple[str, ...] = ()
) -> WorkerProc:
    """Start ``segment-worker run`` with ``settings`` (its output goes to ``log``); with ``profile``,
    under pyinstrument, which saves its session there when the worker exits."""
    port = free_port()
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "pyinstrument", "--renderer", "session", "-o", str(profile)]
    argv = [*prefix, "-m", "segment_worker.cli", "run", "--metrics-port", str(port), *args]
    with open(log, "ab") as out:
        env = {**settings.as_env(os.environ), "SEGMENT_WORKER_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=parent_death_preexec(signal.SIGTERM))
    return WorkerProc(proc, port, log)


@dataclass(slots=True)
class WorkerGroup:
    """The workers of one measurement."""

    workers: list[WorkerProc]
    client: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    _sampler: asyncio.Task[None] | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [w.pid for w in self.workers]

    async def wait_ready(self, partitions: int, within: float = 90.0) -> None:
        """Until the workers own every input partition between them (each at least one)."""
        deadline = time.monotonic() + within
        while True:
            owned = []
            for w in self.workers:
                w.check_alive()
                try:
                    owned.append((await w.metrics(self.client)).get("segment_worker_owned_partitions", 0))
                except httpx.HTTPError:
                    owned.append(0)
            if sum(owned) >= partitions and all(o > 0 for o in owned):
                break
            if time.monotonic() > deadline:
                raise BenchError("the workers did not take every input partition in time",
                                 context={"owned": owned, "partitions": partitions})
            await asyncio.sleep(0.2)
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            for w in self.workers:
                w.sample_rss()
            await asyncio.sleep(0.25)

    async def metric(self, name: str) -> float:
        """One metric summed over the workers."""
        return (await self.metrics(name))[0]

    async def metrics(self, *names: str) -> tuple[float, ...]:
        """Several metrics summed over the workers, from one scrape of each."""
        scraped = [await w.metrics(self.client) for w in self.workers]
        return tuple(sum(m.get(name, 0.0) for m in scraped) for name in names)

    def check_alive(self) -> None:
        """Raise if any worker died."""
        for w in self.workers:
            w.check_alive()

    async def stop(self) -> None:
        """Stop every worker; their peak resident sizes stay readable."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await asyncio.gather(*(w.stop() for w in self.workers))
        await self.client.aclose()


def cpu_seconds(components: Mapping[str, Iterable[int]], *, children: bool = True) -> dict[str, float]:
    """CPU time (user + system) so far of each component's processes and, with ``children``, of
    their children (reaped ones included: PostgreSQL's ended backends count for the postmaster)."""
    out: dict[str, float] = {}
    for name, pids in components.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                t = p.cpu_times()
                total += t.user + t.system
                if not children:
                    continue
                total += t.children_user + t.children_system
                for child in p.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        ct = child.cpu_times()
                        total += ct.user + ct.system
        out[name] = total
    return out
