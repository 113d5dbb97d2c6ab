"""What ``segment-worker dev`` runs besides the embedded servers: the worker as a child process
(``segment-worker run``, exactly what production runs) and the API in this process (uvicorn on a
socket we bind ourselves, so a taken port is known before anything starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import uvicorn
from fastapi import FastAPI

from ..childproc import parent_death_preexec, tail
from ..config import Settings
from ..errors import SegmentWorkerError
from ..logs import log_format

_POLL = 0.05


class DevError(SegmentWorkerError):
    """A part of the dev stack failed to start or died; ``context`` says which (and its log)."""

    code = "dev_failed"




@dataclass(frozen=True, slots=True)
class ApiSocket:
    """The API's listening socket; ``notice`` explains a port other than the one asked for."""

    sock: socket.socket
    host: str
    port: int
    notice: str | None = None


def bind_api_socket(host: str, port: int) -> ApiSocket:
    """A listening TCP socket on ``host:port``; when that port is taken, on a free one instead,
    with a notice saying so (port 0 asks for any free port, silently)."""

    def bind(p: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Like uvicorn: a port left in TIME_WAIT by a previous run is reusable at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, p))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    try:
        sock = bind(port)
        notice = None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise DevError(f"cannot listen on {host}:{port}: {exc.strerror}",
                           context={"host": host, "port": port}) from exc
        sock = bind(0)
        notice = (f"port {port} on {host} is already in use by another program; the API listens on "
                  f"port {sock.getsockname()[1]} instead (choose one with --api-port)")
    return ApiSocket(sock, host, int(sock.getsockname()[1]), notice)


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``data_dir`` (until the returned file is closed): a second ``dev``
    on the same directory would find the first one's servers and reap them as leftovers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "dev.lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DevError(
            f"another `segment-worker dev` is running with --data-dir {data_dir}; stop it first,"
            " or choose another directory", context={"data_dir": str(data_dir)},
        ) from None
    return handle


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``dev`` owns SIGINT/SIGTERM and stops us itself
    (uvicorn would otherwise re-raise a captured signal after shutting down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """The FastAPI app served by uvicorn as a task of the running event loop."""

    def __init__(self, app: FastAPI, listening: ApiSocket) -> None:
        self._socket = listening
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", log_config=None)
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self, within: float = 30.0) -> None:
        """Serve; answers once the app's lifespan has started and requests are accepted."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket.sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what failed
                raise DevError("the API stopped while starting", context={"port": self._socket.port})
            if loop.time() > deadline:
                raise DevError(f"the API did not start within {within:.0f}s",
                               context={"port": self._socket.port})
            await asyncio.sleep(_POLL)

    async def stop(self) -> None:
        """Finish in-flight requests, run the lifespan's shutdown, close the socket."""
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        self._socket.sock.close()


class WorkerProcess:
    """``segment-worker run`` as a child process in its own session (a terminal's Ctrl-C reaches
    only ``dev``, which stops it in order) that also dies with us (Linux parent-death signal)."""

    def __init__(self, settings: Settings, log: Path, *, metrics_port: int) -> None:
        self.log = log
        self.metrics_port = metrics_port
        self._settings = settings
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Spawn the worker (it creates the topics if missing and joins the consumer group)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
        env |= self._settings.as_env()
        if "SEGMENT_WORKER_LOG_LEVEL" in os.environ:
            env["SEGMENT_WORKER_LOG_LEVEL"] = os.environ["SEGMENT_WORKER_LOG_LEVEL"]
        env["SEGMENT_WORKER_LOG_FORMAT"] = log_format()  # as `dev` itself logs (option or variable)
        out = await asyncio.to_thread(self.log.open, "ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "segment_worker.cli", "run", "--metrics-port", str(self.metrics_port),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=parent_death_preexec(signal.SIGTERM),
            )
        finally:
            out.close()  # the child has its own copy of the descriptor

    def check_alive(self) -> None:
        """Raise ``DevError`` (with the log's tail) if the worker has exited."""
        if self._proc is not None and self._proc.returncode is not None:
            raise DevError(
                f"the worker exited with status {self._proc.returncode}; see {self.log}",
                context={"log": str(self.log), "log_tail": tail(self.log)},
            )

    async def wait_exit(self) -> None:
        """Return when the worker process has exited (for whatever reason)."""
        if self._proc is not None:
            await self._proc.wait()

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (the worker leaves its group and closes cleanly), then SIGKILL of its process
        group if it has not exited within ``grace`` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
