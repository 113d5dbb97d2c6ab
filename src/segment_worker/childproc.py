"""Small helpers for running servers as child processes (used by ``embedded``): step routines,
ports, logs, the parent-death signal, pid files, and the account and directory permissions a
server needs when we run as root.

Start/stop routines are written once as generators of *steps* — a float means "sleep this long",
a callable is a blocking call — and driven either synchronously (``drive``) or under asyncio
(``adrive``: sleeps awaited, blocking calls in a thread). Exceptions raised while a step runs,
Ctrl-C and task cancellation included, are thrown back into the routine so it can clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import pwd
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")
Step = float | Callable[[], object]
Steps = Generator[Step, object, T]

_PR_SET_PDEATHSIG = 1
_libc: Any = None


def drive(steps: Steps[T]) -> T:
    """Run a step routine to completion in this thread; answer its return value."""
    sent: object = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(sent)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        sent, error = None, None
        try:
            if callable(step):
                sent = step()
            else:
                time.sleep(step)
        except BaseException as exc:
            error = exc


async def adrive(steps: Steps[T]) -> T:
    """``drive`` without blocking the event loop. The routine's own code (e.g. ``Popen``) runs on
    the loop's thread, so a main-thread loop keeps the parent-death signal usable."""
    sent: object = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(sent)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        sent, error = None, None
        try:
            if callable(step):
                sent = await asyncio.to_thread(step)
            else:
                await asyncio.sleep(step)
        except BaseException as exc:
            error = exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def tail(path: Path, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a log file, as text ("" if unreadable)."""
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""


def parent_death_preexec(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive ``sig`` when we die (Linux), or None where that is
    unavailable or unsafe: PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is
    only used from the main thread."""
    global _libc
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    libc = _libc

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


def write_pids(path: Path, pids: Mapping[str, int]) -> None:
    """Record processes (name → pid, with start times) atomically, for ``recorded_processes``."""
    entries = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            entries[name] = [pid, psutil.Process(pid).create_time()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries))
    tmp.replace(path)  # a concurrent reader never sees half a file


def recorded_processes(path: Path) -> list[psutil.Process]:
    """The processes a ``write_pids`` file names that still run (matched by start time too, since
    pids are recycled)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    alive = []
    for pid, created in entries.values():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def ensure_system_account(name: str) -> pwd.struct_passwd | None:
    """The account ``name``, created (``useradd --system``) if missing; None if that fails."""
    for _ in range(20):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        # Several processes may race here (parallel test runs); useradd fails for all but one.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            check=False,
        )
        time.sleep(0.1)
    return None


def make_traversable(path: Path) -> None:
    """Give 'others' the execute (traverse) bit on ``path`` and its ancestors, nothing more (no
    listing, no reading)."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            p.chmod(mode | 0o001)
