"""Databases of their own for tests: created on a PostgreSQL server, migrated or not, dropped after.
The session's database, the empty one migrations are tested on, the Redis Cluster tests' and the
connection-budget test's (every backend on it is one of its workers') all come from here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from segment_worker.bench.servers import with_database
from segment_worker.migrate import available, migrate


@asynccontextmanager
async def private_database(server_dsn: str, prefix: str, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new database ``<prefix>_<random>`` on ``server_dsn``'s server (migrated unless told
    otherwise): its DSN, and the database dropped on exit, connections and all."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    try:
        if migrated:
            await migrate(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def migrate_below(conn: asyncpg.Connection, version: int) -> None:
    """Apply the migrations before ``version`` to an empty database, recorded as ``migrate`` would,
    so that a test can write what older code wrote and then run ``migrate_conn`` past it."""
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for m in available():
        if m.version < version:
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", m.version, m.name)
