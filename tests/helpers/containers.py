"""The test servers as Docker containers, through ``testcontainers``: the switch
``SEGMENT_WORKER_TEST_BACKEND=testcontainers`` runs the same suite against Apache Kafka (KRaft),
PostgreSQL and Redis containers instead of the embedded stack, for a CI that has a Docker engine.

Not exercised where this project is developed (no Docker engine there): kept to the surface the
session fixtures use — ``start_kafka()``, ``start_postgres()``, ``start_redis()``, ``stop()`` —
each container started on first use, like ``EmbeddedStack``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from typing import Any

import pytest

BACKENDS = ("embedded", "testcontainers")
# Confluent's packaging of Apache Kafka 3.9 (cp-kafka 7.9), the image testcontainers' Kafka module
# drives, in KRaft mode (no ZooKeeper); PostgreSQL and Redis as in docker-compose.yml.
KAFKA_IMAGE = os.environ.get("SEGMENT_WORKER_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.9.0")
POSTGRES_IMAGE = os.environ.get("SEGMENT_WORKER_TEST_POSTGRES_IMAGE", "postgres:16")
REDIS_IMAGE = os.environ.get("SEGMENT_WORKER_TEST_REDIS_IMAGE", "redis:7")


def backend() -> str:
    """``SEGMENT_WORKER_TEST_BACKEND`` (default ``embedded``), refused when unknown or when
    ``testcontainers`` is asked for but not installed."""
    chosen = os.environ.get("SEGMENT_WORKER_TEST_BACKEND", "embedded").strip().lower() or "embedded"
    if chosen not in BACKENDS:
        raise pytest.UsageError(
            f"SEGMENT_WORKER_TEST_BACKEND={chosen!r}: expected one of {', '.join(BACKENDS)}")
    if chosen == "testcontainers" and importlib.util.find_spec("testcontainers") is None:
        raise pytest.UsageError(
            "SEGMENT_WORKER_TEST_BACKEND=testcontainers needs the testcontainers package "
            "(pip install -e '.[dev]', or pip install testcontainers) and a Docker engine")
    return chosen


def _module(name: str) -> Any:
    # testcontainers >= 4.15 keeps these under ``community`` (the old paths warn, an error here).
    try:
        return importlib.import_module(f"testcontainers.community.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"testcontainers.{name}")


class ContainerStack:
    """Kafka, PostgreSQL and Redis containers, each started on first use, all removed by ``stop()``."""

    def __init__(self) -> None:
        self._started: dict[str, Any] = {}
        self._lock = threading.Lock()
        docker = importlib.import_module("docker")  # testcontainers' own dependency
        try:
            docker.from_env().close()  # from_env asks the engine for its API version
        except docker.errors.DockerException as exc:
            # Once for the session, instead of the same connection error in every test.
            pytest.exit(f"SEGMENT_WORKER_TEST_BACKEND=testcontainers: no Docker engine answers ({exc}); "
                        "start one (or set DOCKER_HOST), or unset the variable to use the embedded servers",
                        returncode=4)

    def _start(self, name: str) -> Any:
        with self._lock:
            if name not in self._started:
                if name == "kafka":
                    container = _module("kafka").KafkaContainer(KAFKA_IMAGE).with_kraft()
                    container.start(timeout=120)
                elif name == "postgres":
                    container = _module("postgres").PostgresContainer(POSTGRES_IMAGE, driver=None)
                    container.start()
                else:
                    container = _module("redis").RedisContainer(REDIS_IMAGE)
                    container.start()
                self._started[name] = container
            return self._started[name]

    def start_kafka(self) -> str:
        """The broker's bootstrap address (``host:port`` mapped on the Docker host)."""
        return str(self._start("kafka").get_bootstrap_server())

    def start_postgres(self) -> str:
        """A superuser DSN (asyncpg form: no driver in the scheme)."""
        return str(self._start("postgres").get_connection_url())

    def start_redis(self) -> str:
        """``redis://host:port/0``."""
        c = self._start("redis")
        return f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"

    def stop(self) -> None:
        """Remove every container started."""
        with self._lock:
            for container in self._started.values():
                container.stop()
            self._started.clear()
