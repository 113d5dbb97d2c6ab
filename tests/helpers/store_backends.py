"""The store contract's two backends (``tests/stores/test_store_contract.py``).

Production has no store interface: every writer runs ``stores.unit.partition_unit`` and calls the
``stores.postgres`` functions inside it, because a worker computes *inside* its unit (records are
loaded and evaluated under the partition locks) — see docs/DESIGN.md "Store seam". These classes
keep one behavioural contract for those functions anyway:

- ``PgRedisStore`` runs exactly the calls production runs (``partition_unit`` + ``pg.*``);
- ``MemoryStore`` is a reference model of the same rules (seq continuity, fencing, counts, outbox
  cursor, opt-out set), built on the same pure validation (``stores.plan_transitions``).

``MemoryStore`` is not thread-safe; ``commit`` is atomic because it validates everything before it
changes anything, and never awaits in between.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import asyncpg
from redis.asyncio import Redis

from segment_worker.state import CustomerKey, CustomerRecord, CustomerState, Membership, Transition
from segment_worker.stores import OptOutChange, TransitionPlan, TransitionRow, plan_transitions
from segment_worker.stores import postgres as pg
from segment_worker.stores.errors import FencedError, MembershipConflictError
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.stores.redis import read_set
from segment_worker.stores.unit import partition_unit


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one unit of work writes for a set of partitions (a worker batch, a tick, …)."""

    partitions: Sequence[int]
    states: Sequence[CustomerState] = ()
    transitions: Sequence[Transition] = ()
    optouts: Sequence[OptOutChange] = ()

    def check_partitions(self) -> None:
        """Raise ValueError when the batch writes a partition it does not lock."""
        locked = set(self.partitions)
        written = (
            {s.partition for s in self.states}
            | {t.partition for t in self.transitions}
            | {o.partition for o in self.optouts}
        )
        if not written <= locked:
            raise ValueError(f"batch writes partitions {sorted(written - locked)} it does not lock")


class SegmentStore(Protocol):
    """The customer / membership / outbox operations a membership writer needs, as one object.

    ``commit`` is one unit of work: under the partitions' locks, fenced by ``fence`` (partition →
    epoch from ``claim_partitions``) when given, it stores states, membership changes, transitions
    (outbox) and opt-out changes atomically, then applies the Redis side. Nothing is written when
    it raises.
    """

    async def claim_partitions(self, partitions: Sequence[int], owner: str) -> dict[int, int]:
        """Take ownership of ``partitions``; answer each one's new epoch (older epochs are fenced)."""
        ...

    async def load_records(self, keys: Sequence[CustomerKey]) -> dict[CustomerKey, CustomerRecord]:
        """State and every membership row of each key (state None for a customer never seen)."""
        ...

    async def commit(self, batch: Batch, *, fence: Mapping[int, int] | None = None) -> None:
        """Store ``batch`` in one unit of work (see the class docstring)."""
        ...

    async def fetch_unsent(self, partitions: Sequence[int], limit: int) -> list[TransitionRow]:
        """Outbox rows of ``partitions`` past their partition's sent cursor, in id order."""
        ...

    async def mark_sent(self, max_id_per_partition: Mapping[int, int]) -> None:
        """Every outbox row of each partition up to that id was sent: move the partition's cursor
        there (a cursor never moves back)."""
        ...

    async def member_count(self, segment_id: UUID) -> int:
        """Current number of members of a segment."""
        ...

    async def redis_members(self, key: str) -> set[str]:
        """The members of the Redis set ``key`` (what campaign senders read)."""
        ...


