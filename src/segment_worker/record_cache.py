"""The owning worker's cache of customer records (state + memberships) between batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg

from .engine import CustomerKey
from .state import CustomerRecord
from .stores import postgres as pg


class RecordCache:
    """Customer records of owned partitions, kept between batches.

    Valid only while nobody else writes those partitions: dropped on revoke, when a partition's
    ``generation`` moved (API writers bump it), after any failed unit (the engine mutates records
    in place), and per customer when the ticker changes memberships.
    """

    def __init__(self, max_per_partition: int = 50_000) -> None:
        self._max = max_per_partition
        self._parts: dict[int, dict[CustomerKey, CustomerRecord]] = {}
        self._generations: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(len(d) for d in self._parts.values())

    def drop(self, partitions: Iterable[int] | None = None) -> None:
        """Forget the records (and known generations) of ``partitions``, or of all."""
        if partitions is None:
            self._parts.clear()
            self._generations.clear()
            return
        for p in partitions:
            self._parts.pop(p, None)
            self._generations.pop(p, None)

    def check_generations(self, generations: Mapping[int, int]) -> None:
        """Drop a partition's records when its generation is not the one they were read under."""
        for p, gen in generations.items():
            if self._generations.get(p) != gen:
                self._parts.pop(p, None)
                self._generations[p] = gen

    def evict(self, keys: Iterable[tuple[int, CustomerKey]]) -> None:
        """Forget single customers (partition, key) whose stored rows changed behind the cache."""
        for p, key in keys:
            d = self._parts.get(p)
            if d is not None:
                d.pop(key, None)

    async def get(
        self, conn: asyncpg.Connection, wanted: Mapping[CustomerKey, int]
    ) -> dict[CustomerKey, CustomerRecord]:
        """The record of each key (key → owning partition), loading the ones not cached."""
        out: dict[CustomerKey, CustomerRecord] = {}
        missing: list[CustomerKey] = []
        for key, p in wanted.items():
            rec = self._parts.get(p, {}).get(key)
            if rec is None:
                missing.append(key)
            else:
                out[key] = rec
        if missing:
            loaded = await pg.load_records(conn, missing)
            for key in missing:
                rec = out[key] = loaded[key]
                d = self._parts.setdefault(wanted[key], {})
                if len(d) >= self._max:
                    d.clear()  # crude bound; a hot set refills quickly
                d[key] = rec
        return out
