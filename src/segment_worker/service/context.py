"""What every management operation needs: the PostgreSQL pool, Redis, settings and a publisher
for input events (``PATCH /customers/{id}``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer

from .. import budget
from ..config import Settings
from ..kafka import create_producer, kafka_errors
from ..stores import postgres as pg
from ..stores.redis_client import RedisClient, connect_redis


class EventPublisher(Protocol):
    """Publishes input events; returns once the broker acknowledged every record (acks=all)."""

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    async def close(self) -> None: ...


class KafkaPublisher:
    """A producer started on first use, so the API starts (and serves reads) without Kafka."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = create_producer(self._bootstrap, client_id="segment-worker-api")
                try:
                    with kafka_errors("start producer", bootstrap=self._bootstrap):
                        await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send ``(key, value)`` records to ``topic`` and wait for every acknowledgement."""
        producer = await self._started()
        with kafka_errors("publish input events", topic=topic):
            futures = [await producer.send(topic, value=value, key=key) for key, value in records]
            await asyncio.gather(*futures)

    async def close(self) -> None:
        """Stop the producer if it was started."""
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


class ServiceContext:
    """Connections shared by the operations of one process (the API app, the CLI, tests)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: RedisClient,
        settings: Settings,
        publisher: EventPublisher | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.settings = settings
        self.publisher: EventPublisher = publisher or KafkaPublisher(settings.kafka_bootstrap)
        # Told, after each committed unit, the transitions it wrote: (kind, cause kind) → count.
        self.transition_sinks: list[Callable[[Mapping[tuple[str, str], int]], None]] = []

    @classmethod
    async def open(cls, settings: Settings) -> ServiceContext:
        """Connect to the configured PostgreSQL and Redis (a Redis Cluster too), within the API's
        connection budget (``budget.API``)."""
        pool = await pg.create_pool(settings.require_database_url(), min_size=1, max_size=budget.API_PG_POOL)
        try:
            redis = await connect_redis(settings, max_connections=budget.API_REDIS)
        except BaseException:
            await pool.close()
            raise
        return cls(pool=pool, redis=redis, settings=settings)

    async def close(self) -> None:
        """Release every connection."""
        await self.publisher.close()
        await self.redis.aclose()
        await self.pool.close()
