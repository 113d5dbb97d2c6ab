"""Servers of the fault suite's own (not the session's shared ones, which other tests use): the
scenarios here terminate, restart and empty them. Each restart keeps the server's port, so the
running workers reconnect to the same address, as they would to a restarted service."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from unittest import mock

import asyncpg

from segment_worker import embedded
from segment_worker.config import Settings
from segment_worker.embedded import EmbeddedStack
from segment_worker.migrate import migrate


class OwnServers:
    """An ``EmbeddedStack`` (Tansu, PostgreSQL, Redis) with restarts on the same ports."""

    def __init__(self) -> None:
        self.stack = EmbeddedStack()

    def start(self) -> OwnServers:
        self.stack.start()
        return self

    def stop(self) -> None:
        self.stack.stop()

    def _port(self, name: str) -> int:
        return self.stack._server(name).port

    @contextlib.contextmanager
    def _same_port(self, port: int) -> Iterator[None]:
        # EmbeddedStack picks a free port at each start; a restart must come back on the old one.
        with mock.patch.object(embedded, "free_port", lambda: port):
            yield

    def _kill(self, name: str, sig: signal.Signals, limit_s: float = 30.0) -> int:
        server = self.stack._server(name)
        server.proc.send_signal(sig)
        deadline = time.monotonic() + limit_s
        while server.proc.poll() is None:
            assert time.monotonic() < deadline, f"{name} did not exit on {sig.name}"
            time.sleep(0.05)
        return server.port

    def restart_postgres_immediate(self) -> None:
        """``pg_ctl stop -m immediate`` (SIGQUIT to the postmaster: every backend dies, no
        checkpoint) and start again on the same data directory: crash recovery at start."""
        port = self._kill("postgres", signal.SIGQUIT)
        with self._same_port(port):
            self.stack.start_postgres()

    def restart_redis_empty(self) -> None:
        """kill -9 and start again: no persistence, so it comes back empty."""
        port = self._kill("redis", signal.SIGKILL)
        with self._same_port(port):
            self.stack.start_redis()

    def restart_broker(self) -> None:
        """kill -9 Tansu and start it again: its log is in memory only, so every topic is gone
        and the logs start again at offset 0."""
        port = self._kill("kafka", signal.SIGKILL)
        with self._same_port(port):
            self.stack.start_kafka()

    async def settings(self, name: str) -> Settings:
        """Settings on these servers, with a fresh migrated database and unique topics/group."""
        db = f"sw_fault_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(self.stack.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{db}"')
        finally:
            await admin.close()
        dsn = self.stack.database_url.rsplit("/", 1)[0] + f"/{db}"
        await migrate(dsn)
        tag = uuid.uuid4().hex[:8]
        return Settings(
            kafka_bootstrap=self.stack.kafka_bootstrap,
            database_url=dsn,
            redis_url=self.stack.redis_url,
            topic_events=f"customer-events-{name}-{tag}",
            topic_membership=f"segment-membership-events-{name}-{tag}",
            topic_dlq=f"customer-events.dlq-{name}-{tag}",
            consumer_group=f"segment-worker-{name}-{tag}",
            input_partitions=4,
        )
