"""The servers a benchmark runs on: embedded ones (``segment_worker.embedded``) or those named by
``SEGMENT_WORKER_KAFKA_BOOTSTRAP`` / ``_DATABASE_URL`` / ``_REDIS_URL``, each chosen separately.

The bench never writes into a database it did not create: it makes its own (``sw_bench_<run>_…``)
on the given PostgreSQL server (the role needs CREATEDB) and drops them at the end, so it cannot
disturb live workers (partition ownership lives in the database). An embedded broker is restarted
between measurements (``fresh_kafka``): Tansu keeps every record in memory. A given broker is
kept; the bench uses topics and consumer groups of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from ..embedded import EmbeddedStack
from ..errors import SegmentWorkerError, StoreUnavailable
from ..migrate import migrate

log = logging.getLogger(__name__)


class BenchError(SegmentWorkerError):
    """The benchmark could not run a phase; ``context`` says which and why."""

    code = "bench_failed"
    default_retriable = False


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server (query parameters kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@dataclass(slots=True)
class Servers:
    """Where PostgreSQL, Redis and Kafka are; ``embedded`` says which of them we run ourselves."""

    pg_server_dsn: str
    redis_url: str
    kafka_bootstrap: str | None
    embedded: set[str] = field(default_factory=set)
    pids: dict[str, int] = field(default_factory=dict)
    _stack: EmbeddedStack | None = None
    _kafka_stack: EmbeddedStack | None = None
    _databases: list[str] = field(default_factory=list)

    @classmethod
    async def start(cls, data_dir: Path | None = None) -> Servers:
        """Use the servers the environment names; start the others embedded (Kafka lazily)."""
        pg = os.environ.get("SEGMENT_WORKER_DATABASE_URL") or None
        redis = os.environ.get("SEGMENT_WORKER_REDIS_URL") or None
        kafka = os.environ.get("SEGMENT_WORKER_KAFKA_BOOTSTRAP") or None
        stack = None
        if pg is None or redis is None:
            stack = EmbeddedStack(data_dir, kafka=False, postgres=pg is None, redis=redis is None)
            await stack.astart()
        servers = cls(
            pg_server_dsn=pg or (stack.database_url if stack else ""),
            redis_url=redis or (stack.redis_url if stack else ""),
            kafka_bootstrap=kafka,
            _stack=stack,
        )
        if stack is not None:
            servers.embedded |= {n for n in ("postgres", "redis") if n in stack.pids()}
            servers.pids.update(stack.pids())
        if kafka is None:
            servers.embedded.add("kafka")
        return servers

    @classmethod
    def given(cls, pg_server_dsn: str, redis_url: str, kafka_bootstrap: str) -> Servers:
        """Servers someone else runs (nothing is started or stopped; databases still are ours)."""
        return cls(pg_server_dsn=pg_server_dsn, redis_url=redis_url, kafka_bootstrap=kafka_bootstrap)

    @property
    def data_dir(self) -> Path | None:
        """The embedded servers' directory (logs live under it), if any runs."""
        return self._stack.data_dir if self._stack is not None else None

    async def fresh_kafka(self) -> str:
        """A broker with nothing in it (embedded: restarted); answers its bootstrap address."""
        if "kafka" not in self.embedded:
            assert self.kafka_bootstrap is not None
            return self.kafka_bootstrap
        if self._kafka_stack is not None:
            await self._kafka_stack.astop()
        self._kafka_stack = EmbeddedStack(kafka=True, postgres=False, redis=False)
        await self._kafka_stack.astart()
        self.kafka_bootstrap = self._kafka_stack.kafka_bootstrap
        self.pids["kafka"] = self._kafka_stack.pids()["kafka"]
        return self.kafka_bootstrap

    async def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create (and, without a template, migrate) database ``name``; answers its DSN.

        A template is copied at file level (``CREATE DATABASE … TEMPLATE``): an exact twin of a
        seeded database in seconds. Nobody may be connected to the template meanwhile."""
        admin = await self._admin()
        try:
            clause = f' TEMPLATE "{template}"' if template else ""
            for attempt in range(50):
                try:
                    await admin.execute(f'CREATE DATABASE "{name}"{clause}')
                    break
                except asyncpg.ObjectInUseError:
                    # Autovacuum (or a pool closing) may still hold the template for a moment.
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise BenchError(
                "the bench creates its own databases: the PostgreSQL role needs CREATEDB",
                context={"database": name},
            ) from exc
        finally:
            await admin.close()
        self._databases.append(name)
        dsn = with_database(self.pg_server_dsn, name)
        if template is None:
            await migrate(dsn)
        return dsn

    async def drop_databases(self) -> None:
        """Drop every database this run created."""
        if not self._databases:
            return
        admin = await self._admin()
        try:
            for name in reversed(self._databases):
                with contextlib.suppress(asyncpg.PostgresError):
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        self._databases.clear()

    async def stop(self) -> None:
        """Stop whatever we started (embedded data directories are deleted)."""
        if self._kafka_stack is not None:
            await self._kafka_stack.astop()
            self._kafka_stack = None
        if self._stack is not None:
            await self._stack.astop()
            self._stack = None

    async def _admin(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(self.pg_server_dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}", context={"operation": "bench"}) from exc
        return conn
