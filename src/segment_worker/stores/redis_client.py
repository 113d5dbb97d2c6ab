"""Opening Redis: one factory for every client the project makes (worker lanes, the API and
``dev``, ``reconcile``, the bench), a plain Redis or a Redis Cluster (``SEGMENT_WORKER_REDIS_CLUSTER``).

``auto`` asks the node the URL names (``INFO cluster``: ``cluster_enabled:1``) on a short-lived
plain connection, so it needs Redis reachable when the process starts; ``true``/``false`` skip the
question. Both clients are bounded by ``max_connections`` (``budget``): a plain client waits for a
free connection (``BlockingConnectionPool``); a cluster client holds at most that many per node.

On a cluster, every key carries its workspace's hash tag (``sw:{<ws>}:…``), so every multi-key
command (SUNIONSTORE/SDIFFSTORE of audiences, a MULTI/EXEC) stays within one slot. redis-py's
cluster client follows MOVED and ASK redirections itself (up to 16 per command; a resharding or a
failover moves slots), and retries connection errors, timeouts and CLUSTER DOWN after refreshing
the slot map, with the backoff below: long enough to ride out a failover (the cluster's
``cluster-node-timeout`` plus an election). Past that the error reaches the caller, which treats it
as a Redis outage: the worker keeps its committed ops pending and replays them (``stores.unit``).
"""

from __future__ import annotations

from typing import Literal, TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException, RedisError

from ..config import Settings
from ..errors import ConfigError, StoreUnavailable

RedisClient: TypeAlias = Redis | RedisCluster
ClusterMode = Literal["auto", "true", "false"]

# A plain client's caller waits this long for a free connection before failing (the API under a
# burst; a worker lane never waits: it uses one connection at a time).
POOL_WAIT_SECONDS = 10.0
# Cluster retries: 12 attempts, backoff 50 ms doubling (with jitter) to 2 s: ~15 s in all.
CLUSTER_RETRIES = 12
CLUSTER_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=2.0)
_CONNECT_TIMEOUT = 5.0


def is_cluster(redis: RedisClient) -> bool:
    """Whether ``redis`` is a Redis Cluster client."""
    return isinstance(redis, RedisCluster)


async def detect_cluster(url: str) -> bool:
    """Whether the node ``url`` names runs in cluster mode (``INFO cluster``), asked on a plain
    connection of its own. ``StoreUnavailable`` when it cannot be reached."""
    probe = Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_CONNECT_TIMEOUT)
    try:
        info = await probe.info("cluster")
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(
            f"cannot reach Redis to detect a Redis Cluster: {exc} (set SEGMENT_WORKER_REDIS_CLUSTER to"
            " true or false to skip the detection)",
            context={"operation": "detect redis cluster"},
        ) from exc
    finally:
        await probe.aclose()
    return str(info.get("cluster_enabled", 0)) == "1"


async def connect_redis(settings: Settings, *, max_connections: int) -> RedisClient:
    """A client of the configured Redis (``SEGMENT_WORKER_REDIS_URL``): a ``RedisCluster`` when
    ``SEGMENT_WORKER_REDIS_CLUSTER`` says so (or, ``auto``, when the node is cluster-enabled), else a
    plain ``Redis``; at most ``max_connections`` connections (per node on a cluster). Connections
    open lazily, on first use (except the ``auto`` detection's)."""
    url = settings.require_redis_url()
    mode: ClusterMode = settings.redis_cluster
    cluster = mode == "true" or (mode == "auto" and await detect_cluster(url))
    if not cluster:
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                               timeout=POOL_WAIT_SECONDS)
        return Redis.from_pool(pool)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"a Redis Cluster is reached over TCP (redis:// or rediss://), not {parts.scheme}://",
            context={"setting": "SEGMENT_WORKER_REDIS_URL"},
        )
    try:
        return RedisCluster.from_url(
            url, max_connections=max_connections, retry=Retry(CLUSTER_BACKOFF, CLUSTER_RETRIES)
        )
    except RedisClusterException as exc:  # e.g. a database other than 0: a cluster has only db 0
        raise ConfigError(f"SEGMENT_WORKER_REDIS_URL cannot name a Redis Cluster node: {exc}",
                          context={"setting": "SEGMENT_WORKER_REDIS_URL"}) from exc


__all__ = ["ClusterMode", "RedisClient", "connect_redis", "detect_cluster", "is_cluster"]
