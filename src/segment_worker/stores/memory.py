"""An in-memory ``SegmentStore``: the same customer / membership / outbox behaviour as
``PgRedisStore`` (one contract test suite runs against both), for pure tests of callers.

Not thread-safe and not shared between processes; ``commit`` is atomic because it validates
everything before it changes anything, and never awaits in between.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from ..state import CustomerKey, CustomerRecord, CustomerState, Membership
from . import Batch, TransitionPlan, TransitionRow, plan_transitions
from .errors import FencedError, MembershipConflictError
from .keys import optout_key, segment_key


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
