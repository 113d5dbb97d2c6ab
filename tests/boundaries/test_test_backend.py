"""The test-server switch (``SEGMENT_WORKER_TEST_BACKEND``): embedded by default; ``testcontainers``
is not exercised here (no Docker engine), so what is checked is the switch itself — an unknown
value, and the containers backend without an engine, each stop the session once, clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.containers import backend

TESTS = Path(__file__).resolve().parents[1]


def _pytest(backend_value: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEGMENT_WORKER_TEST_BACKEND": backend_value}
    for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP"):  # the switch applies when these are unset
        env.pop(f"SEGMENT_WORKER_{name}", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *args], env=env, cwd=TESTS.parent,
                          capture_output=True, text=True, timeout=120)


def test_embedded_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENT_WORKER_TEST_BACKEND", raising=False)
    assert backend() == "embedded"
    monkeypatch.setenv("SEGMENT_WORKER_TEST_BACKEND", "TestContainers")
    assert backend() == "testcontainers"


def test_an_unknown_backend_is_refused_before_any_test() -> None:
    run = _pytest("docker", "--collect-only", "tests/core/test_partitioning.py")
    assert run.returncode == 4
    assert "SEGMENT_WORKER_TEST_BACKEND='docker': expected one of embedded, testcontainers" in run.stderr


def _docker_configured() -> bool:
    return bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()


@pytest.mark.skipif(_docker_configured(), reason="a Docker engine may answer: the containers would start")
def test_the_containers_backend_without_docker_stops_the_session_once() -> None:
    run = _pytest("testcontainers", "tests/stores/test_store_postgres.py")
    assert run.returncode == 4
    assert "SEGMENT_WORKER_TEST_BACKEND=testcontainers: no Docker engine answers" in run.stdout + run.stderr
    assert "passed" not in run.stdout and " error" not in run.stdout.splitlines()[-1]
