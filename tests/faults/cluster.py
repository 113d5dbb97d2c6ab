"""Real ``segment-worker run`` processes for the fault suite: start, SIGKILL, restart, freeze
(SIGSTOP/SIGCONT), a crash or a freeze at a fault point (``segment_worker.faultpoints``), and a
supervisor that restarts a process that died, as Kubernetes would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import psutil

from helpers.harness import WorkerProcess
from segment_worker.config import Settings
from segment_worker.faultpoints import CRASH_ENV, STOP_ENV


class FaultWorker(WorkerProcess):
    """A ``WorkerProcess`` whose environment may arm a fault point (test-only variables)."""

    def __init__(self, settings: Settings, log_path: Path, fault_env: Mapping[str, str] | None = None):
        super().__init__(settings, log_path)
        self.fault_env = dict(fault_env or {})

    def start(self) -> FaultWorker:
        env = self.settings.as_env(os.environ)
        env.update(self.fault_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        """Alive and not frozen (SIGSTOP) nor a zombie."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return psutil.Process(self.proc.pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED)
        except psutil.NoSuchProcess:
            return False

    def stopped(self) -> bool:
        """Frozen by SIGSTOP (its own, at a fault point, or ours)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).status() == psutil.STATUS_STOPPED
        return False

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


def crash_at(point: str, n: int) -> dict[str, str]:
    """The environment that makes a worker exit (137) the n-th time it reaches ``point``."""
    return {CRASH_ENV: f"{point}:{n}"}


def stop_at(point: str, n: int) -> dict[str, str]:
    """The environment that makes a worker SIGSTOP itself the n-th time it reaches ``point``."""
    return {STOP_ENV: f"{point}:{n}"}


class Cluster:
    """Numbered worker slots over one group; each slot's successive processes share its log."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.slots: dict[int, FaultWorker] = {}
        self.retired: list[FaultWorker] = []  # processes replaced by a restart
        self.restarts = 0
        self.unexpected_exits: list[tuple[int, int | None]] = []  # (slot, status) seen by supervise
        self._supervisor: asyncio.Task[None] | None = None

    def start(self, slot: int, fault_env: Mapping[str, str] | None = None) -> FaultWorker:
        w = FaultWorker(self.settings, self.log_dir / f"worker{slot}.log", fault_env).start()
        old = self.slots.get(slot)
        if old is not None:
            self.retired.append(old)
        self.slots[slot] = w
        return w

    def kill(self, slot: int) -> None:
        self.slots[slot].kill()

    def restart(self, slot: int) -> FaultWorker:
        """SIGKILL the slot's process (if alive) and start a clean one (no fault armed)."""
        self.slots[slot].ensure_dead()
        self.restarts += 1
        return self.start(slot)

    def terminate(self, slot: int) -> int:
        """SIGTERM (a clean leave); the slot is removed. Answers the exit status."""
        w = self.slots.pop(slot)
        self.retired.append(w)
        return w.terminate()

    def pids(self) -> list[int]:
        return [w.pid for w in self.slots.values() if w.proc is not None]

    def supervise(self, every_s: float = 0.2) -> None:
        """Restart (clean) any slot whose process exited, like a container's restart policy."""

        async def loop() -> None:
            while True:
                for slot, w in list(self.slots.items()):
                    if w.proc is not None and w.proc.poll() is not None:
                        self.unexpected_exits.append((slot, w.proc.returncode))
                        self.restarts += 1
                        self.start(slot)
                await asyncio.sleep(every_s)

        self._supervisor = asyncio.create_task(loop())

    async def unsupervise(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    def assert_all_alive(self) -> None:
        """Every current worker process still runs (not dead, not frozen)."""
        dead = {s: (w.proc.returncode if w.proc else None) for s, w in self.slots.items() if not w.running()}
        assert not dead, f"workers not running at the end (slot: status): {dead}\n{self.logs_tail()}"

    def logs_tail(self, lines: int = 30) -> str:
        out = []
        for slot in sorted(self.slots):
            path = self.log_dir / f"worker{slot}.log"
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            out.append(f"--- worker{slot}.log (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def grep(self, needle: str) -> list[str]:
        """Lines of every slot's log containing ``needle``."""
        found = []
        for path in sorted(self.log_dir.glob("worker*.log")):
            lines = path.read_text(errors="replace").splitlines()
            found += [f"{path.name}: {ln}" for ln in lines if needle in ln]
        return found

    async def close(self) -> None:
        await self.unsupervise()
        for w in [*self.slots.values(), *self.retired]:
            if w.stopped():
                with contextlib.suppress(ProcessLookupError):
                    w.signal(signal.SIGCONT)
            w.ensure_dead()


async def owners(conn: asyncpg.Connection, partitions: int) -> dict[int, int | None]:
    """Partition → pid of its owner as PostgreSQL's ``partitions`` table says (None: unowned)."""
    rows = await conn.fetch("SELECT partition, owner FROM partitions WHERE partition < $1", partitions)
    out: dict[int, int | None] = {p: None for p in range(partitions)}
    for r in rows:
        if r["owner"]:
            out[r["partition"]] = int(r["owner"].split(":")[1])
    return out
