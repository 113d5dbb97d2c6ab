"""``connect_redis``: the one factory of Redis clients picks a cluster client for a cluster node
(``auto`` asks the node), a plain one otherwise, says clearly what is wrong, and bounds its
connections."""

from __future__ import annotations

import asyncio
import time
import uuid

import pydantic
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from helpers.redis_cluster import RedisClusterProcesses
from segment_worker.config import Settings
from segment_worker.errors import ConfigError, StoreUnavailable
from segment_worker.stores.redis_client import CLUSTER_RETRIES, connect_redis


async def test_auto_detects_a_cluster_node_and_a_plain_redis(
    redis_cluster: RedisClusterProcesses, redis_url: str
) -> None:
    cluster = await connect_redis(Settings(redis_url=redis_cluster.url), max_connections=2)
    plain = await connect_redis(Settings(redis_url=redis_url), max_connections=2)
    try:
        assert isinstance(cluster, RedisCluster) and isinstance(plain, Redis)
        # The cluster client found every master from one node's URL, and retries as configured.
        assert await cluster.ping()
        assert sorted(n.port for n in cluster.get_primaries()) == sorted(n.port for n in redis_cluster.nodes)
        assert cluster.retry.get_retries() == CLUSTER_RETRIES
        assert await plain.ping()
    finally:
        await cluster.aclose()
        await plain.aclose()


async def test_true_and_false_force_the_client_without_asking(redis_cluster: RedisClusterProcesses) -> None:
    plain = Settings(redis_url=redis_cluster.url, redis_cluster="false")
    forced = await connect_redis(plain, max_connections=1)
    try:
        assert type(forced) is Redis
    finally:
        await forced.aclose()
    # "true" opens no connection yet: a cluster client even for an address nobody listens on.
    lazy = await connect_redis(Settings(redis_url="redis://127.0.0.1:1/0", redis_cluster="true"),
                               max_connections=1)
    assert isinstance(lazy, RedisCluster)
    await lazy.aclose()


async def test_clear_errors() -> None:
    with pytest.raises(StoreUnavailable, match="SEGMENT_WORKER_REDIS_CLUSTER to true or false"):
        await connect_redis(Settings(redis_url="redis://127.0.0.1:1/0"), max_connections=1)
    with pytest.raises(ConfigError, match="over TCP"):
        await connect_redis(Settings(redis_url="unix:///tmp/x.sock", redis_cluster="true"), max_connections=1)
    with pytest.raises(ConfigError, match="cannot name a Redis Cluster node"):  # db 3
        await connect_redis(Settings(redis_url="redis://h:1/3", redis_cluster="true"), max_connections=1)


def test_the_setting_takes_exactly_the_three_words(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redis_cluster == "auto"
    for word in ("auto", "true", "false"):
        monkeypatch.setenv("SEGMENT_WORKER_REDIS_CLUSTER", word)
        assert Settings().redis_cluster == word
    monkeypatch.setenv("SEGMENT_WORKER_REDIS_CLUSTER", "yes")
    with pytest.raises(pydantic.ValidationError):
        Settings()


async def test_a_plain_client_waits_for_a_free_connection_within_its_budget(redis_url: str) -> None:
    name = f"budget-{uuid.uuid4().hex[:8]}"
    redis = await connect_redis(Settings(redis_url=f"{redis_url}?client_name={name}"), max_connections=2)
    observer = Redis.from_url(redis_url)
    try:
        t0 = time.perf_counter()
        # Six commands that each hold a connection for 0.3 s, through two connections: three rounds.
        calls = asyncio.gather(*(redis.blpop([f"sw:{{{name}}}:{i}"], timeout=0.3) for i in range(6)))
        seen = 0
        while not calls.done():
            clients = await observer.client_list()
            seen = max(seen, sum(1 for c in clients if c.get("name") == name))
            await asyncio.sleep(0.05)
        await calls
        elapsed = time.perf_counter() - t0
    finally:
        await redis.aclose()
        await observer.aclose()
    assert seen == 2  # never more than the budget, and the budget was used
    assert elapsed >= 0.85, elapsed
