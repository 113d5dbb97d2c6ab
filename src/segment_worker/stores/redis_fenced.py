"""Fenced Redis writes: a worker that lost its partitions cannot undo the new owner's writes.

Every write of committed Redis ops goes through one Lua script per workspace (all of a
workspace's keys share the ``{<ws>}`` slot, so this is legal in a Redis Cluster too; Redis 6.2's
EVAL, no Redis 7 functions). The script carries the PostgreSQL epoch of each partition whose ops
it applies and the workspace's ``sw:{<ws>}:epochs`` hash remembers the newest epoch that wrote:

- a stored epoch newer than the caller's → nothing is written (``FencedError``): a zombie that read
  its pending ops, froze, and woke after the new owner replayed and moved on is refused;
- otherwise the epochs are raised and the writes applied, atomically with the check.

The script also refuses, before writing anything, when a key holds another type than a set (a
key written by something outside the project): the key is reported (log naming it, the client's
``on_wrong_type`` hook → ``segment_worker_errors{stage="redis_wrongtype"}``), deleted, and the
workspace's rebuild marker removed, so the self-healing check rebuilds the key from PostgreSQL
(``stores.redisheal``); then the write is applied. A wrong-type key never stalls a partition.

A call carries at most ``CHUNK`` members (one script never blocks Redis for long); calls are
pipelined like the plain writes of ``stores.redis``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ClusterError, TryAgainError

from . import RedisOp
from .errors import FencedError
from .keys import epochs_key, key_workspace, marker_key
from .redis import _FLUSH_MEMBERS, CHUNK, coalesce_ops
from .redis_client import RedisClient

log = logging.getLogger(__name__)

# KEYS[1] = epochs hash, KEYS[2..] = sets. ARGV: n, then n × (partition, epoch), then one argument
# for all the sets: "delete flag,count to add,count to remove" per set, joined by ";", then the
# members, adds then removes per set. One argument for the sets' counts instead of three per set,
# and the members sent as bytes: redis-py encodes each argument in Python, and a batch's sets mostly
# get one member each — the client's CPU per apply −38% (250 ops) and −26% (4,400), Redis's the same
# (docs/PERFORMANCE.md, "Fenced Redis writes with one argument for the sets' counts"). Answers {1}
# applied, {0, partition, stored epoch} fenced, {-1, key, type} wrong type.
_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[2 + 2 * i])
  if cur and tonumber(cur) > tonumber(ARGV[3 + 2 * i]) then
    return {0, ARGV[2 + 2 * i], cur}
  end
end
for k = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'set' and t ~= 'none' then return {-1, KEYS[k], t} end
end
for i = 0, n - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[2 + 2 * i])
  if not cur or tonumber(cur) < tonumber(ARGV[3 + 2 * i]) then
    redis.call('HSET', KEYS[1], ARGV[2 + 2 * i], ARGV[3 + 2 * i])
  end
end
local counts, pos, k = ARGV[2 + 2 * n], 3 + 2 * n, 1
for del, nadd, nrem in string.gmatch(counts, '(%d),(%d+),(%d+)') do
  k = k + 1
  if del == '1' then redis.call('DEL', KEYS[k]) end
  for _, verb in ipairs({{'SADD', tonumber(nadd)}, {'SREM', tonumber(nrem)}}) do
    local last = pos + verb[2] - 1
    while pos <= last do
      local upto = math.min(pos + 999, last)
      redis.call(verb[1], KEYS[k], unpack(ARGV, pos, upto))
      pos = upto + 1
    end
  end
end
return {1}
"""

# Per Redis client: called with the key when a wrong-type key was found and repaired (metrics).
_WRONG_TYPE_HOOKS: weakref.WeakKeyDictionary[Any, Callable[[str], None]] = weakref.WeakKeyDictionary()


def on_wrong_type(redis: RedisClient, hook: Callable[[str], None]) -> None:
    """Call ``hook(key)`` whenever a fenced apply through ``redis`` repairs a wrong-type key."""
    _WRONG_TYPE_HOOKS[redis] = hook


@dataclass(slots=True)
class _Call:
    """One script call: a workspace's epochs and a chunk of its writes."""

    workspace: str
    epochs: Mapping[int, int]
    keys: list[str] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)  # per set: "delete flag,adds,removes"
    args: list[bytes] = field(default_factory=list)  # the sets' members (UTF-8), in order
    members: int = 0

    def argv(self) -> list[str | int | bytes]:
        head: list[str | int | bytes] = [len(self.epochs)]
        for p, e in sorted(self.epochs.items()):
            head += [p, e]
        return [*head, ";".join(self.counts), *self.args]


