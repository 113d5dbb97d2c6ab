"""Servers of one test alone, to break on purpose: a redis-server to FLUSHALL, kill -9 and restart
empty on the same port, a Tansu broker to restart (its log is in memory: it comes back empty).
The session's shared servers are never broken."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from pathlib import Path

from segment_worker.childproc import free_port, port_answers
from segment_worker.embedded import redis_server_bin, tansu_bin


class OwnServer:
    """One server process on a fixed port, restartable (``kill`` then ``start``)."""

    def __init__(self, name: str, workdir: Path, port: int | None = None) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_answers(self.port)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process on its port (``start`` also waits until it answers)."""
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )
        return self.proc

    async def start(self, limit_s: float = 30.0) -> None:
        """Start it on its port and wait until it answers."""
        proc = self.spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not self.ready():
            if proc.poll() is not None or loop.time() > deadline:
                log = self.log_path.read_text(errors="replace")
                raise AssertionError(f"{self.name} did not start: {log}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL (nothing saved), and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class OwnRedis(OwnServer):
    """redis-server without persistence: a restart comes back empty."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [str(redis_server_bin()), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no", "--logfile", ""]


class OwnTansu(OwnServer):
    """The Tansu broker with in-memory storage: a restart comes back with no topics and no records."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("tansu", workdir)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [tansu_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def ready(self) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                printed = b"ready in" in f.read()
        except OSError:
            return False
        return printed and port_answers(self.port)
