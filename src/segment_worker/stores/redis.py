"""Redis side of the stores: key names, applying pending ops grouped per key, reading sets.

Only Redis 6.2 commands are used (SADD/SREM/DEL/SSCAN/SCAN). Redis is derived data: every
write here comes from ops committed with PostgreSQL first (``stores.pg_redisops``).

On a Redis Cluster each command names one key, so it goes to that key's node; a pipeline is split
per node by redis-py (not a transaction: it needs no common slot), and SCAN visits every master.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from . import OpKind, RedisOp
from .keys import audience_key, glob_escape, optout_key, segment_key
from .redis_client import RedisClient

# Members per variadic SADD/SREM: big enough to amortise the round trip, small enough that one
# command never blocks the server for long. A pipeline is sent every _FLUSH_MEMBERS members.
CHUNK = 10_000
_FLUSH_MEMBERS = 200_000


@dataclass(slots=True)
class KeyWrites:
    """The net writes to one key: DEL first (when ``delete``), then SADD ``add``, SREM ``remove``."""

    delete: bool = False
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def coalesce_ops(ops: Iterable[RedisOp]) -> dict[str, KeyWrites]:
    """Fold ops (in commit order) to the last op per key+member; a DEL drops every earlier op on
    its key. Applying the result equals applying ``ops`` one by one."""
    deleted: set[str] = set()
    last: dict[str, dict[str, bool]] = {}
    for op in ops:
        if op.op is OpKind.DEL:
            deleted.add(op.key)
            last[op.key] = {}
        elif op.member is not None:
            last.setdefault(op.key, {})[op.member] = op.op is OpKind.SADD
    out: dict[str, KeyWrites] = {}
    for key, members in last.items():
        kw = KeyWrites(delete=key in deleted)
        for member, present in members.items():
            (kw.add if present else kw.remove).append(member)
        out[key] = kw
    return out


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def apply_writes(redis: RedisClient, writes: dict[str, KeyWrites]) -> int:
    """Send ``writes`` in pipelines (DEL first per key, then variadic SADD/SREM in chunks).
    Answers the number of commands sent."""
    commands = 0
    pending = 0
    pipe = redis.pipeline(transaction=False)
    for key, kw in writes.items():
        if kw.delete:
            pipe.delete(key)
            commands += 1
        for verb, members in ((pipe.sadd, kw.add), (pipe.srem, kw.remove)):
            for chunk in _chunks(members):
                verb(key, *chunk)
                commands += 1
                pending += len(chunk)
                if pending >= _FLUSH_MEMBERS:
                    await pipe.execute()
                    pending = 0
    await pipe.execute()
    return commands


async def apply_ops(redis: RedisClient, ops: Iterable[RedisOp]) -> int:
    """Apply pending ops, coalesced and grouped per key (see ``coalesce_ops``); idempotent, so a
    replay after a partial failure converges. Answers the number of commands sent."""
    return await apply_writes(redis, coalesce_ops(ops))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_set(redis: RedisClient, key: str) -> set[str]:
    """Every member of the set ``key`` (SSCAN: never one long blocking command)."""
    return {_text(m) async for m in redis.sscan_iter(key, count=CHUNK)}


async def scan_keys(redis: RedisClient, pattern: str) -> set[str]:
    """Keys matching a SCAN MATCH ``pattern`` (escape literal parts with ``glob_escape``); on a
    Redis Cluster, of every master (each holds its own slots' keys)."""
    if isinstance(redis, RedisCluster):
        keys = redis.scan_iter(match=pattern, count=1000, target_nodes=RedisCluster.PRIMARIES)
        return {_text(k) async for k in keys}
    return {_text(k) async for k in redis.scan_iter(match=pattern, count=1000)}


__all__ = [
    "CHUNK",
    "KeyWrites",
    "apply_ops",
    "apply_writes",
    "audience_key",
    "coalesce_ops",
    "glob_escape",
    "optout_key",
    "read_set",
    "scan_keys",
    "segment_key",
]
