"""Session fixtures: real servers. TEMPORARY minimal version (env vars only); the embedded-stack
version replaces it keeping the same fixture names: ``pg_server_dsn``, ``pg_dsn`` (a fresh
migrated database per session), ``redis_url``, ``kafka_bootstrap``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from segment_worker.migrate import migrate


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    return os.environ.get("SEGMENT_WORKER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    name = f"sw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = pg_server_dsn.rsplit("/", 1)[0] + "/" + name
    await migrate(dsn)
    yield dsn
    admin = await asyncpg.connect(pg_server_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("SEGMENT_WORKER_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ.get("SEGMENT_WORKER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
