"""The owning worker's cache of customer records (state + memberships) between batches."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from sys import getsizeof

import asyncpg

from ..state import CustomerKey, CustomerRecord
from ..stores import postgres as pg

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# record_bytes' constants, fitted with tracemalloc on the bench workload (bench/cpu.py): records
# as load_records decodes them are within ±10% of the estimate (tests/test_record_cache.py).
_RECORD_BASE = 300  # the record and the cache's bookkeeping (two ordered-dict entries, a key)
_STATE_BASE = 1_850  # the state object, its strings, the version tuples and event ids
_PER_VALUE = 60  # each attribute value (and folded copy) and each tag label


def record_bytes(rec: CustomerRecord) -> int:
    """Estimated memory of a cached record: cheap (container sizes, no traversal)."""
    size = _RECORD_BASE + getsizeof(rec.codes)
    s = rec.state
    if s is not None:
        size += (
            _STATE_BASE
            + getsizeof(s.versions)
            + getsizeof(s.attrs)
            + getsizeof(s.attrs_f)
            + getsizeof(s.tags)
            + getsizeof(s.tag_labels)
            + _PER_VALUE * (len(s.attrs) + len(s.tags))
        )
    return size


class RecordCache:
    """Customer records of owned partitions, kept between batches, least recently used first out.

    Bounded by an estimated byte budget (``max_bytes``, see ``record_bytes``) and by
    ``max_per_partition`` records per partition. Sizes are re-estimated when a record is used
    again (the engine grows records in place), so the budget may be overrun by one batch's growth.
    An evicted record is simply loaded again.

    Valid only while nobody else writes those partitions: dropped on revoke, when a partition's
    ``generation`` moved (API writers bump it), after any failed unit (the engine mutates records
    in place), and per customer when the ticker changes memberships.
    """

    def __init__(self, max_per_partition: int = 50_000, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max = max_per_partition
        self._max_bytes = max_bytes
        self._parts: dict[int, OrderedDict[CustomerKey, CustomerRecord]] = {}
        # (partition, key) → estimated bytes, least recently used first, over every partition.
        self._lru: OrderedDict[tuple[int, CustomerKey], int] = OrderedDict()
        self._bytes = 0
        self._generations: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        """Estimated memory of the cached records."""
        return self._bytes

    def _drop_partition(self, p: int) -> None:
        d = self._parts.pop(p, None)
        if d is not None:
            for key in d:
                self._bytes -= self._lru.pop((p, key))

    def drop(self, partitions: Iterable[int] | None = None) -> None:
        """Forget the records (and known generations) of ``partitions``, or of all."""
        if partitions is None:
            self._parts.clear()
            self._lru.clear()
            self._bytes = 0
            self._generations.clear()
            return
        for p in partitions:
            self._drop_partition(p)
            self._generations.pop(p, None)

    def check_generations(self, generations: Mapping[int, int]) -> None:
        """Drop a partition's records when its generation is not the one they were read under."""
        for p, gen in generations.items():
            if self._generations.get(p) != gen:
                self._drop_partition(p)
                self._generations[p] = gen

    def evict(self, keys: Iterable[tuple[int, CustomerKey]]) -> None:
        """Forget single customers (partition, key) whose stored rows changed behind the cache."""
        for p, key in keys:
            d = self._parts.get(p)
            if d is not None and d.pop(key, None) is not None:
                self._bytes -= self._lru.pop((p, key))

    async def get(
        self, conn: asyncpg.Connection, wanted: Mapping[CustomerKey, int]
    ) -> dict[CustomerKey, CustomerRecord]:
        """The record of each key (key → owning partition), loading the ones not cached."""
        out: dict[CustomerKey, CustomerRecord] = {}
        missing: list[CustomerKey] = []
        lru = self._lru
        for key, p in wanted.items():
            d = self._parts.get(p)
            rec = None if d is None else d.get(key)
            if d is None or rec is None:
                missing.append(key)
                continue
            out[key] = rec
            d.move_to_end(key)
            lk = (p, key)
            lru.move_to_end(lk)
            size = record_bytes(rec)
            self._bytes += size - lru[lk]
            lru[lk] = size
        if missing:
            loaded = await pg.load_records(conn, missing)
            for key in missing:
                rec = out[key] = loaded[key]
                self._put(wanted[key], key, rec)
        self._shrink()
        return out

    def _put(self, p: int, key: CustomerKey, rec: CustomerRecord) -> None:
        d = self._parts.get(p)
        if d is None:
            d = self._parts[p] = OrderedDict()
        while len(d) >= self._max:
            old, _ = d.popitem(last=False)
            self._bytes -= self._lru.pop((p, old))
        d[key] = rec
        size = self._lru[(p, key)] = record_bytes(rec)
        self._bytes += size

    def _shrink(self) -> None:
        # The batch keeps its own references: an evicted record is still used (and mutated) by
        # this batch; the next batch that wants it reloads the committed row.
        while self._bytes > self._max_bytes and self._lru:
            (p, key), size = self._lru.popitem(last=False)
            self._bytes -= size
            del self._parts[p][key]