def _calls(ops: Iterable[RedisOp], epochs: Mapping[int, int]) -> list[_Call]:
    ops = list(ops)
    parts_of_key: dict[str, set[int]] = {}
    for op in ops:
        parts_of_key.setdefault(op.key, set()).add(op.partition)
    ws_of = {key: key_workspace(key) or "" for key in parts_of_key}
    parts_of: dict[str, set[int]] = {}
    for key, parts in parts_of_key.items():
        parts_of.setdefault(ws_of[key], set()).update(parts)
    calls: list[_Call] = []
    current: dict[str, _Call] = {}
    for key, kw in coalesce_ops(ops).items():
        ws = ws_of[key]
        delete = kw.delete
        members = kw.add + kw.remove  # the adds, then the removes (disjoint: the last op per member)
        n_add, at = len(kw.add), 0
        call = current.get(ws)
        # The common case, a set that fits the current call, without the chunking loop's slicing
        # and bounds: 1.57 → 1.27 ms of client CPU per apply of 250 ops (3 + 3, median of 7 × 30).
        if call is not None and call.members + len(members) <= CHUNK:
            call.keys.append(key)
            call.counts.append(f"{1 if delete else 0},{n_add},{len(kw.remove)}")
            call.args += [m.encode() for m in members]
            call.members += len(members)
            continue
        while True:
            call = current.get(ws)
            if call is None or call.members >= CHUNK:
                call = current[ws] = _Call(ws, {p: epochs.get(p, 0) for p in sorted(parts_of[ws])})
                calls.append(call)
            upto = min(len(members), at + max(1, CHUNK - call.members))
            adds = max(0, min(upto, n_add) - at)
            call.keys.append(key)
            call.counts.append(f"{1 if delete else 0},{adds},{upto - at - adds}")
            call.args += [m.encode() for m in members[at:upto]]
            call.members += upto - at
            delete, at = False, upto
            if at >= len(members):
                break
    return calls


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _run(redis: RedisClient, calls: list[_Call]) -> list[Any]:
    results: list[Any] = []
    pipe = redis.pipeline(transaction=False)
    pending = 0
    for call in calls:
        pipe.eval(_SCRIPT, len(call.keys) + 1, epochs_key(call.workspace), *call.keys, *call.argv())
        pending += call.members
        if pending >= _FLUSH_MEMBERS:
            results += await pipe.execute()
            pending = 0
    results += await pipe.execute()
    return results


# A Redis Cluster migrating a workspace's slot answers TRYAGAIN to a multi-key script while its keys
# are split between the two nodes (redis-py retries ~0.4 s, then "TTL exhausted"): wait it out here
# (~6 s in all) rather than fail the batch. Re-running calls that were applied is harmless: a
# member belongs to one partition, whose lock the caller holds.
_CLUSTER_RETRY_S = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


async def _run_retrying(redis: RedisClient, calls: list[_Call]) -> list[Any]:
    for delay in (*_CLUSTER_RETRY_S, None):
        try:
            return await _run(redis, calls)
        except (ClusterError, TryAgainError) as exc:
            if delay is None:
                raise
            log.info("fenced Redis writes retried in %.1f s (a slot moving?): %s", delay, exc)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def apply_ops_fenced(redis: RedisClient, ops: Iterable[RedisOp], epochs: Mapping[int, int]) -> int:
    """Apply committed ops (coalesced as ``stores.redis.apply_ops`` does) on condition that no newer
    owner epoch than ``epochs`` (partition → epoch, from PostgreSQL) wrote the same workspace.
    Raises ``FencedError`` when refused. Answers the number of script calls."""
    calls = _calls(ops, epochs)
    todo, sent = calls, 0
    for _ in range(3):  # a wrong-type key is deleted, then its calls run again
        results = await _run_retrying(redis, todo)
        sent += len(todo)
        again: list[_Call] = []
        for call, res in zip(todo, results, strict=True):
            status = int(res[0])
            if status == 0:
                p, stored = int(_text(res[1])), int(_text(res[2]))
                raise FencedError({p: call.epochs[p]}, {p: stored})
            if status == -1:
                await _repair_wrong_type(redis, _text(res[1]), _text(res[2]))
                again.append(call)
        if not again:
            return sent
        todo = again
    raise RuntimeError(f"Redis keys keep changing type under us: {[c.keys for c in todo]}")


async def _repair_wrong_type(redis: RedisClient, key: str, found: str) -> None:
    log.error(
        "Redis key %s holds a %s, not a set (written by something outside segment-worker?);"
        " deleting it: the workspace's sets are rebuilt from PostgreSQL", key, found,
    )
    ws = key_workspace(key)
    pipe = redis.pipeline(transaction=False)
    pipe.delete(key)
    if ws is not None:
        pipe.delete(marker_key(ws))  # the self-healing check rebuilds the workspace
    await pipe.execute()
    hook = _WRONG_TYPE_HOOKS.get(redis)
    if hook is not None:
        hook(key)
