"""The connection budget: how many PostgreSQL and Redis connections each kind of process opens at
most, in one place, so that a deployment can be sized from a formula (README "Running at scale").

Every client the project makes is bounded by one of these numbers: asyncpg pools wait for a free
connection at their ``max_size``; Redis clients are made by ``stores.redis_client.connect_redis``
with ``max_connections`` (a plain Redis client waits for a free connection, a Redis Cluster client
holds at most that many per node). ``tests/worker/test_connection_budget.py`` measures the worker's
bound with ``pg_stat_activity`` and ``CLIENT LIST``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Budget:
    """Connections one process (or one lane) may hold at once: PostgreSQL, and Redis per node
    (one Redis, or each master of a Redis Cluster)."""

    postgres: int
    redis_per_node: int

    def __mul__(self, n: int) -> Budget:
        return Budget(self.postgres * n, self.redis_per_node * n)


# A worker lane: its pool serves the batch unit of work, the outbox drain, and the gauges and tick
# planning that run beside them (4 is what the batch loop was measured with: the bench's
# throughput did not move above it), plus its own LISTEN connection (``worker.outbox``).
LANE_PG_POOL = 4
LANE_PG_LISTEN = 1
# Every Redis command of a lane runs under the lane's lock (batches, ticks, replaying pending ops
# on assignment), one at a time: one connection per node is all it ever uses. The lanes of a
# process do not share a client: sharing would not lower the bound (each lane still needs its one
# connection at a time) and each lane is a whole worker that opens and closes its own stores.
LANE_REDIS = 1
LANE = Budget(postgres=LANE_PG_POOL + LANE_PG_LISTEN, redis_per_node=LANE_REDIS)

# An API process (also ``dev``'s and the bench's service context): concurrent requests share one
# pool; a request holds one PostgreSQL connection at a time, and Redis mostly while it holds that
# (a unit of work applies its Redis ops before it lets go), plus audiences and /readyz beside.
# redis-py's cluster client raises MaxConnectionsError instead of waiting at its bound, so the
# Redis bound is set above the PostgreSQL one: only a burst of audiences can reach it.
API_PG_POOL = 10
API_REDIS = 16
API = Budget(postgres=API_PG_POOL, redis_per_node=API_REDIS)

# ``segment-worker reconcile``: one key at a time, under the partition locks.
RECONCILE = Budget(postgres=2, redis_per_node=1)


def worker_process(lanes: int) -> Budget:
    """The budget of one ``segment-worker run --lanes N`` process (lanes share nothing)."""
    return LANE * lanes
