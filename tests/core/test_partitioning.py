"""Kafka's default partitioner, checked against aiokafka's own (CONTRACT §10)."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from segment_worker.partitioning import customer_partition, murmur2, partition_for


def test_murmur2_matches_aiokafka_for_random_keys() -> None:
    rng = random.Random(20261122)
    for length in range(0, 64):
        for _ in range(40):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key


def test_known_java_values() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (as signed ints in Java).
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"") == 275646681


def test_partition_for_matches_default_partitioner() -> None:
    rng = random.Random(7)
    partitioner = DefaultPartitioner()
    for n in (1, 3, 12, 100):
        parts = list(range(n))
        for _ in range(500):
            key = f"ws{rng.randrange(50)}:{rng.randrange(10**9)}{'ü' * rng.randrange(3)}"
            expected = partitioner(key.encode(), parts, parts)
            assert partition_for(key, n) == expected
            assert partition_for(key.encode(), n) == expected
    assert customer_partition("ws1", "c42", 12) == partitioner(b"ws1:c42", list(range(12)), [])


def test_rejects_no_partitions() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for("k", 0)
