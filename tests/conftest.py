"""Session fixtures: real servers, never mocks.

Each server comes from its ``SEGMENT_WORKER_*`` variable when set (``_KAFKA_BOOTSTRAP``,
``_DATABASE_URL``, ``_REDIS_URL``), otherwise from one embedded stack per test session
(``segment_worker.embedded``) that starts only the servers some test asks for, on first use — or,
with ``SEGMENT_WORKER_TEST_BACKEND=testcontainers``, from Docker containers started the same way
(``helpers/containers.py``: Apache Kafka in KRaft mode, PostgreSQL, Redis).

Isolation, since several runs may share servers: ``pg_dsn`` is a database of its own, created
and migrated for the session and dropped at its end; Redis is shared as given (an embedded server
is private, DB 0), so every test scopes its keys with a unique workspace id (``workspace_id``
fixture: all our keys are ``sw:{<ws>}:…``) and never flushes; Kafka topics and consumer groups
get unique names (``unique_name``, ``unique_settings``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

import pytest

from helpers.containers import ContainerStack, backend
from helpers.databases import private_database
from segment_worker.config import Settings
from segment_worker.embedded import EmbeddedStack


class ServerStack(Protocol):
    """What the server fixtures need of a stack (``EmbeddedStack``, ``ContainerStack``)."""

    def start_kafka(self) -> str: ...
    def start_postgres(self) -> str: ...
    def start_redis(self) -> str: ...


def pytest_configure(config: pytest.Config) -> None:
    backend()  # an unknown SEGMENT_WORKER_TEST_BACKEND, or testcontainers missing: refused at once


def _from_env(name: str) -> str | None:
    return os.environ.get(f"SEGMENT_WORKER_{name}") or None


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[EmbeddedStack]:
    """The session's embedded servers; none runs until a fixture starts it."""
    stack = EmbeddedStack()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def server_stack(request: pytest.FixtureRequest) -> Iterator[ServerStack]:
    """Where a server no ``SEGMENT_WORKER_*`` variable names comes from: the embedded stack, or
    containers with ``SEGMENT_WORKER_TEST_BACKEND=testcontainers``."""
    if backend() == "embedded":
        yield request.getfixturevalue("embedded_stack")
        return
    containers = ContainerStack()
    yield containers
    containers.stop()


@pytest.fixture(scope="session")
def pg_server_dsn(server_stack: ServerStack) -> str:
    """A PostgreSQL server's DSN with superuser rights (to create databases)."""
    return _from_env("DATABASE_URL") or server_stack.start_postgres()


@pytest.fixture(scope="session")
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this session, dropped at its end."""
    async with private_database(pg_server_dsn, "sw_test") as dsn:
        yield dsn


@pytest.fixture
async def empty_database(pg_server_dsn: str) -> AsyncIterator[str]:
    """A new database with no schema (not migrated) for one test, dropped after it."""
    async with private_database(pg_server_dsn, "sw_empty", migrated=False) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_url(server_stack: ServerStack) -> str:
    """A Redis URL. Shared: scope every key by a unique workspace id, never FLUSHDB."""
    return _from_env("REDIS_URL") or server_stack.start_redis()


@pytest.fixture(scope="session")
def kafka_bootstrap(server_stack: ServerStack) -> str:
    """Kafka bootstrap servers. Shared: use topics and groups named by ``unique_name``."""
    return _from_env("KAFKA_BOOTSTRAP") or server_stack.start_kafka()


@pytest.fixture(scope="session")
def unique_name() -> Callable[[str], str]:
    """``unique_name("topic")`` → ``"topic-3f2a…"``: names no other test or run uses."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def workspace_id(unique_name: Callable[[str], str]) -> str:
    """A workspace id of this test alone (so its Redis keys and rows collide with nobody's)."""
    return unique_name("ws")


@pytest.fixture
def unique_settings(
    kafka_bootstrap: str, pg_dsn: str, redis_url: str, unique_name: Callable[[str], str]
) -> Settings:
    """Settings for one test: the session's servers (all three start), with topics and a
    consumer group of its own. Override fields with ``unique_settings.model_copy(update=…)``."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=pg_dsn,
        redis_url=redis_url,
        topic_events=unique_name("customer-events"),
        topic_membership=unique_name("segment-membership-events"),
        topic_dlq=unique_name("customer-events.dlq"),
        consumer_group=unique_name("segment-worker"),
        input_partitions=4,
    )
