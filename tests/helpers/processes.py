"""Process checks shared by the tests that must leave nothing running."""

from __future__ import annotations

import time

import psutil


def still_alive(pids: list[int], within: float = 10.0) -> list[int]:
    """The pids still running after waiting up to ``within`` seconds (zombies count as gone)."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)
