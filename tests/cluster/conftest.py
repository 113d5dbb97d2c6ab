"""Redis Cluster tests: a real cluster of three masters (``helpers.redis_cluster``), started once per
session when a test asks for it, and a PostgreSQL database of their own (so ``reconcile`` over all
workspaces sees only theirs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from helpers.databases import private_database
from helpers.redis_cluster import RedisClusterProcesses
from segment_worker.config import Settings
from segment_worker.service.context import ServiceContext


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """Three cluster-enabled redis-server processes, slots spread evenly, state ok."""
    cluster = RedisClusterProcesses(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterProcesses) -> str:
    """``redis://`` of one node of the cluster (a client discovers the others)."""
    return redis_cluster.url


@pytest.fixture(scope="session")
async def cluster_pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for the cluster tests, dropped at the end of the session."""
    async with private_database(pg_server_dsn, "sw_cluster") as dsn:
        yield dsn


@pytest.fixture
def cluster_settings(
    kafka_bootstrap: str, cluster_pg_dsn: str, redis_cluster_url: str, unique_name: Callable[[str], str]
) -> Settings:
    """A worker's settings on the cluster (detected: ``redis_cluster`` stays ``auto``)."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=cluster_pg_dsn,
        redis_url=redis_cluster_url,
        topic_events=unique_name("customer-events"),
        topic_membership=unique_name("segment-membership-events"),
        topic_dlq=unique_name("customer-events.dlq"),
        consumer_group=unique_name("segment-worker"),
        input_partitions=4,
        tick_seconds=1,
    )


@pytest.fixture
async def cluster_ctx(cluster_pg_dsn: str, redis_cluster_url: str) -> AsyncIterator[ServiceContext]:
    """The service layer (as the API and ``dev`` open it) on the cluster."""
    ctx = await ServiceContext.open(
        Settings(database_url=cluster_pg_dsn, redis_url=redis_cluster_url, input_partitions=4)
    )
    yield ctx
    await ctx.close()