class PgRedisStore:
    """``SegmentStore`` over PostgreSQL and Redis: each ``commit`` is one ``partition_unit``."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self._pool = pool
        self._redis = redis

    async def claim_partitions(self, partitions: Sequence[int], owner: str) -> dict[int, int]:
        """See ``SegmentStore.claim_partitions``."""
        async with self._pool.acquire() as conn:
            return await pg.claim_partitions(conn, partitions, owner)

    async def load_records(self, keys: Sequence[CustomerKey]) -> dict[CustomerKey, CustomerRecord]:
        """See ``SegmentStore.load_records``."""
        async with self._pool.acquire() as conn:
            return await pg.load_records(conn, keys)

    async def commit(self, batch: Batch, *, fence: Mapping[int, int] | None = None) -> None:
        """See ``SegmentStore.commit``."""
        batch.check_partitions()
        async with partition_unit(self._pool, self._redis, batch.partitions, fence=fence) as u:
            await pg.save_states(u.conn, batch.states)
            await u.write_transitions(batch.transitions)
            await pg.write_optout(u.conn, batch.optouts)

    async def fetch_unsent(self, partitions: Sequence[int], limit: int) -> list[TransitionRow]:
        """See ``SegmentStore.fetch_unsent``."""
        async with self._pool.acquire() as conn:
            return await pg.fetch_unsent(conn, partitions, limit)

    async def mark_sent(self, max_id_per_partition: Mapping[int, int]) -> None:
        """See ``SegmentStore.mark_sent``."""
        async with self._pool.acquire() as conn:
            await pg.mark_sent(conn, max_id_per_partition)

    async def member_count(self, segment_id: UUID) -> int:
        """See ``SegmentStore.member_count``."""
        async with self._pool.acquire() as conn:
            return (await pg.segment_member_counts(conn, [segment_id]))[segment_id]

    async def redis_members(self, key: str) -> set[str]:
        """See ``SegmentStore.redis_members``."""
        return await read_set(self._redis, key)


@dataclass(slots=True)
class _Row:
    workspace_id: str
    partition: int
    membership: Membership


class MemoryStore:
    """``SegmentStore`` held in dictionaries; ``redis`` mirrors what the Redis sets would hold."""

    def __init__(self) -> None:
        self.states: dict[CustomerKey, CustomerState] = {}
        self.memberships: dict[tuple[UUID, str], _Row] = {}
        self.counts: dict[tuple[UUID, int], int] = {}
        self.outbox: list[TransitionRow] = []  # in id order
        self.sent_ids: dict[int, int] = {}  # partition → every row with id ≤ it was delivered
        self.redis: dict[str, set[str]] = {}
        self.epochs: dict[int, int] = {}
        self._next_id = 1

    async def claim_partitions(self, partitions: Sequence[int], owner: str) -> dict[int, int]:
        """See ``SegmentStore.claim_partitions``."""
        for p in set(partitions):
            self.epochs[p] = self.epochs.get(p, 0) + 1
        return {p: self.epochs[p] for p in sorted(set(partitions))}

    async def load_records(self, keys: Sequence[CustomerKey]) -> dict[CustomerKey, CustomerRecord]:
        """See ``SegmentStore.load_records``."""
        out: dict[CustomerKey, CustomerRecord] = {}
        for key in keys:
            state = self.states.get(key)
            out[key] = CustomerRecord(state=copy.deepcopy(state))
        for (segment_id, customer_id), row in self.memberships.items():
            rec = out.get((row.workspace_id, customer_id))
            if rec is not None:
                rec.memberships[segment_id] = copy.copy(row.membership)
        return out

    def _check(self, batch: Batch, fence: Mapping[int, int] | None) -> TransitionPlan:
        batch.check_partitions()
        if fence is not None and any(self.epochs.get(p) != e for p, e in fence.items()):
            raise FencedError(fence, {p: self.epochs.get(p) for p in fence})
        plan = plan_transitions(batch.transitions)
        bad = 0
        for pp in plan.pairs:
            row = self.memberships.get((pp.segment_id, pp.customer_id))
            stored_seq, stored_member = (row.membership.seq, row.membership.is_member) if row else (0, False)
            bad += stored_seq != pp.prev_seq or stored_member != pp.was_member
        if bad:
            raise MembershipConflictError(
                f"{bad} of {len(plan.pairs)} (segment, customer) pairs do not continue their stored"
                " membership (stale membership cache?); nothing was written"
            )
        return plan

    async def commit(self, batch: Batch, *, fence: Mapping[int, int] | None = None) -> None:
        """See ``SegmentStore.commit``."""
        plan = self._check(batch, fence)
        for s in batch.states:
            self.states[(s.workspace_id, s.customer_id)] = copy.deepcopy(s)
        touched: set[str] = set()
        for pp in plan.pairs:
            entered = pp.last.kind == "entered"
            self.memberships[(pp.segment_id, pp.customer_id)] = _Row(
                pp.workspace_id,
                pp.partition,
                Membership(entered, pp.last.seq, pp.last.at if entered else None),
            )
            key = segment_key(pp.workspace_id, pp.segment_id)
            touched.add(key)
            members = self.redis.setdefault(key, set())
            (members.add if entered else members.discard)(pp.customer_id)
        for k, delta in plan.count_deltas.items():
            self.counts[k] = self.counts.get(k, 0) + delta
        for t in batch.transitions:
            row = TransitionRow(
                self._next_id,
                t.partition,
                t.workspace_id,
                t.segment_id,
                t.segment_name,
                t.customer_id,
                t.seq,
                t.kind,
                dict(t.cause),
                t.at,
            )
            self._next_id += 1
            self.outbox.append(row)
        for c in batch.optouts:
            key = optout_key(c.workspace_id)
            touched.add(key)
            members = self.redis.setdefault(key, set())
            (members.add if c.opted_out else members.discard)(c.customer_id)
        for key in touched:
            if not self.redis[key]:
                del self.redis[key]  # Redis has no empty sets

    async def fetch_unsent(self, partitions: Sequence[int], limit: int) -> list[TransitionRow]:
        """See ``SegmentStore.fetch_unsent``."""
        wanted, sent = set(partitions), self.sent_ids
        unsent = [r for r in self.outbox if r.partition in wanted and r.id > sent.get(r.partition, 0)]
        return unsent[:limit]

    async def mark_sent(self, max_id_per_partition: Mapping[int, int]) -> None:
        """See ``SegmentStore.mark_sent``."""
        for p, max_id in max_id_per_partition.items():
            self.sent_ids[p] = max(self.sent_ids.get(p, 0), max_id)

    async def member_count(self, segment_id: UUID) -> int:
        """See ``SegmentStore.member_count``."""
        return sum(n for (seg, _), n in self.counts.items() if seg == segment_id)

    async def redis_members(self, key: str) -> set[str]:
        """See ``SegmentStore.redis_members``."""
        return set(self.redis.get(key, ()))


__all__ = ["MemoryStore"]
