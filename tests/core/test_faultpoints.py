"""The test-only fault points: a no-op unless armed; armed, the n-th hit crashes (137) or freezes
the process (SIGSTOP) exactly there; a malformed setting is refused at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from segment_worker import faultpoints

_CHILD = (
    "from segment_worker import faultpoints as f\n"
    "for i in range(3):\n"
    "    f.reach('after_redis')\n"
    "    print(i, flush=True)\n"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_FAULT")}
    return {**env, **extra}


def test_unarmed_reach_does_nothing() -> None:
    assert os.environ.get(faultpoints.CRASH_ENV) is None
    for point in faultpoints.POINTS:
        faultpoints.reach(point)


def test_crash_at_the_nth_hit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=_env(**{faultpoints.CRASH_ENV: "after_redis:2"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 137 and done.stdout.split() == ["0"], (
        done.returncode,
        done.stdout,
        done.stderr,
    )


def test_stop_at_the_nth_hit_then_continue() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        env=_env(**{faultpoints.STOP_ENV: "after_redis:3"}),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED:
            assert time.monotonic() < deadline and proc.poll() is None, "never stopped"
            time.sleep(0.02)
        proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out.split() == ["0", "1", "2"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_malformed_setting_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=_env(**{faultpoints.CRASH_ENV: "after_lunch:1"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "bad fault point 'after_lunch:1'" in done.stderr
